"""Loading never executes: a pickled payload planted in any torch file the pipeline or its command
line reads is refused with an error that names the file, and the payload never runs.

The payload touches a marker file when unpickled. Each test first shows that the planted file is
live (``torch.load(..., weights_only=False)`` creates the marker), so a refusal is a real one.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline_lib.core import pretrained
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import file_digest
from pipeline_lib.core.settings import DomainSettings
from pipeline_lib.core.tensor_files import load_tensor_file
from pipeline_lib.evaluation import domain_features as dfm
from pipeline_lib.models import export
from pipeline_lib.models.training import CHECKPOINT_NAME, load_trained_model, train_model

SIZE = 16
BLOCK = {"family": "vae", "width": 4, "latent_dim": 4, "batch_size": 8, "budget": {"steps": 6},
         "checkpoint_every": 2, "seed": 1}
REFUSAL = "refusing to load.*could execute code"


class Payload:
    """Runs ``touch <marker>`` when unpickled, as a hostile weights file would run any command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _images(n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, SIZE, SIZE)).astype(np.float32)


def plant(path: Path, content, marker: Path) -> None:
    """Write ``content`` to ``path`` and check the payload in it is live, then clear the marker."""
    torch.save(content, path)
    torch.load(path, weights_only=False)
    assert marker.exists(), "the planted payload did not run under an unsafe load: the test proves nothing"
    marker.unlink()


def refused(path: Path, marker: Path, call) -> str:
    with pytest.raises(InputError, match=REFUSAL) as info:
        call()
    assert str(path) in str(info.value), "the error must name the refused file"
    assert not marker.exists(), "the payload ran"
    return str(info.value)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline_lib", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def cli_refuses(path: Path, marker: Path, *args: str) -> None:
    result = cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to load" in result.stderr
    assert "execute code" in result.stderr
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists(), "the payload ran"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A trained model laid out as the workflow's results/models/<model>/seed<seed>/."""
    results = tmp_path_factory.mktemp("safe") / "results"
    run = results / "models" / "m" / "seed1"
    train_model("m", BLOCK, _images(), None, run / "weights.pt", run / "losses.csv", results / "ck")
    return run


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "payload-ran"


def test_files_the_pipeline_writes_load_with_weights_only(run_folder, tmp_path):
    payload = torch.load(run_folder / "weights.pt", weights_only=True)
    assert set(payload) == {"state_dict", "summary", "ema"}
    assert payload["summary"]["steps"] == 6
    exported = export.export_model(run_folder, tmp_path / "exported")
    assert all(isinstance(v, torch.Tensor) for v in torch.load(exported / "weights.pt", weights_only=True).values())


def test_run_folder_and_bare_weights_refuse_a_payload(run_folder, tmp_path, marker):
    run = tmp_path / "results" / "models" / "m" / "seed1"
    shutil.copytree(run_folder, run)
    weights = run / "weights.pt"
    content = torch.load(weights, weights_only=True)
    plant(weights, {**content, "summary": {**content["summary"], "note": Payload(marker)}}, marker)
    bare = tmp_path / "from-a-colleague" / "weights.pt"
    bare.parent.mkdir()
    shutil.copy(weights, bare)

    for source in (run, weights, bare):
        refused(weights if source == run else source, marker, lambda: export.describe(source))
        refused(weights if source == run else source, marker, lambda: export.load_model(source, device="cpu"))
    refused(bare, marker, lambda: load_trained_model(bare, device="cpu"))
    refused(weights, marker, lambda: export.export_model(run, tmp_path / "out"))
    assert not (tmp_path / "out").exists()

    cli_refuses(bare, marker, "info", str(bare))
    cli_refuses(weights, marker, "info", str(run))
    cli_refuses(bare, marker, "generate", str(bare), "-n", "2", "--out", str(tmp_path / "images"))
    cli_refuses(weights, marker, "export", str(run), "--out", str(tmp_path / "out"))
    assert not (tmp_path / "images").exists()
    assert not (tmp_path / "out").exists()


def test_exported_weights_refuse_a_payload(run_folder, tmp_path, marker):
    folder = export.export_model(run_folder, tmp_path / "exported")
    weights = folder / "weights.pt"
    state = torch.load(weights, weights_only=True)
    plant(weights, {**state, "extra": Payload(marker)}, marker)
    # Whoever planted the payload can also fix the checksum: the loader must not rely on it.
    description = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**description, "weights_sha256": file_digest(weights)}))

    refused(weights, marker, lambda: export.load_model(folder, device="cpu"))
    cli_refuses(weights, marker, "generate", str(folder), "-n", "2", "--out", str(tmp_path / "images"))


def test_training_checkpoint_refuses_a_payload(tmp_path, marker):
    images = _images()
    assert train_model("m", BLOCK, images, None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck",
                       steps_this_call=2) is None
    checkpoint = next((tmp_path / "ck").glob(f"*/{CHECKPOINT_NAME}"))
    content = torch.load(checkpoint, weights_only=True)
    plant(checkpoint, {**content, "monitor": Payload(marker)}, marker)
    message = refused(checkpoint, marker, lambda: train_model("m", BLOCK, images, None, tmp_path / "w.pt",
                                                              tmp_path / "l.csv", tmp_path / "ck"))
    assert "delete the folder" in message
    assert str(checkpoint.parent) in message
    assert not (tmp_path / "w.pt").exists()


def test_checkpoint_of_the_earlier_layout_says_how_to_start_over(tmp_path):
    """Earlier checkpoints held numpy arrays (RNG state, snapshots) and the loss history: refused
    without unpickling them, with the folder to delete named."""
    images = _images()
    train_model("m", BLOCK, images, None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck", steps_this_call=2)
    checkpoint = next((tmp_path / "ck").glob(f"*/{CHECKPOINT_NAME}"))
    content = torch.load(checkpoint, weights_only=True)
    old = {k: v for k, v in content.items() if k not in ("format", "history_bytes")}
    torch.save({**old, "losses": [{"step": 1, "loss": 1.0}], "rng": {**old["rng"], "numpy": np.random.get_state()}},
               checkpoint)
    with pytest.raises(InputError, match="numpy.*delete the folder") as info:
        train_model("m", BLOCK, images, None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck")
    assert str(checkpoint.parent) in str(info.value)


def test_domain_network_refuses_a_payload(tmp_path, marker, evaluation_slices):
    images, table = evaluation_slices(n_subjects=4, slices_per_subject=4, size=16, seed=0)
    network = dfm.train_domain_network(images, table, DomainSettings(seed=1, steps=1, batch_size=8, width=4,
                                                                     feature_dim=4))
    path = tmp_path / "network.pt"
    dfm.save_domain_network(network, path)
    content = torch.load(path, weights_only=True)
    plant(path, {**content, "summary": Payload(marker)}, marker)
    refused(path, marker, lambda: dfm.load_domain_network(path))


@pytest.mark.parametrize("loader", [pretrained.load_vgg16_features, pretrained.load_fid_inception])
def test_pretrained_feature_networks_refuse_a_payload(tmp_path, marker, loader):
    path = tmp_path / "weights.pth"
    plant(path, {"features.0.weight": torch.zeros(1), "extra": Payload(marker)}, marker)
    refused(path, marker, lambda: loader(path))


def test_foreign_files_are_named_errors(run_folder, tmp_path):
    text = tmp_path / "weights.pt"
    text.write_text("not a torch file")
    with pytest.raises(InputError, match=f"{text}: refusing to load this weights file.*not a torch file"):
        export.describe(text)
    plain_state = tmp_path / "state" / "weights.pt"
    plain_state.parent.mkdir()
    torch.save(torch.load(run_folder / "weights.pt", weights_only=True)["state_dict"], plain_state)
    with pytest.raises(InputError, match="not a weights file written by the pipeline's trainer"):
        export.describe(plain_state)
    result = cli("info", str(text))
    assert result.returncode == 2
    assert str(text) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_bare_pickle_of_any_protocol_is_refused(tmp_path, marker, protocol):
    """Not a torch archive but a plain pickle (torch reads those as its legacy format), written with
    the old text opcodes or the newest ones."""
    path = tmp_path / "weights.pt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "summary": Payload(marker)}, protocol=protocol))
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    refused(path, marker, lambda: load_tensor_file(path, "weights file"))
    refused(path, marker, lambda: export.describe(path))
