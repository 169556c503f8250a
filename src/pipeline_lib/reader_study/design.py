"""Reader-study designs as the papers ran them: per-reader kits, a familiarisation set, blocks.

These compose *which* images each reader sees; ``kit.py`` turns a composition into PNGs and a
page. Pools are the frames ``compose_kit`` takes (columns ``index`` and ``group``).

- **Per-reader kits** (Kazuhiro et al.: "50 real and created images were randomly selected
  from the data set. The number of created images in the provided data set randomly varied
  from 40% to 60%, and thus, the readers did not necessarily read the exact same MR images"):
  :func:`reader_kits` composes one kit per reader ID, each with the kit's composition rules
  and its own seed :func:`reader_seed` (seed, reader ID), so a reader's set is reproducible from
  the ID alone and two readers get different sets.
- **Familiarisation** (Kazuhiro et al.: "the readers gained familiarity with the software tool
  by reading a training set of 10 cases"): :func:`familiarisation_set` draws ``n`` cases shown
  *with their answers* before scoring starts; they are taken out of the pools first, so no
  scored image was seen in training, and they never enter the scoring.
- **Blocks** (Han et al., section 3.3: "50 real/50 synthetic MR images ... for each
  GAN/sequence ... Concat images were classified together with real T1, T1c, T2, and FLAIR
  images in equal proportion"): a :class:`BlockSpec` names its synthetic images (a model,
  optionally one label group, e.g. a sequence) and its real images (optionally matched to one
  or several label groups, split in equal shares); :func:`compose_blocks` draws every block
  without reusing an image and keeps blocks in order (a reader completes one, then the next),
  shuffled within each block. :func:`han_blocks` writes Han et al.'s design as specs. The label
  column (``group``) is optional: blocks that name no group need none, and a block that names
  one fails with a clear error when the pools have no such label.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import REAL, SYNTHETIC, ReaderStudySettings, read_settings
from pipeline_lib.reader_study.composition import Drawer, compose_kit


def reader_seed(seed: int, reader_id: str) -> int:
    """The composition seed of one reader's kit: from the study seed and the reader ID alone."""
    digest = hashlib.sha256(f"{int(seed)}:{reader_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _without(pool: pd.DataFrame, used: pd.DataFrame, source: str) -> pd.DataFrame:
    taken = set(used.loc[used["source"] == source, "source_index"].astype(int))
    return pool[~pool["index"].isin(taken)].reset_index(drop=True)


def familiarisation_set(real: pd.DataFrame, synthetic: Mapping[str, pd.DataFrame], n: int, seed: int,
                        sources: Mapping[str, str] | None = None) -> pd.DataFrame:
    """``n`` training cases shown with their answers: half real (rounded up), the synthetic half
    spread over the models in turn. Rows as :func:`compose_kit`'s, block ``familiarisation``."""
    if n < 0:
        raise InputError(f"the familiarisation set needs a count >= 0, got {n}")
    columns = ["truth", "source", "block", "group", "source_index"]
    if n == 0:
        return pd.DataFrame(columns=columns)
    rng = np.random.default_rng([int(seed), 2])
    draw = Drawer({REAL: real, **synthetic}, dict(sources or {}), rng)
    models = sorted(synthetic)
    n_synthetic = n // 2
    counts = {m: n_synthetic // len(models) + (1 if i < n_synthetic % len(models) else 0)
              for i, m in enumerate(models)}
    parts = [draw(REAL, n - n_synthetic, block="familiarisation")]
    parts += [draw(m, c, block="familiarisation") for m, c in counts.items() if c]
    kit = pd.concat(parts, ignore_index=True)
    return kit.iloc[rng.permutation(len(kit))].reset_index(drop=True)


def reader_kits(real: pd.DataFrame, synthetic: Mapping[str, pd.DataFrame],
                settings: ReaderStudySettings | Mapping, reader_ids: Sequence[str], *,
                n_familiarisation: int = 0, sources: Mapping[str, str] | None = None) -> dict:
    """One composition per reader (``compose_kit`` with :func:`reader_seed`), plus the shared
    familiarisation set drawn first and kept out of every reader's scored set.

    Returns ``{"familiarisation": frame, "readers": {reader_id: frame}}``; each reader's frame has a
    ``reader_id`` column.
    """
    settings = read_settings(ReaderStudySettings, settings)
    ids = [str(r) for r in reader_ids]
    if not ids or len(set(ids)) != len(ids):
        raise InputError(f"per-reader kits need distinct reader IDs, got {ids}")
    training = familiarisation_set(real, synthetic, n_familiarisation, settings.seed, sources)
    real_left = _without(real, training, REAL)
    synthetic_left = {m: _without(pool, training, m) for m, pool in synthetic.items()}
    kits = {}
    for reader in ids:
        own = dataclasses.replace(settings, seed=reader_seed(settings.seed, reader))
        kits[reader] = compose_kit(real_left, synthetic_left, own, sources).assign(reader_id=reader)
    return {"familiarisation": training, "readers": kits}


@dataclass(frozen=True)
class BlockSpec:
    """One block a reader completes in turn.

    ``synthetic``: (model, group or None) pairs whose images are pooled for the block's
    ``n_synthetic`` synthetic images (split in equal shares over the pairs). ``real_groups``:
    the label groups the ``n_real`` real images are matched to, in equal shares (None: any real
    image).
    """

    name: str
    synthetic: tuple[tuple[str, str | None], ...]
    n_synthetic: int
    n_real: int
    real_groups: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.synthetic:
            raise InputError(f"a reader-study block needs a name and synthetic sources, got {self!r}")
        if self.n_synthetic < 0 or self.n_real < 0:
            raise InputError(f"block {self.name!r}: image counts must be >= 0")
        object.__setattr__(self, "synthetic", tuple((str(m), g) for m, g in self.synthetic))
        if self.real_groups is not None:
            object.__setattr__(self, "real_groups", tuple(self.real_groups))


def equal_shares(n: int, k: int) -> list[int]:
    """``n`` split into ``k`` counts differing by at most one, the larger ones first."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def han_blocks(models: Sequence[str], sequences: Sequence[str], n: int = 50,
               concat_models: Sequence[str] = ()) -> list[BlockSpec]:
    """Han et al.'s Visual Turing Test as blocks: for every model and sequence, ``n`` synthetic
    images of that sequence against ``n`` real ones of the same sequence; for every Concat model
    (trained on all sequences at once), ``n`` of its samples against ``n`` real images drawn from
    all ``sequences`` in equal shares."""
    blocks = [BlockSpec(f"{m}/{s}", ((m, s),), n, n, (s,)) for m in models for s in sequences]
    blocks += [BlockSpec(f"{m}/concat", ((m, None),), n, n, tuple(sequences)) for m in concat_models]
    return blocks


def compose_blocks(real: pd.DataFrame, synthetic: Mapping[str, pd.DataFrame], blocks: Sequence[BlockSpec],
                   seed: int, sources: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Rows of every block in block order (shuffled within each block), no image used twice.

    Columns as :func:`compose_kit`'s plus ``block_order`` (0, 1, ...) and ``position`` within the block.
    """
    if not blocks:
        raise InputError("a blocked reader study needs at least one block")
    names = [b.name for b in blocks]
    if len(set(names)) != len(names):
        raise InputError(f"block names must be distinct, got {names}")
    labelled = {name: bool((pool["group"].astype(str) != "").any())
                for name, pool in {REAL: real, **synthetic}.items()}
    for block in blocks:
        wanted = [(m, g) for m, g in block.synthetic if g is not None] + [(REAL, g) for g in block.real_groups or ()]
        for name, group in wanted:
            if name in labelled and not labelled[name]:
                raise InputError(f"block {block.name!r} matches images by label {group!r}, but the "
                                 f"{'real slices' if name == REAL else f'samples of {name!r}'} carry no labels; "
                                 f"set reader_study.group_by to the label column (e.g. sequence) or use "
                                 f"blocks without groups")
    rng = np.random.default_rng([int(seed), 3])
    draw = Drawer({REAL: real, **synthetic}, dict(sources or {}), rng)
    frames = []
    for order, block in enumerate(blocks):
        parts = []
        for (model, group), count in zip(block.synthetic, equal_shares(block.n_synthetic, len(block.synthetic))):
            if model not in synthetic:
                raise InputError(f"block {block.name!r} names model {model!r}, which has no samples "
                                 f"(models: {', '.join(sorted(synthetic))})")
            if count:
                parts.append(draw(model, count, block=block.name, group=group))
        groups = block.real_groups or (None,)
        for group, count in zip(groups, equal_shares(block.n_real, len(groups))):
            if count:
                parts.append(draw(REAL, count, block=block.name, group=group))
        frame = pd.concat(parts, ignore_index=True)
        frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
        frames.append(frame.assign(block_order=order, position=np.arange(len(frame))))
    return pd.concat(frames, ignore_index=True)


def composition_summary(kit: pd.DataFrame) -> dict:
    """Counts a coordinator checks: images, real, synthetic and the synthetic fraction."""
    n = int(len(kit))
    n_synthetic = int((kit["truth"] == SYNTHETIC).sum())
    return {"n_images": n, "n_real": n - n_synthetic, "n_synthetic": n_synthetic,
            "synthetic_fraction": n_synthetic / n if n else float("nan")}


def block_specs(synthetic: Mapping[str, pd.DataFrame], settings: ReaderStudySettings,
                real_labels: set[str] | None = None) -> list[BlockSpec]:
    """The blocks of ``reader_study.blocks``: one per model (``per_model``), or one per model and label
    value of its samples (``per_model_and_group``; a model without labels gets one block), each
    ``n_per_model`` synthetic against ``n_per_model`` real images. A block's real images are of its
    label value, else of ``block_real_groups`` in equal shares (Han et al.'s Concat against the four
    real sequences), else any. Names: ``<model>/<label>``, ``<model>/concat`` (several real groups),
    or ``<model>``; the page never shows them.

    ``real_labels``: the label values the kit's real slices carry. ``block_real_groups`` is one
    setting for every kit, while a study has one kit per dataset: Han et al.'s T1 kit holds only
    real T1 slices and its Concat kit all four sequences. So the groups are narrowed to those the
    kit's real slices carry (the T1 kit's blocks draw T1, the Concat kit's the four in equal
    shares); none of them there is an error naming both lists."""
    n = settings.n_per_model
    real_groups = settings.block_real_groups
    if real_groups and real_labels is not None:
        present = tuple(g for g in real_groups if g in real_labels)
        if not present:
            raise InputError(f"reader_study.block_real_groups {list(real_groups)}: none of these labels is "
                             f"among the kit's real slices ({settings.group_by} values: {sorted(real_labels)})")
        real_groups = present
    specs = []
    for model in sorted(synthetic):
        groups = (sorted(set(synthetic[model]["group"].astype(str)) - {""})
                  if settings.blocks == "per_model_and_group" else [])
        if groups:
            specs += [BlockSpec(f"{model}/{g}", ((model, g),), n, n, (g,)) for g in groups]
        elif real_groups:
            name = f"{model}/{real_groups[0]}" if len(real_groups) == 1 else f"{model}/concat"
            specs.append(BlockSpec(name, ((model, None),), n, n, real_groups))
        else:
            specs.append(BlockSpec(model, ((model, None),), n, n, None))
    return specs


def compose_design(real: pd.DataFrame, synthetic: Mapping[str, pd.DataFrame], settings: ReaderStudySettings | Mapping,
                   sources: Mapping[str, str] | None = None) -> dict:
    """The kit's whole design from the settings: the familiarisation set (drawn first, out of every
    scored set) and, per reader ID (``None``: one set for every reader), the scored composition:
    blocks in turn (``blocks``) or the preset's composition, seeded by (seed, reader ID).

    Returns ``{"familiarisation": frame, "readers": {reader_id or None: frame}}``; with blocks a
    frame has ``block_order``.
    """
    settings = read_settings(ReaderStudySettings, settings)
    training = familiarisation_set(real, synthetic, settings.n_familiarisation, settings.seed, sources)
    real_left = _without(real, training, REAL)
    synthetic_left = {m: _without(pool, training, m) for m, pool in synthetic.items()}
    real_labels = set(real_left["group"].astype(str)) - {""}
    specs = block_specs(synthetic_left, settings, real_labels) if settings.blocks != "none" else None
    readers: dict = {}
    for reader in settings.reader_ids or (None,):
        seed = settings.seed if reader is None else reader_seed(settings.seed, reader)
        if specs:
            frame = compose_blocks(real_left, synthetic_left, specs, seed, sources)
        else:
            frame = compose_kit(real_left, synthetic_left, dataclasses.replace(settings, seed=seed), sources)
        readers[reader] = frame
    return {"familiarisation": training, "readers": readers}
