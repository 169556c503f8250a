"""The four study presets (presets/<study>.yaml) on their stand-in cohorts (cohorts/standin.py).

* At full published settings: discovery runs for real on a small stand-in, then a dry run of
  `all` plans every model and dataset of the paper (one train job per model, one slicing job per
  dataset a model uses).
* At a tiny scale: the preset, its demo override (presets/demo/<study>.yaml, as `make demo
  PRESET=<study>` merges it) and a test override below run `all` end to end to the report.
  Tiny means fewer and coarser phantoms, no brain extraction, no registration where the stand-in
  is already in template space, a few steps, and one model per preset (Han et al.: the WGAN on
  the pooled Concat, the others switched off with `enabled: false`; Ungría Hirte et al.: IntroVAE
  in the paper's loss form). Each run costs about 10 jobs per model (training, sampling and every
  metric), each a Python process importing torch: the model count decides the time.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline_lib.cohorts import standin
from helpers.workflow import copy_checkout, job_counts, snakemake

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
STUDIES = standin.STUDIES


def merge(base: dict, override: dict) -> dict:
    """Snakemake's merge of several --configfile files: mappings merge key by key, the rest replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def preset(study: str) -> dict:
    return yaml.safe_load((REPO / "presets" / f"{study}.yaml").read_text())


def demo_override(study: str) -> dict:
    return yaml.safe_load((REPO / "presets" / "demo" / f"{study}.yaml").read_text())


@pytest.mark.parametrize("study", STUDIES)
def test_preset_plans_every_published_model_on_its_standin(study, tmp_path_factory):
    work = copy_checkout(tmp_path_factory, f"dry-{study}")
    source = standin.make_standin(study, work.parent / "standin", 3 if study != "ballesteros_ramirez_2025" else 5,
                                  resolution_mm=4)
    config = merge(preset(study), {"input": {"source": str(source)}})
    # the README's command line: the preset file as it is, the source merged into its input section
    args = ("--configfile", str(REPO / "presets" / f"{study}.yaml"), "--config", f"input={{source: {source}}}")
    # discovery for real (seconds), so that the dry run sees the subjects behind the checkpoint
    found = snakemake(work, "results/inputs/subjects.tsv", "--cores", "1", *args, timeout=600)
    assert found.returncode == 0, found.stdout[-3000:] + found.stderr[-3000:]
    planned = snakemake(work, "all", "-n", "--cores", "2", *args, timeout=600)
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    jobs = job_counts(planned.stdout + planned.stderr)
    models = config["models"]
    used = {block["dataset"] if block.get("dataset") else next(iter(config["datasets"])) for block in models.values()}
    assert jobs["train"] == len(models)
    assert jobs["sample"] == len(models)
    assert jobs["slice_dataset"] == len(used) == len(config["datasets"])
    assert jobs["register"] == jobs["ingest"] == (5 if study == "ballesteros_ramirez_2025" else 3)
    if config["evaluation"]["fid"].get("fresh_samples"):
        assert jobs["fid_samples"] == len(models)
    assert jobs["report"] == 1


def tiny_config(study: str, source: Path) -> dict:
    """The preset at demo scale, then smaller still for the suite."""
    config = merge(preset(study), demo_override(study))
    tiny = {
        "input": {"source": str(source)},
        "preprocessing": {"brain_extraction": "none"},
        "registration": {"on_poor_fit": "keep"},
        "sampling": {"n": 24, "n_reconstruct": 16},
        "metrics": {"n_original": 16},
        "evaluation": {"fid": {"repeats": 2, "max_real": 32}, "kid": {"n_subsets": 2, "subset_size": 16},
                       "prdc": {"nearest_k": 3}, "domain": {"steps": 10, "nearest_k": 3}, "conditioning": {"steps": 10},
                       "utility": {"steps": 10, "n_synthetic": 16}, "diversity": {"n_pairs": 20, "n_reference": 16}},
    }
    config = merge(config, tiny)
    # A few steps for every model (steps replace the preset's epochs: the budget holds one of them).
    for name, block in config["models"].items():
        block["budget"] = {"steps": 6}
        block["checkpoint_every"] = 3
        for key in ("validate_every", "snapshot_every"):
            block.pop(key, None)
    if study == "han_2018":
        # one of the demo's four models (the other eleven keep their blocks, switched off as the demo
        # switches off eight): the WGAN on the four sequences pooled (Concat)
        for name, block in config["models"].items():
            block["enabled"] = name == "wgan_concat_128"
        # 6 of the demo's 18 sagittal positions (every image costs Inception passes in four jobs)
        config["datasets"]["concat_128"]["selection"] = {"mode": "range", "first": 26, "last": 31}
        config["reader_study"]["models"] = ["wgan_concat_128"]
        config["registration"]["transform"] = "none"  # BraTS-like cases are in template space already
        config["reader_study"]["n_per_model"] = 2
    if study == "ungria_hirte_2020":
        # one of four models: IntroVAE in the paper's loss form (eqs. 8-9), whose reconstruction
        # fills Table 1's MSE column; StyleGAN's eqs. 11-12 are unit tests (test_family_stylegan.py),
        # and all four run in the demo
        config["models"] = {"intro_vae": config["models"]["intro_vae"]}
        config["registration"]["transform"] = "none"
        config["reader_study"].update(n_real=4, n_per_model=2)
    if study == "ballesteros_ramirez_2025":
        config["sampling"]["n_per_class"] = 8
        config["models"]["cvae"]["hidden_sizes"] = [64, 32]
        config["models"]["cvae_mse"]["enabled"] = False  # one model per preset; it differs only in the loss
        config["registration"]["transform"] = "none"
        config["reader_study"].update(n_real=4, n_per_model=4)
    if study == "kazuhiro_2018":
        config["registration"]["transform"] = "none"
        config["datasets"]["basal_ganglia"]["augmentation"]["count"] = 4
        config["datasets"]["basal_ganglia"]["test_fraction"] = 0.5  # 2 subjects, 10 real test slices
        config["reader_study"]["n_total"] = 8
    return config


TINY_SUBJECTS = {"ungria_hirte_2020": 4, "han_2018": 4, "ballesteros_ramirez_2025": 6, "kazuhiro_2018": 4}


FID_WEIGHTS = Path("resources/weights/pt_inception-2015-12-05-fid.pth")


@pytest.fixture(scope="module")
def fid_weights_cache(tmp_path_factory) -> Path:
    """The FID Inception file the first tiny run provides (rule fid_weights), handed to the later
    runs as an existing output: the rule itself is tested in test_workflow.py and test_fid.py."""
    return tmp_path_factory.mktemp("fid-weights") / FID_WEIGHTS.name


@pytest.mark.parametrize("study", STUDIES)
def test_preset_runs_end_to_end_at_a_tiny_scale(study, tmp_path_factory, fid_weights_cache):
    work = copy_checkout(tmp_path_factory, f"tiny-{study}")
    source = standin.make_standin(study, work.parent / "standin", TINY_SUBJECTS[study], resolution_mm=4)
    config = tiny_config(study, source)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    if fid_weights_cache.is_file():
        (work / FID_WEIGHTS).parent.mkdir(parents=True)
        shutil.copy(fid_weights_cache, work / FID_WEIGHTS)
    result = snakemake(work, "all", "--cores", "2", "--set-threads", "train=1", timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    if not fid_weights_cache.is_file():
        shutil.copy(work / FID_WEIGHTS, fid_weights_cache)
    html = (work / "results/report/index.html").read_text()
    # the paper's own tables beside this run's (report.published in every preset)
    assert 'id="group-paper"' in html
    assert "published, on the authors&#x27; data" in html
    enabled = [name for name, block in config["models"].items() if block.get("enabled", True)]
    assert sorted(p.name for p in (work / "results/models").iterdir()) == sorted(enabled)
    for model in enabled:
        summary = json.loads((work / "results/models" / model / "seed0/summary.json").read_text())
        assert summary["steps"] == summary["target_steps"] == 6, summary
        assert not summary["incomplete"], summary
    if study == "ballesteros_ramirez_2025":
        distribution = json.loads((work / "results/metrics/cvae/seed0.distribution.json").read_text())
        assert "Magnetom TrioTim" in json.dumps(distribution)  # FID per scanner
