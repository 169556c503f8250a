"""The loss history beside a checkpoint: append-only, cut back to the checkpoint on resume, and
never part of the checkpoint (whose size no longer grows with the step count)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.loss_history import HISTORY_NAME, LossHistory
from pipeline_lib.models.training import CHECKPOINT_NAME, train_model


def rows(first: int, last: int) -> list[dict[str, float]]:
    return [{"step": s, "loss": 1.0 / 3.0 ** s, "kl": float(s) * 1e-17} for s in range(first, last + 1)]


def test_resume_cuts_rows_written_after_the_checkpoint(tmp_path):
    history = LossHistory(tmp_path)
    history.start()
    for row in rows(1, 3):
        history.append(row)
    committed = history.commit()
    for row in rows(4, 5):  # written by a run killed before its next checkpoint
        history.append(row)
    history.close()

    again = LossHistory(tmp_path)
    assert again.resume(committed, 3, "delete it") == rows(1, 3)  # exact floats back
    again.append(rows(4, 4)[0])
    again.close()
    assert (tmp_path / HISTORY_NAME).read_text().count("\n") == 4


def test_non_finite_losses_survive_the_round_trip(tmp_path):
    history = LossHistory(tmp_path)
    history.start()
    history.append({"step": 1, "loss": math.inf})
    history.append({"step": 2, "loss": math.nan})
    committed = history.commit()
    history.close()
    back = LossHistory(tmp_path).resume(committed, 2, "")
    assert back[0]["loss"] == math.inf
    assert math.isnan(back[1]["loss"])


def test_a_history_shorter_than_its_checkpoint_is_an_error_naming_the_file(tmp_path):
    history = LossHistory(tmp_path)
    with pytest.raises(InputError, match=f"{tmp_path / HISTORY_NAME}.*missing.*delete it"):
        history.resume(10, 1, "delete it")
    history.start()
    history.append(rows(1, 1)[0])
    committed = history.commit()
    history.close()
    with pytest.raises(InputError, match="holds 1 rows ending at step 1, but the checkpoint beside it is at step 2"):
        LossHistory(tmp_path).resume(committed, 2, "")
    with pytest.raises(InputError, match="has .* bytes"):
        LossHistory(tmp_path).resume(committed + 1, 1, "")


def test_checkpoint_size_does_not_grow_with_the_steps(tmp_path):
    images = np.random.default_rng(0).uniform(0, 1, (16, 16, 16)).astype(np.float32)
    block = {"family": "vae", "width": 4, "latent_dim": 4, "batch_size": 8, "budget": {"steps": 400},
             "checkpoint_every": 1000, "seed": 1}
    sizes = []
    for steps in (2, 396):  # checkpoints at steps 2 and 398 of 400
        train_model("m", block, images, None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck",
                    steps_this_call=steps)
        checkpoint = next((tmp_path / "ck").glob(f"*/{CHECKPOINT_NAME}"))
        sizes.append(checkpoint.stat().st_size)
        assert "losses" not in torch.load(checkpoint, weights_only=True)
    # the 398 rows, pickled into the checkpoint as before, would add about 13 kB
    assert abs(sizes[1] - sizes[0]) < 1000, sizes
    assert (checkpoint.parent / HISTORY_NAME).read_text().count("\n") == 398
