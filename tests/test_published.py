"""The papers' published tables (presets/published/*.yaml): loading, schema errors, transcription
checks that the papers' own arithmetic allows, and the report section that shows them beside a run."""

from __future__ import annotations

import re

import pytest
import yaml

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.published import PUBLISHED_DIR, load_published, published_studies
from pipeline_lib.reader_study.scoring import balanced_accuracy
from pipeline_lib.report.published_section import (PUBLISHED_LABEL, cell_text, render_published_beside,
                                                   render_published_section)

STUDIES = {"ungria_hirte_2020": {"generation", "reconstruction", "readers", "agreement"},
           "han_2018": {"turing_test"},
           "ballesteros_ramirez_2025": {"fid_per_scanner", "fid_other_models"}, "kazuhiro_2018": {"readers"}}


@pytest.fixture(scope="module")
def studies():
    return published_studies()


def test_every_study_has_its_tables_and_a_citation(studies):
    assert {name: set(tables) for name, tables in studies.items()} == STUDIES
    for tables in studies.values():
        assert all(t.citation and t.source for t in tables.values())


def test_han_cells_add_up_to_the_published_accuracies(studies):
    """50 real and 50 synthetic images per row; accuracy % = real as real + synt as synt."""
    table = studies["han_2018"]["turing_test"]
    assert len(table.rows) == 12
    for key, row in table.as_dict().items():
        assert row["Real as Real"] + row["Real as Synt"] == 50, key
        assert row["Synt as Real"] + row["Synt as Synt"] == 50, key
        assert row["Accuracy (%)"] == row["Real as Real"] + row["Synt as Synt"], key
    assert table.as_dict()[("Concat", "DCGAN", "64")]["Accuracy (%)"] == 54


def test_kazuhiro_rates_are_rates_and_accuracies_balanced(studies):
    table = studies["kazuhiro_2018"]["readers"]
    for (reader,), row in table.as_dict().items():
        assert row["TP"] + row["FN"] == 100, reader
        assert row["FP"] + row["TN"] == 100, reader
        assert balanced_accuracy(row["TP"], row["FN"], row["FP"], row["TN"]) == pytest.approx(
            row["Accuracy"], abs=0.005 + 1e-12), reader


def test_ungria_hirte_reader_cells_add_up_per_reader_and_source(studies):
    table = studies["ungria_hirte_2020"]["readers"]
    cells = table.as_dict()
    for source in table.columns[1:]:
        for reader in (0, 1):
            assert sum(cells[(c,)][source][reader] for c in
                       ("True Positives", "False Positives", "True Negatives", "False Negatives")) == 100
    generation = studies["ungria_hirte_2020"]["generation"].as_dict()
    assert generation[("Style-Based GAN",)]["Laplace Sharpness Variance Score"] == {"mean": 1650, "sd": 715}
    assert generation[("introVAE",)]["Minimum ISD"] == 0.0009
    fid = studies["ballesteros_ramirez_2025"]["fid_per_scanner"].as_dict()
    assert fid[("Unspecified",)]["FID"] == {"mean": 87.19, "sd": 0.92}
    assert len(fid) == 4


def _write(tmp_path, name, data):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


GOOD = {"study": "x_2000", "seed": "009", "citation": "Someone. A paper.",
        "tables": [{"id": "t", "title": "T", "source": "Table 1", "columns": ["Model", "FID"],
                    "rows": [["a", 1.5], ["b", {"mean": 2, "sd": 0.1}]]}]}


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(study="y_2000"), "must be the file's name"),
    (lambda d: d["tables"][0]["rows"].append(["c"]), r"row 3: needs 2 cells"),
    (lambda d: d["tables"][0]["rows"].append(["a", 3]), "repeats"),
    (lambda d: d["tables"][0]["rows"].append(["c", {"mean": 1}]), r"mean ± sd cell"),
    (lambda d: d["tables"][0]["rows"].append(["c", [1, "x"]]), "per-reader cell"),
    (lambda d: d["tables"][0].update(colour="red"), r"unknown keys \['colour'\]"),
    (lambda d: d.pop("citation"), r"missing keys \['citation'\]"),
    (lambda d: d["tables"][0].update(key_columns=2), "key_columns must be 1 .. 1"),
])
def test_schema_errors_name_the_file_and_the_problem(tmp_path, change, message):
    assert set(load_published(_write(tmp_path, "x_2000", GOOD))) == {"t"}
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    change(data)
    with pytest.raises(InputError, match=message) as err:
        load_published(_write(tmp_path, "x_2000", data))
    assert "x_2000.yaml" in str(err.value)


def test_cells_print_as_the_papers_do():
    assert cell_text({"mean": 1495, "sd": 659}) == "1495 ± 659"
    assert cell_text([94, 100]) == "94 / 100"
    assert cell_text(None) == "—"
    assert cell_text(0.0494) == "0.0494"
    assert cell_text("n.s.") == "n.s."


def test_published_table_beside_this_runs_values_in_the_same_layout(studies):
    table = studies["ballesteros_ramirez_2025"]["fid_per_scanner"]
    page = render_published_beside(table, {"Intera": {"FID": {"mean": 140.123, "sd": 2.5}},
                                           "Unspecified": {"FID": 99.5}})
    published, ours = re.findall(r'<table class="published-table".*?</table>', page)
    assert PUBLISHED_LABEL.replace("'", "&#x27;") in published
    assert "Ballesteros Ramirez S." in published
    assert 'data-kind="published"' in published
    assert 'data-kind="ours"' in ours
    assert "87.19 ± 0.92" in published
    assert "87.19" not in ours
    row_keys = re.findall(r'<tr data-key="([^"]+)"', published)
    assert row_keys == re.findall(r'<tr data-key="([^"]+)"', ours) == [
        "Unspecified", "Intera", "Gyrosan Intera", "Magnetom TrioTim"]
    assert re.findall(r"<th>([^<]+)</th>", published)[:2] == re.findall(r"<th>([^<]+)</th>", ours)[:2]
    assert "140.1 ± 2.5" in ours
    assert "99.5" in ours
    assert ours.count("—") >= 2
    with pytest.raises(ValueError, match="no published row"):
        render_published_beside(table, {"Siemens": {"FID": 1.0}})
    with pytest.raises(ValueError, match="unknown column"):
        render_published_beside(table, {"Intera": {"KID": 1.0}})


def test_section_renders_every_table_of_a_study_and_escapes(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["tables"][0]["title"] = "<b>T</b>"
    tables = load_published(_write(tmp_path, "x_2000", data))
    page = render_published_section(tables, {"t": {"a": {"FID": 3}}})
    assert page.startswith('<section id="published">')
    assert "&lt;b&gt;T&lt;/b&gt;" in page
    assert "<b>T</b>" not in page
    with pytest.raises(ValueError, match="unknown published table"):
        render_published_section(tables, {"u": {}})
    assert PUBLISHED_DIR.name == "published"
    assert (PUBLISHED_DIR / "kazuhiro_2018.yaml").is_file()


# -- the protocol table: the paper's protocol (published file) beside this run's (the preset) -----------

from pipeline_lib.core.config_check import config_problems  # noqa: E402
from pipeline_lib.core.published import PROTOCOL_GROUPS, load_protocol, published_path  # noqa: E402
from pipeline_lib.report.protocol_section import (DIFFERS, NOT_STATED, SAME, SEE_NOTE, config_values,  # noqa: E402
                                                  protocol_rows)

REPO = PUBLISHED_DIR.parents[1]


def _preset(study: str) -> dict:
    return yaml.safe_load((REPO / "presets" / f"{study}.yaml").read_text())


def _rows(study: str, config: dict, cohort=None):
    return {r.item.id: r for r in protocol_rows(load_protocol(published_path(study)), config, cohort,
                                                config["report"].get("protocol_notes"))}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_stated_protocol_value_cites_the_paper_and_every_group_is_covered(study):
    items = load_protocol(published_path(study))
    assert {i.group for i in items} == set(PROTOCOL_GROUPS)
    for item in items:
        assert item.paper is None or item.source, item.id
    # The cited places exist in the seed's wording: sections (§) and tables for seeds 001-003,
    # the article's headings for Kazuhiro et al.
    assert all("§" in i.source or "Table" in i.source or "title" in i.source or "Visual" in i.source
               or "Population" in i.source or "Training Data" in i.source or "Generation of" in i.source
               for i in items if i.paper is not None)


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_each_preset_with_its_protocol_notes_passes_the_config_check(study):
    config = _preset(study)
    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    # input.source is the user's data folder, absent here.
    assert [p for p in config_problems(config, schema) if not p.startswith("input.source")] == []
    rows = _rows(study, config)
    # Every row the preset knowingly departs from says why.
    assert [i for i, r in rows.items() if r.status in (DIFFERS, SEE_NOTE) and i != "cohort_size" and not r.reason] == []
    config["report"]["protocol_notes"]["no_such_item"] = "x"
    assert any("no_such_item: no such protocol item" in p for p in config_problems(config, schema))


def test_rows_come_from_the_preset_and_the_paper():
    config = _preset("ungria_hirte_2020")
    rows = _rows("ungria_hirte_2020", config, {"subjects_registered": 2029})
    assert rows["vae_lr"].status == SAME
    assert rows["vae_lr"].ours == (1.0e-4,)
    assert rows["grid"].status == SAME
    assert rows["cohort_size"].status == SAME
    assert rows["stylegan_batch"].status == NOT_STATED
    assert rows["stylegan_batch"].ours == (16,)
    assert rows["stylegan_loss"].status == DIFFERS
    assert "Progressive GAN" in rows["stylegan_loss"].reason
    assert rows["dataset"].status == SEE_NOTE
    # A changed preset value flips its row; only that row.
    config["models"]["vae"]["lr"] = 3.0e-4
    config["registration"]["grid"] = [128, 128, 48]
    changed = _rows("ungria_hirte_2020", config, {"subjects_registered": 2029})
    assert changed["vae_lr"].status == DIFFERS
    assert changed["vae_lr"].ours == (3.0e-4,)
    assert changed["grid"].status == DIFFERS
    assert {i for i, r in changed.items() if r.status != rows[i].status} == {"vae_lr", "grid"}
    # Two models of one family with different values: both shown, and not the paper's one value.
    config["models"]["vae2"] = {**config["models"]["vae"], "lr": 1.0e-4}
    assert _rows("ungria_hirte_2020", config)["vae_lr"].ours == (3.0e-4, 1.0e-4)


def test_a_changed_paper_value_flips_the_row(tmp_path):
    data = yaml.safe_load(published_path("han_2018").read_text())
    item = next(i for i in data["protocol"] if i["id"] == "dcgan_lr")
    config = _preset("han_2018")
    assert _rows("han_2018", config)["dcgan_lr"].status == SAME
    item["paper"] = 1.0e-4
    path = _write(tmp_path, "han_2018", data)
    rows = {r.item.id: r for r in protocol_rows(load_protocol(path), config, None)}
    assert rows["dcgan_lr"].status == DIFFERS


def test_sets_and_counts_compare_as_the_paper_states_them():
    han = _rows("han_2018", _preset("han_2018"))
    assert han["sequences"].status == SAME
    assert han["image_size"].status == SAME
    assert han["reader_concat_reals"].status == SAME
    kazuhiro = _preset("kazuhiro_2018")
    assert _rows("kazuhiro_2018", kazuhiro)["readers"].status == SAME
    kazuhiro["reader_study"]["reader_ids"] = ["R1", "R2"]
    assert _rows("kazuhiro_2018", kazuhiro)["readers"].status == DIFFERS
    assert config_values({"m": {"a": {"f": "x", "v": 1}, "b": {"f": "y", "v": 2}}}, "m[f=y].v") == [2]
    assert config_values({"s": [{"q": "dwi"}, {"q": "b0"}]}, "s.*.q") == ["dwi", "b0"]
    assert config_values({}, "a.b") == []
    # A learning rate written 1e-4 (YAML reads it as text) is the paper's 1.0e-4.
    ungria = _preset("ungria_hirte_2020")
    ungria["models"]["vae"]["lr"] = "1e-4"
    assert _rows("ungria_hirte_2020", ungria)["vae_lr"].status == SAME


@pytest.mark.parametrize("change, message", [
    (lambda i: i.pop("source"), "needs its source"),
    (lambda i: i.update(group="colour"), "group must be one of"),
    (lambda i: i.update(run={"config": "models..lr"}), "run.config must be a dotted path"),
    (lambda i: i.update(run={"cohort": "patients"}), "run.cohort must be one of"),
    (lambda i: i.update(compare="roughly"), "compare must be one of"),
])
def test_protocol_errors_name_the_file_and_the_item(tmp_path, change, message):
    item = {"id": "lr", "group": "model", "item": "LR", "paper": 1e-4, "source": "§3", "run": {"config": "models.a.lr"}}
    assert load_protocol(_write(tmp_path, "x_2000", {**GOOD, "protocol": [item]}))[0].source == "§3"
    change(item)
    with pytest.raises(InputError, match=message) as err:
        load_published(_write(tmp_path, "x_2000", {**GOOD, "protocol": [item]}))
    assert "x_2000.yaml" in str(err.value)
    assert "'lr'" in str(err.value)


def test_ungria_reconstruction_mse_carries_the_spread_over_pixels(studies):
    """The paper's "0.004 ± 0.02" spreads the squared error over pixels; the run's cell does the same."""
    from pipeline_lib.report.paper_section import DatasetView, ModelView, paper_values

    record = {"recon_mse_mean": 0.0041, "recon_mse_std": 0.0007, "recon_mse_pixel_std": 0.021,
              "recon_sharpness_mean": 349.0, "recon_sharpness_std": 160.0}
    values = paper_values(studies["ungria_hirte_2020"], [ModelView("vae", "vae", "d", metrics=[record])],
                          {"d": DatasetView("d")})
    assert values.ours["reconstruction"]["Vanilla VAE"]["MSE"] == {"mean": 0.0041, "sd": 0.021}
    assert "over every pixel" in values.notes["reconstruction"]
