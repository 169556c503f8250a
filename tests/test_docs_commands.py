"""Every shell command block of README.md and docs/*.md is run, so a broken command fails the suite.

A block is a fenced ```bash, ```sh or ```console block (console: the lines after a `$ ` prompt).
Each command runs in one scratch copy of the checkout, in the order the documents give them:

* `snakemake ...`: as a dry run (`-n` added); the target must come before `--configfile` and
  `--config`. Where the command or its config files name data under `/data/`, that path is a
  stand-in cohort of the same kind (cohorts/standin.py: BraTS, IXI, a BIDS set, a PACS export, a
  folder of T1 heads), discovery runs for real first, and the plan must reach training: a dry run
  of a config whose layout matches nothing plans no train job. (A preset's plan on its stand-in is
  tests/test_presets.py's, with the same command line; here its config is checked.)
* `make <target>`: `make -n <target>` (the demo and the suite are too long to run here; the recipe
  must exist and name its tool).
* `python -m ...`: run as written; `results/models/<model>/seed<seed>` is a tiny model trained here
  the way the train rule trains one, so export, generate and info run on a real run folder.
* `cp`: run as written.

A block that is not meant to be run is marked by an HTML comment on the line before its fence,
`<!-- not-run: why -->`, and must be listed in NOT_RUN below; any other command is an error that
says to mark it. Identical commands (the same arguments and config file contents) run once.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers.workflow import job_counts

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL = {"bash", "sh", "console"}
NOT_RUN_MARK = re.compile(r"^<!--\s*not-run:\s*(.*?)\s*-->$")
# Blocks deliberately not run: (document, first command). Empty: every block runs.
NOT_RUN: set[tuple[str, str]] = {
    ("README.md", "tensorboard --logdir results/models"),
    ("docs/CONFIG_OVERRIDES.md", "snakemake --profile profiles/local all --configfile my.yaml"),
    ("docs/external-family.md", ".venv/bin/pip install docs/examples/external-family"),
    ("docs/external-family.md", shlex.join(shlex.split(next(
        line for line in (REPO / "docs/external-family.md").read_text().splitlines() if line.startswith("for f in"))))),
}

# Placeholder data folders of the documents -> (stand-in study, path inside its stand-in).
STANDINS = {
    "t1_heads": ("kazuhiro_2018", "."),
    "BraTS": ("han_2018", "BraTS"),
    "BraTS2021": ("han_2018", "BraTS"),
    "IXI": ("ballesteros_ramirez_2025", "IXI"),
    "SALD": ("ballesteros_ramirez_2025", "SALD"),
    "pacs_export": ("ungria_hirte_2020", "export"),
}
STANDIN_SUBJECTS = {"kazuhiro_2018": 2, "han_2018": 2, "ballesteros_ramirez_2025": 3, "ungria_hirte_2020": 2}
DISCOVERY_TARGET = "results/inputs/subjects.tsv"


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    commands: tuple[str, ...]
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.document}:{self.line}"


def _commands(lines: list[str], console: bool) -> tuple[str, ...]:
    """Shell commands of a block: continuation lines joined, comments and blank lines dropped."""
    commands, current = [], ""
    for line in lines:
        if console:
            if not current and not line.startswith("$ "):
                continue  # output shown in a console block
            line = line[2:] if not current else line
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        words = shlex.split(current, comments=True)
        if words:
            commands.append(shlex.join(words))
        current = ""
    return tuple(commands)


def document_blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        end = next(k for k in range(start + 1, len(lines)) if lines[k].startswith("```"))
        if match.group(1) in SHELL:
            previous = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            mark = NOT_RUN_MARK.match(previous)
            blocks.append(Block(str(path.relative_to(REPO)), start + 1,
                                _commands(lines[start + 1:end], match.group(1) == "console"),
                                mark.group(1) if mark else None))
        index = end + 1
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in document_blocks(document)]


def test_blocks_are_found_and_every_unrun_block_is_listed():
    assert len(BLOCKS) >= 10, [block.name for block in BLOCKS]
    assert {block.document for block in BLOCKS} >= {"README.md", "docs/PRESETS.md", "docs/CLUSTER.md"}
    marked = {(block.document, block.commands[0]) for block in BLOCKS if block.not_run is not None}
    assert marked == NOT_RUN, "a not-run block must be listed in NOT_RUN (and a listed one marked)"
    for block in BLOCKS:
        assert block.commands, f"{block.name}: an empty shell block"
        assert block.not_run is None or block.not_run, f"{block.name}: a not-run mark gives its reason"


def test_block_parsing():
    text = ["snakemake --profile profiles/slurm all --configfile presets/x.yaml \\",
            "    --config 'input={source: /data/BraTS}'   # a comment", "", "# only a comment",
            "make demo      # installs .venv"]
    assert _commands(text, console=False) == (
        "snakemake --profile profiles/slurm all --configfile presets/x.yaml --config 'input={source: /data/BraTS}'",
        "make demo")
    assert _commands(["$ make test", "715 passed"], console=True) == ("make test",)


# ---- running them --------------------------------------------------------------------------------

def _run(argv: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd / "src"),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _tiny_run(folder: Path) -> Path:
    """A VAE trained for a few steps on 16 px blobs by the trainer the train rule calls."""
    from pipeline_lib.models.training import train_model

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16] / 16
    centre = rng.uniform(0.3, 0.7, (24, 1, 1))
    images = np.exp(-(((yy - centre) / 0.2) ** 2 + ((xx - 0.5) / 0.2) ** 2)).astype(np.float32)
    block = {"family": "vae", "width": 4, "latent_dim": 4, "batch_size": 8, "budget": {"steps": 4}, "seed": 0}
    train_model("vae", block, images, None, folder / "weights.pt", folder / "losses.csv", folder.parent / "ck",
                data_summary={"split": "train", "n_slices": 24, "n_subjects": 4})
    return folder


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout (tracked files), its venv linked in, stand-ins under data/."""
    from pipeline_lib.cohorts import standin

    root = tmp_path_factory.mktemp("docs")
    work = root / "checkout"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    files = [name for name in tracked.stdout.split("\0") if name and not name.startswith(("tests/", "bench/"))]
    for name in files:
        if (REPO / name).is_file():  # a file deleted but not yet committed is skipped
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, work / name)
    for name in ("configs", "docs"):  # untracked examples and documents of a working tree count too
        shutil.copytree(REPO / name, work / name, dirs_exist_ok=True)
    (work / ".venv").symlink_to(BIN.parent)
    (work / "data").mkdir()
    for study, n in STANDIN_SUBJECTS.items():
        standin.make_standin(study, root / "standin" / study, n, resolution_mm=4)
    for name, (study, inside) in STANDINS.items():
        (work / "data" / name).symlink_to((root / "standin" / study / inside).resolve())
    _tiny_run(root / "tiny" / "vae" / "seed0")
    return work


_DONE: dict[tuple[str, ...], str] = {}
_DISCOVERED: dict[Path, tuple[str, ...]] = {}  # checkout -> the discovery its results/ holds


def _local_data(text: str, work: Path) -> str:
    """/data/<name> -> the checkout's data/<name> (a path made local already stays as it is)."""
    return re.sub(rf"(?<!{re.escape(work.name)})/data/", f"{work}/data/", text)


def _config_files(argv: list[str]) -> list[str]:
    if "--configfile" not in argv:
        return []
    files = []
    for word in argv[argv.index("--configfile") + 1:]:
        if word.startswith("-"):
            break
        files.append(word)
    return files


def _snakemake(argv: list[str], work: Path) -> str:
    assert "all" in argv, "a documented snakemake command names its target"
    target = argv.index("all")
    for option in ("--configfile", "--config"):
        assert option not in argv or argv.index(option) > target, \
            f"the target must come before {option} (it takes several values: 'all' would be read as one)"
    argv = [_local_data(word, work) for word in argv]
    uses_standin = any("/data/" in word for word in argv)
    for name in _config_files(argv):
        path = work / name
        assert path.is_file(), f"config file {name} does not exist"
        text = path.read_text()
        uses_standin |= "/data/" in text
        path.write_text(_local_data(text, work))
    snakemake = [str(BIN / "snakemake"), *argv[1:]]
    # A preset's plan behind discovery is tests/test_presets.py's (this same command line, every
    # preset on its stand-in); here its config is checked.
    discovers = uses_standin and not any(name.startswith("presets/") for name in _config_files(argv))
    # discovery on this machine whatever the profile; its table serves every profile of one config
    discover = [DISCOVERY_TARGET if word == "all" else word for word in snakemake if word != "-n"]
    if "profiles/slurm" in discover:
        discover[discover.index("profiles/slurm")] = "profiles/local"
    state = tuple(_local_data(Path(work / word).read_text(), work) if word in _config_files(argv) else word
                  for word in discover)
    if not (discovers and _DISCOVERED.get(work) == state):
        for folder in ("results", "private", ".snakemake"):  # each config plans from nothing
            shutil.rmtree(work / folder, ignore_errors=True)
        _DISCOVERED.pop(work, None)
        if discovers:
            # discovery for real on the stand-in (a checkpoint: the plan behind it needs its table)
            found = _run([*discover, "--cores", "1"], work)
            assert found.returncode == 0, found.stdout[-3000:] + found.stderr[-3000:]
            _DISCOVERED[work] = state
    planned = _run([*snakemake, *([] if "-n" in snakemake else ["-n"])], work)
    output = planned.stdout + planned.stderr
    assert planned.returncode == 0, output[-4000:]
    if discovers:
        jobs = job_counts(output)
        assert jobs.get("train", 0) >= 1, jobs
        assert jobs.get("ingest", 0) >= 1, jobs
    return output


def _make(argv: list[str], work: Path) -> str:
    planned = _run(["make", "-n", *argv[1:]], work, timeout=120)
    output = planned.stdout + planned.stderr
    assert planned.returncode == 0, output[-3000:]
    tool = {"test": "pytest", "test-fast": "pytest"}.get(argv[1] if len(argv) > 1 else "", "snakemake")
    assert tool in planned.stdout, planned.stdout[-3000:]
    return output


def _python(argv: list[str], work: Path) -> str:
    assert argv[1] == "-m", "documented Python commands run a module (python -m ...)"
    if "--out" in argv and "--overwrite" not in argv:
        # each documented export/generate writes into a new folder (an earlier block may have made it)
        shutil.rmtree(work / argv[argv.index("--out") + 1], ignore_errors=True)
    for word in argv:
        run = re.fullmatch(r"results/models/(\w+)/seed\d+", word)
        if run and not (work / word).exists():
            shutil.copytree(work.parent / "tiny" / "vae" / "seed0", work / word)
    result = _run([sys.executable, *[_local_data(word, work) for word in argv[1:]]], work)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def _console(argv: list[str], work: Path) -> str:
    """The console command is `python -m pipeline_lib` under another name (tests/test_package.py checks
    that `pip install .` makes it); here it runs as that module, as written otherwise."""
    return _python([sys.executable, "-m", "pipeline_lib", *argv[1:]], work)


def _copy(argv: list[str], work: Path) -> str:
    result = _run(argv, work)
    assert result.returncode == 0, result.stderr
    return result.stdout


RUNNERS = {"snakemake": _snakemake, ".venv/bin/snakemake": _snakemake, "make": _make, "python": _python,
           ".venv/bin/python": _python, "cp": _copy, "brainmri-gen": _console}


@pytest.mark.integration  # Snakemake plans and discovery runs: not in `make test-fast`
@pytest.mark.parametrize("block", [block for block in BLOCKS if block.not_run is None], ids=lambda block: block.name)
def test_documented_commands_run(block, checkout):
    for command in block.commands:
        argv = shlex.split(command)
        runner = RUNNERS.get(argv[0])
        assert runner is not None, (f"{block.name}: no way to check `{command}`; run it through snakemake, make "
                                    f"or python -m, or mark the block `<!-- not-run: why -->` and list it in NOT_RUN")
        # the same arguments and config file contents (a copied example counts as the example)
        files = set(_config_files(argv))
        key = tuple(_local_data((checkout / word).read_text(), checkout) if word in files and (checkout / word).is_file()
                    else word for word in argv if word != "-n")
        if runner is not _copy and key in _DONE:
            continue
        try:
            _DONE[key] = runner(argv, checkout)
        except AssertionError as error:
            raise AssertionError(f"{block.name}: `{command}`: {error}") from None


def test_a_target_after_configfile_is_refused_before_anything_runs(tmp_path):
    """The README's old form: Snakemake reads `all` as one more config file (FileNotFoundError: 'all')."""
    for late in (["--configfile", "my.yaml", "all"], ["--config", "input={source: /data/IXI}", "all"]):
        with pytest.raises(AssertionError, match="target must come before"):
            _snakemake(["snakemake", "--profile", "profiles/local", *late], tmp_path)
    with pytest.raises(AssertionError, match="names its target"):
        _snakemake(["snakemake", "--profile", "profiles/local", "--configfile", "my.yaml"], tmp_path)
