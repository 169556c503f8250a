"""The conda environments (envs/*.yaml) pin exactly what requirements.txt pins."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def requirement_pins() -> dict[str, str]:
    """Pins of requirements.txt and of the packages installed with --no-deps."""
    pins = {}
    lines = (REPO / "requirements.txt").read_text().splitlines()
    lines += (REPO / "requirements-nodeps.txt").read_text().splitlines()
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_match_requirements(env_file):
    env = yaml.safe_load(env_file.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = requirement_pins()
    assert pip, env_file
    for entry in pip:
        name, version = entry.split("==")
        assert pins.get(name.lower()) == version, f"{env_file.name}: {entry} vs requirements.txt"


def test_every_rule_uses_an_existing_env():
    for rule_file in (REPO / "workflow/rules").glob("*.smk"):
        for line in rule_file.read_text().splitlines():
            if line.strip().startswith('"../../envs/'):
                assert (rule_file.parent / line.strip().strip('",')).is_file(), (rule_file, line)
