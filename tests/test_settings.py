"""core.settings: one typed dataclass per config section, equal to the JSON schema in keys and defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from pipeline_lib.core import settings as st
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.volumes import VOLUME_KEYS

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())


def schema_block(path: str) -> dict:
    node = SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _field_default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@pytest.mark.parametrize("path", sorted(st.SECTIONS))
def test_every_section_has_the_schemas_keys_and_defaults(path):
    cls = st.SECTIONS[path]
    properties = schema_block(path)["properties"]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == set(properties), f"{path}: dataclass and schema keys differ"
    for name, prop in properties.items():
        assert "default" in prop, f"{path}.{name} has no default in the schema"
        assert _plain(_field_default(fields[name])) == prop["default"], f"{path}.{name}"


def test_every_schema_section_is_read_through_core_settings():
    sections = {name for name, prop in SCHEMA["properties"].items() if prop.get("type") == "object"}
    sections |= {f"evaluation.{name}" for name in schema_block("evaluation")["properties"]}
    # containers (datasets and models: a block per name); privacy is read by discovery
    sections -= {"evaluation", "models", "datasets", "privacy"}
    assert sections == set(st.SECTIONS)


def test_trainer_keys_are_the_schemas_model_keys():
    model = SCHEMA["properties"]["models"]["additionalProperties"]
    assert set(model["properties"]) == st.TrainerSettings.keys()
    for f in dataclasses.fields(st.TrainerSettings):
        if "default" in model["properties"][f.name]:
            assert _field_default(f) == model["properties"][f.name]["default"], f.name


def test_unknown_keys_and_bad_values_name_the_config_key():
    with pytest.raises(InputError, match=r"evaluation\.fid\.repeat: unknown key"):
        st.read_settings(st.FidSettings, {"repeat": 5})
    with pytest.raises(InputError, match=r"evaluation\.domain\.stpes: unknown key"):
        st.read_settings(st.DomainSettings, {"stpes": 3})
    with pytest.raises(InputError, match="evaluation.domain: steps must be a positive"):
        st.read_settings(st.DomainSettings, {"steps": 0})
    with pytest.raises(InputError, match=r"models\.m: budget needs"):
        st.TrainerSettings.from_block("m", {"family": "vae", "budget": {}})
    with pytest.raises(InputError, match=r"models\.m\.budget is required"):
        st.TrainerSettings.from_block("m", {"family": "vae"})


def test_defaults_and_instances_pass_through():
    assert st.read_settings(st.FidSettings, None).repeats == 20  # Ballesteros Ramirez: 20 repeats
    fid = st.read_settings(st.FidSettings, {"repeats": 5})
    assert fid.repeats == 5
    assert st.read_settings(st.FidSettings, fid) is fid


def test_reader_study_defaults_and_errors():
    s = st.read_settings(st.ReaderStudySettings, None)
    assert s.preset == "ungria_hirte"
    assert s.n_real == 50
    assert s.n_per_model == 50
    assert s.synthetic_fraction == (0.4, 0.6)
    assert s.time_limit_s is None
    for block, message in [({"n_fake": 3}, "unknown key"), ({"preset": "turing"}, "preset"),
                           ({"synthetic_fraction": [0.7, 0.2]}, "synthetic_fraction"),
                           ({"time_limit_s": 0}, "time_limit_s")]:
        with pytest.raises(InputError, match=message):
            st.read_settings(st.ReaderStudySettings, block)


def test_rerun_settings_leave_out_runtime_keys_in_a_stable_order():
    config = {"evaluation": {"fid": {"seed": 1, "device": "cuda", "batch_size": 8, "repeats": 3}}}
    assert st.rerun_settings(config, "evaluation.fid") == {"repeats": 3, "seed": 1}
    assert list(st.rerun_settings(config, "evaluation.fid")) == ["repeats", "seed"]
    assert st.runtime_settings(config, "evaluation.fid") == {"device": "cuda", "batch_size": 8}
    study = {"reader_study": {"n_real": 4, "positive_class": "synthetic", "responses_dir": "r"}}
    assert st.rerun_settings(study, "reader_study") == {"n_real": 4}
    assert st.rerun_settings(study, "reader_study", st.SCORING) == {
        "n_real": 4, "positive_class": "synthetic", "responses_dir": "r"}
    assert "checkpoint_every" in st.keys_of_kind(st.TrainerSettings, st.RUNTIME)


def test_disabled_models_keep_their_block_but_leave_the_model_list():
    config = {"models": {"b": {"family": "vae"}, "a": {"family": "vae", "enabled": True},
                         "off": {"family": "vae", "enabled": False}}}
    assert st.enabled_models(config) == ["a", "b"]
    assert st.enabled_models({}) == []
    with pytest.raises(InputError, match="enabled"):
        st.TrainerSettings.from_block("x", {"family": "vae", "budget": {"steps": 1}, "enabled": "no"})


def test_seeds_of_a_model_come_from_its_block_or_training_seeds():
    config = {"training": {"seeds": [0, 1, 2]}, "models": {"a": {"family": "vae"}, "b": {"family": "vae", "seeds": [7]}}}
    assert st.model_seeds(config, "a") == (0, 1, 2)
    assert st.model_seeds(config, "b") == (7,)
    assert st.model_seeds({"models": {"a": {}}}, "a") == (0,)
    with pytest.raises(InputError, match=r"models\.a\.seed: set models\.a\.seeds"):
        st.model_seeds({"models": {"a": {"seed": 3}}}, "a")
    with pytest.raises(InputError, match="lists a seed twice"):
        st.model_seeds({"training": {"seeds": [1, 1]}, "models": {"a": {}}}, "a")
    assert "seeds" in st.keys_of_kind(st.TrainerSettings, st.WORKFLOW)


def test_budget_minutes_is_only_a_cap():
    assert st.Budget(steps=10, minutes=2).target_steps(100, 16) == 10
    assert st.Budget(epochs=3).target_steps(100, 16) == 18  # 6 full batches of 16 per epoch
    assert st.Budget(epochs=1).target_steps(5, 16) == 1     # the batch shrinks to the data
    with pytest.raises(InputError, match="safety cap"):
        st.Budget(minutes=2)


def test_dataset_keys_and_defaults_are_the_schemas():
    block = SCHEMA["properties"]["datasets"]["additionalProperties"]["properties"]
    fields = {f.name: f for f in dataclasses.fields(st.DatasetSettings)}
    volume_only = set(VOLUME_KEYS) - set(fields)  # kind: volume datasets' own keys (tests/test_volume_dataset.py)
    assert set(fields) == set(block) - volume_only
    for name in fields:
        assert _plain(_field_default(fields[name])) == block[name]["default"], name


def test_without_datasets_the_default_dataset_is_the_slicing_section():
    config = {"slicing": {"drop_top": 2, "drop_bottom": 3, "image_size": 32, "test_fraction": 0.25}}
    datasets = st.dataset_settings(config)
    assert list(datasets) == ["default"]
    d = datasets["default"]
    assert (d.axis, d.selection, d.size, d.fit) == ("axial", {"mode": "drop", "low": 3, "high": 2}, (32, 32), "resize")
    assert (d.clip_percentile, d.test_fraction, d.split_seed, d.filters, d.augmentation) == (95, 0.25, 0, {}, None)
    # an empty datasets: (the schema's default) is the same as none
    assert st.dataset_settings({**config, "datasets": {}}) == datasets
    # defaults of a named dataset are seed 001's protocol at 128 px
    assert st.read_settings(st.DatasetSettings, {}).selection == {"mode": "drop", "low": 8, "high": 6}
    assert st.model_dataset({**config, "models": {"m": {"family": "vae"}}}, "m") == "default"


def test_dataset_params_do_not_depend_on_how_the_settings_were_written():
    written = st.read_settings(st.DatasetSettings, {"filters": {"sequence": "t1"}, "size": [64, 64]})
    spelled_out = st.read_settings(st.DatasetSettings, {"size": (64, 64), "filters": {"sequence": ["t1"]},
                                                        "selection": {"mode": "drop", "high": 6, "low": 8}})
    assert st.dataset_params(written) == st.dataset_params(spelled_out)
    assert st.dataset_params(written)["filters"] == {"sequence": ["t1"]}


def test_dataset_and_model_dataset_errors_name_the_key():
    config = {"datasets": {"t1": {"size": [218, 182]}, "concat": {"split_seed": 4}},
              "models": {"a": {"family": "vae", "dataset": "t1"}, "b": {"family": "vae", "dataset": "flair"}}}
    problems = st.dataset_problems(config)
    assert any(p.startswith("datasets.concat.split_seed:") and "same in every dataset" in p for p in problems)
    assert any(p.startswith("models.a.dataset:") and "non-square" in p for p in problems)
    assert any(p.startswith("models.b.dataset: unknown dataset 'flair'") for p in problems)
    for block, message in [({"axis": "oblique"}, r"datasets\.x: axis"),
                           ({"selection": {"mode": "range", "first": 80}}, r"needs selection\.last"),
                           ({"selection": {"mode": "central", "n": 10, "low": 2}}, r"selection\.low: unknown key"),
                           ({"augmentation": {"cuont": 3}}, r"augmentation\.cuont: unknown key"),
                           ({"size": [64]}, "size must be")]:
        with pytest.raises(InputError, match=message):
            st.read_settings(st.DatasetSettings, block, "datasets.x")


# ------------------------------------------------------------------ kinds per key and the result keys of a block

RULES = Path(__file__).resolve().parents[1] / "workflow/rules"


def test_result_part_keeps_what_changes_results_and_family_hyperparameters():
    block = {"family": "vae", "budget": {"steps": 5}, "seeds": [0, 1], "enabled": True, "checkpoint_every": 50,
             "loader_workers": 2, "tensorboard": True, "dataset": "t1", "lr": 1e-4, "latent_dim": 8, "amp": "bf16"}
    assert st.result_part(block, st.TrainerSettings) == {
        "family": "vae", "budget": {"steps": 5}, "amp": "bf16", "lr": 1e-4, "latent_dim": 8}
    study = {"n_real": 4, "positive_class": "synthetic", "responses_dir": "r"}
    assert st.result_part(study, st.ReaderStudySettings) == {"n_real": 4}
    assert st.result_part(study, st.ReaderStudySettings, st.SCORING) == study
    fid = {"seed": 1, "device": "cuda", "batch_size": 8, "repeats": 3}
    assert st.result_part(fid, st.FidSettings) == {"seed": 1, "repeats": 3}


def test_on_poor_fit_reruns_slicing_and_the_report_not_registration():
    """registration.on_poor_fit decides which subjects slice_dataset keeps: a result key of
    slice_dataset (and of the report's caption), declared on the key, not of the register job."""
    keep, exclude = ({"registration": {"transform": "Affine", "on_poor_fit": value}} for value in ("keep", "exclude"))
    assert "on_poor_fit" in st.keys_of_kind(st.RegistrationSettings, st.RESULT)
    assert "on_poor_fit" not in st.keys_of_kind(st.RegistrationSettings, st.RUNTIME)
    for rule in ("slice_dataset", "report"):
        assert st.rule_settings(keep, "registration", rule) == {"on_poor_fit": "keep"}, rule
        assert st.rule_settings(keep, "registration", rule) != st.rule_settings(exclude, "registration", rule), rule
    assert st.rule_settings(keep, "registration", "train") == {}
    assert st.rerun_settings(keep, "registration") == st.rerun_settings(exclude, "registration") == {"transform": "Affine"}
    assert st.runtime_settings(keep, "registration") == {}


def _rule_bodies() -> dict[str, str]:
    """rule name -> its text, over every rule file of the workflow."""
    bodies = {}
    for path in sorted(RULES.glob("*.smk")):
        for chunk in re.split(r"^(?=(?:local|checkpoint |)rule )", path.read_text(), flags=re.M):
            match = re.match(r"(?:localrule|checkpoint|rule) (\w+):", chunk)
            if match:
                bodies[match.group(1)] = chunk
    return bodies


def test_every_rule_a_key_is_read_by_takes_it_as_a_param():
    """A ``read_by`` key names real rules, and each of them passes it as a param, so changing the
    key reruns exactly those rules (a misspelt rule name would leave the key in no rule's params)."""
    bodies = _rule_bodies()
    declared = [(path, f.name, rule) for path, cls in st.SECTIONS.items() for f in dataclasses.fields(cls)
                for rule in st.reading_rules(f) or ()]
    assert ("registration", "on_poor_fit", "slice_dataset") in declared
    for path, key, rule in declared:
        assert rule in bodies, f"{path}.{key}: read_by names {rule!r}, which is no rule of workflow/rules"
        assert f'later_stage_settings("{path}", "{rule}")' in bodies[rule], \
            f"rule {rule} does not take {path}.{key} as a param (later_stage_settings)"


def test_the_workflow_and_the_trainer_filter_model_blocks_with_result_part():
    """One helper says which keys of a model block change a run: the train rule's params, the
    checkpoint fingerprint and the run summary all use it."""
    common = (RULES / "common.smk").read_text()
    trainer = (Path(__file__).resolve().parents[1] / "src/pipeline_lib/models/training.py").read_text()
    for name, text in (("common.smk", common), ("models/training.py", trainer)):
        assert "result_part(" in text, name
        assert "keys_of_kind(TrainerSettings" not in text, name
