"""Where a result came from: date, code version, configuration, package versions and machine.

The report ends with this record so that a reader can tell which run produced it and rerun it.
Secrets are left out: the pseudonym salt and the input folder's path (hospital exports are named
after patients; the path lives only in private/source) are replaced by a placeholder before the
configuration is shown or hashed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

#: Packages whose versions decide results (numbers, images) or the workflow's behaviour.
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "antspyx", "nibabel", "pydicom", "dcm2niix",
            "opencv-python-headless", "pandas", "matplotlib", "pytorch-fid", "snakemake")
#: Config entries never shown or hashed: (section, key) -> the values that are names, not secrets
#: (input.source "demo" is the demo cohort, not a path).
SECRETS = {("privacy", "pseudonym_salt"): (), ("input", "source"): ("demo",)}
REDACTED = "<redacted>"


def redacted_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` (JSON types) with every secret replaced by a placeholder."""
    copy = json.loads(json.dumps(config, default=str))
    for (section, key), public in SECRETS.items():
        if isinstance(copy.get(section), dict) and key in copy[section] and copy[section][key] not in public:
            copy[section][key] = REDACTED
    return copy


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of the redacted configuration with sorted keys (key order does not matter)."""
    text = json.dumps(redacted_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def git_commit(checkout: Path) -> str:
    """The checkout's commit, with "+ local changes" when tracked files differ from it;
    "unknown (not a git checkout)" when there is no repository or no git."""
    try:
        commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=20)
        if commit.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"
    changed = " + local changes" if dirty.returncode == 0 and dirty.stdout.strip() else ""
    return commit.stdout.strip() + changed


def package_versions(names=PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description() -> str:
    """The CPU model and core count, and the GPUs torch sees."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu}, {cores} cores available, {platform.system()} {platform.release()}"
    try:
        import torch

        if torch.cuda.is_available():
            names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
            text += f"; GPU: {', '.join(names)} ({torch.cuda.device_count()})"
        else:
            text += "; no GPU visible"
    except ImportError:
        pass
    return text


def provenance(config: Mapping[str, Any], checkout: Path, *, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The record shown at the end of the report."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(checkout),
        "config_digest": config_digest(config),
        "config": redacted_config(config),
        "packages": package_versions(),
        "python": platform.python_version(),
        "device": device_description(),
    }
