"""Which images a reader-study kit holds: seeded draws from the real and synthetic pools.

Three seed designs are presets of the composition (:func:`compose_kit`):

- ``ungria_hirte`` (Ungría Hirte et al., section 3.4): ``n_real`` real test slices plus
  ``n_per_model`` samples of every model, all in one shuffled set.
- ``han`` (Han et al., section 3.3): one balanced block per model, ``n_per_model``
  real and ``n_per_model`` synthetic images; real images are not reused across
  blocks, so each model's 2x2 table has its own real images. With ``group_by``
  (e.g. a ``sequence`` label column) and a conditional model, each block is
  stratified by that label, matching Han et al.'s per-sequence tables.
- ``kazuhiro`` (Kazuhiro et al.): ``n_total`` images whose synthetic fraction is drawn
  uniformly from ``synthetic_fraction`` (Kazuhiro et al.: 40-60 %), so readers cannot
  count on half of them being synthetic.

Pools are frames with columns ``index`` (row in images.npy / samples.npy) and ``group`` (label
value or ""). :class:`Drawer` draws from them without replacement; ``design.py`` builds the papers'
per-reader kits, familiarisation sets and blocks from the same draws, and ``kit.py`` turns a
composition into PNGs, a page and an answer key.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import REAL, SYNTHETIC, ReaderStudySettings, read_settings


def compose_kit(real: pd.DataFrame, synthetic: Mapping[str, pd.DataFrame], settings: ReaderStudySettings | Mapping,
                sources: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Choose the kit's images: rows ``truth, source, block, group, source_index``.

    ``real`` and each ``synthetic[model]`` are pools with columns ``index``
    (row in images.npy / samples.npy) and ``group`` (label value or "").
    ``sources`` names the file behind each pool for error messages.
    Deterministic for a given ``settings.seed``.
    """
    settings = read_settings(ReaderStudySettings, settings)
    sources = dict(sources or {})
    if REAL in synthetic:
        raise InputError("a model may not be called 'real' in a reader study: the name marks real images")
    if not synthetic:
        raise InputError("the reader study needs at least one model's samples")
    rng = np.random.default_rng([settings.seed, 0])
    pools = {REAL: real, **synthetic}
    draw = Drawer(pools, sources, rng)
    preset = settings.preset
    if preset == "ungria_hirte":
        parts = [draw(REAL, settings.n_real, block="")]
        parts += [draw(model, settings.n_per_model, block="") for model in sorted(synthetic)]
    elif preset == "han":
        parts = []
        for model in sorted(synthetic):
            parts += _balanced_block(draw, model, settings.n_per_model, stratify=settings.group_by is not None)
    else:
        low, high = settings.synthetic_fraction
        n_synthetic = int(round(settings.n_total * rng.uniform(low, high)))
        parts = [draw(REAL, settings.n_total - n_synthetic, block="")]
        for model, count in _spread(n_synthetic, sorted(synthetic), rng).items():
            parts.append(draw(model, count, block=""))
    kit = pd.concat(parts, ignore_index=True)
    return kit.iloc[rng.permutation(len(kit))].reset_index(drop=True)


class Drawer:
    """Seeded draws without replacement; an image is never used twice in one kit."""

    def __init__(self, pools: Mapping[str, pd.DataFrame], sources: Mapping[str, str], rng):
        self.pools = pools
        self.sources = sources
        self.rng = rng
        self.used: dict[str, set[int]] = {name: set() for name in pools}

    def __call__(self, source: str, n: int, block: str, group: str | None = None) -> pd.DataFrame:
        pool = self.pools[source]
        free = pool[~pool["index"].isin(self.used[source])]
        if group is not None:
            free = free[free["group"] == group]
        if n > len(free):
            what = "real test" if source == REAL else f"model {source!r}"
            where = f" of group {group!r}" if group is not None else ""
            raise InputError(
                f"{self.sources.get(source, source)}: the reader study needs {n} {what} images{where} but only "
                f"{len(free)} are available; lower reader_study's counts or provide more images")
        chosen = free.iloc[np.sort(self.rng.choice(len(free), size=n, replace=False))]
        self.used[source].update(int(i) for i in chosen["index"])
        return pd.DataFrame({
            "truth": REAL if source == REAL else SYNTHETIC,
            "source": source,
            "block": block,
            "group": chosen["group"].astype(str).to_numpy(),
            "source_index": chosen["index"].astype(int).to_numpy(),
        })


def _balanced_block(draw: Drawer, model: str, n: int, stratify: bool) -> list[pd.DataFrame]:
    """Seed 002: ``n`` synthetic images of ``model`` and ``n`` real ones, stratified by label if asked."""
    groups = sorted(set(draw.pools[model]["group"]) - {""}) if stratify else []
    if not groups:
        return [draw(model, n, block=model), draw(REAL, n, block=model)]
    counts = [n // len(groups) + (1 if i < n % len(groups) else 0) for i in range(len(groups))]
    parts = []
    for group, count in zip(groups, counts):
        if count:
            parts += [draw(model, count, block=model, group=group), draw(REAL, count, block=model, group=group)]
    return parts


def _spread(n: int, models: Sequence[str], rng) -> dict[str, int]:
    """``n`` split evenly over ``models``; the remainder goes to randomly chosen models."""
    counts = {model: n // len(models) for model in models}
    for index in rng.choice(len(models), size=n % len(models), replace=False):
        counts[models[int(index)]] += 1
    return counts
