"""A feature space learnt from the real MRI slices themselves (the "domain network").

FID and PRDC on ImageNet Inception features measure distances in a space
built for photographs; Ballesteros Ramirez concludes that this may not capture what
matters in MRI. The domain network is a small CNN trained here, on the real
TRAIN slices only, to predict

* the slice position: the slice index normalised to [0, 1] over the range of
  slice indices kept in the slice table (regression), and
* a label of the slice table (scanner, sequence, ...) when one is configured
  or found (classification), as a second head.

Its penultimate layer (``feature_dim`` values after a leaky ReLU) is the domain
feature space: a Fréchet distance and precision/recall/density/coverage are
computed there next to the Inception ones, and the memorization audit uses
its cosine similarity. How good the space is shows in its held-out error on
the TEST split, which the training job writes next to the weights.

The same CNN, with a classification head only, is the classifier of the
conditioning-accuracy and augmentation-utility evaluations (``utility.py``).

Training is deterministic for a seed on a given machine and thread count:
weights come from ``torch.manual_seed`` and batches from a seeded generator.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import atomic_path, write_json
from pipeline_lib.core.settings import DomainSettings, read_settings
from pipeline_lib.core.slices import take_images
from pipeline_lib.core.tensor_files import load_tensor_file, plain_values

log = logging.getLogger(__name__)

#: Columns of slices.tsv that are bookkeeping, not labels.
NON_LABEL_COLUMNS = ("row", "subject", "slice_index", "split", "axis", "position_mm", "augmented")
#: An automatically chosen label column has at most this many classes (more looks continuous).
MAX_AUTO_CLASSES = 20


# ----------------------------------------------------------------- settings


@dataclass(frozen=True)
class ClassifierSettings:
    """Size and optimisation of one small slice CNN."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 16
    feature_dim: int = 64

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "width", "feature_dim"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive number, got {self.lr!r}")

    @classmethod
    def of(cls, section: Any) -> "ClassifierSettings":
        """The network part of a section's settings (domain, conditioning or utility)."""
        return cls(section.steps, section.batch_size, section.lr, section.width,
                   getattr(section, "feature_dim", cls.feature_dim))


# ----------------------------------------------------------------- slice table


def _in_split(table: pd.DataFrame, split: str) -> pd.Series:
    """Rows of ``split`` that are real slices (offline-augmented images are training data only)."""
    keep = table["split"] == split
    if "augmented" in table.columns:
        keep &= table["augmented"].astype(str) != "1"
    return keep


def label_columns(table: pd.DataFrame) -> list[str]:
    """Label columns of a slice table (every column but row, subject, slice_index, split), in order."""
    return [c for c in table.columns if c not in NON_LABEL_COLUMNS]


def choose_label_column(table: pd.DataFrame, requested: str | None, where: str = "slices.tsv") -> str | None:
    """The label column to learn: ``requested``, or automatically the first usable one (or None).

    A requested column must exist and have at least 2 classes among the TRAIN
    rows. Automatic choice (``requested`` None) takes the first label column
    with 2 to ``MAX_AUTO_CLASSES`` classes in the TRAIN rows, so that
    identifiers and continuous values are not mistaken for classes.
    """
    train = table[_in_split(table, "train")]
    if requested is not None:
        if requested not in table.columns or requested in NON_LABEL_COLUMNS:
            raise InputError(f"{where}: no label column '{requested}' "
                             f"(label columns: {', '.join(label_columns(table)) or 'none'})")
        n = _n_classes(train[requested])
        if n < 2:
            raise InputError(f"{where}: label column '{requested}' has {n} class(es) among the "
                             "training slices; at least 2 are needed")
        return requested
    for column in label_columns(table):
        if 2 <= _n_classes(train[column]) <= MAX_AUTO_CLASSES:
            return column
    return None


def class_names(values: pd.Series) -> list[str]:
    """Sorted distinct non-empty labels (as text)."""
    return sorted({str(v) for v in values if str(v) != ""})


def encode_labels(values, names: list[str]) -> np.ndarray:
    """Class index of each value in ``names``; -1 for a value not among them (or empty)."""
    index = {name: i for i, name in enumerate(names)}
    return np.array([index.get(str(v), -1) for v in values], dtype=np.int64)


def position_range(table: pd.DataFrame) -> tuple[int, int]:
    """Lowest and highest slice index of the table (the kept range)."""
    if "slice_index" not in table.columns:
        raise InputError("slices.tsv has no 'slice_index' column")
    index = pd.to_numeric(table["slice_index"], errors="coerce")
    if index.isna().any():
        raise InputError("slices.tsv: 'slice_index' holds non-numeric values")
    return int(index.min()), int(index.max())


def slice_positions(table: pd.DataFrame, span: tuple[int, int]) -> np.ndarray:
    """Slice index mapped linearly onto [0, 1] over ``span`` = (lowest, highest) index."""
    lo, hi = span
    if hi <= lo:
        raise InputError(f"slice positions need at least two distinct slice indices, got only {lo}")
    index = pd.to_numeric(table["slice_index"]).to_numpy(dtype=np.float64)
    return np.clip((index - lo) / (hi - lo), 0.0, 1.0)


def position_bins(positions: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins of positions in [0, 1]: 0 (inferior) … n_bins − 1 (superior)."""
    if n_bins < 2:
        raise InputError(f"position_bins must be at least 2, got {n_bins}")
    return np.minimum((np.asarray(positions) * n_bins).astype(np.int64), n_bins - 1)


def _n_classes(values: pd.Series) -> int:
    return len(class_names(values))


# ----------------------------------------------------------------- network


class SliceCNN(nn.Module):
    """Four strided 3×3 convolutions, a 4×4 average pool and a ``feature_dim`` layer, then heads.

    Works for any square image size ≥ 16 px (the pool makes the feature layer
    size-independent). ``features`` is the penultimate layer after its leaky ReLU.
    Heads: ``position`` (one value, regression) when ``position`` is true and
    ``label`` (``n_classes`` logits) when ``n_classes`` ≥ 2.
    """

    def __init__(self, width: int = 16, feature_dim: int = 64, n_classes: int = 0, position: bool = False):
        super().__init__()
        if not position and n_classes < 2:
            raise InputError("the network needs a slice-position head or a label with at least 2 classes")
        w = int(width)
        self.config = {"width": w, "feature_dim": int(feature_dim), "n_classes": int(n_classes),
                       "position": bool(position)}
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            # Leaky, not plain ReLU: with a plain ReLU about half the feature units died on the demo.
            nn.Linear(4 * w * 16, int(feature_dim)), nn.LeakyReLU(0.2),
        )
        self.position_head = nn.Linear(int(feature_dim), 1) if position else None
        self.label_head = nn.Linear(int(feature_dim), int(n_classes)) if n_classes >= 2 else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # Images in [0, 1] are centred so the first layer starts near its useful range.
        return self.body(x * 2.0 - 1.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        out = {}
        if self.position_head is not None:
            out["position"] = self.position_head(h)[:, 0]
        if self.label_head is not None:
            out["label"] = self.label_head(h)
        return out


def fit_slice_cnn(images: np.ndarray, *, positions: np.ndarray | None = None, labels: np.ndarray | None = None,
                  n_classes: int = 0, settings: ClassifierSettings = ClassifierSettings(),
                  seed: int = 0) -> SliceCNN:
    """Train a :class:`SliceCNN` on (N, H, W) images in [0, 1]; deterministic for ``seed``.

    ``positions`` (floats in [0, 1]) train the position head with a squared
    error divided by the positions' variance, so that both heads' losses start
    near 1; ``labels`` (class indices, −1 = unknown and ignored) train the
    label head with cross-entropy. Mini-batches are drawn without replacement,
    epoch after epoch, from a generator seeded by ``seed``.
    """
    images = _check_images(images, "training images")
    n = len(images)
    use_position = positions is not None
    use_label = labels is not None and n_classes >= 2
    if use_position and len(positions) != n or labels is not None and len(labels) != n:
        raise InputError("training images, positions and labels differ in length")
    torch.manual_seed(seed)
    model = SliceCNN(settings.width, settings.feature_dim, n_classes if use_label else 0, use_position)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    pos_t = torch.as_tensor(positions, dtype=torch.float32) if use_position else None
    pos_scale = float(max(np.var(positions), 1e-3)) if use_position else 1.0
    lab_t = torch.as_tensor(labels, dtype=torch.long) if use_label else None
    gen = torch.Generator().manual_seed(seed)
    batch = min(settings.batch_size, n)
    order, cursor = torch.randperm(n, generator=gen), 0
    model.train()
    for _ in range(settings.steps):
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor:cursor + batch]
        cursor += batch
        # only the batch's images are read (``images`` may be a split on disk, core.slices.SplitImages)
        out = model(torch.from_numpy(np.array(images[idx.numpy()], dtype=np.float32)).unsqueeze(1))
        loss = torch.zeros(())
        if use_position:
            loss = loss + F.mse_loss(out["position"], pos_t[idx]) / pos_scale
        if use_label:
            target = lab_t[idx]
            if bool((target >= 0).any()):
                loss = loss + F.cross_entropy(out["label"], target, ignore_index=-1)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    final = float(loss.detach())
    if not math.isfinite(final):
        raise RuntimeError(f"slice CNN training diverged (loss {final}); lower lr")
    return model.eval()


@torch.no_grad()
def predict(model: SliceCNN, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Head outputs for (N, H, W) images: ``position`` (N,) and/or ``label`` class indices (N,)."""
    model.eval()
    outs: dict[str, list[np.ndarray]] = {}
    for x in _batches(images, batch_size):
        for key, value in model(x).items():
            value = value.argmax(dim=1) if key == "label" else value.clamp(0.0, 1.0)
            outs.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(parts) for key, parts in outs.items()}


# ----------------------------------------------------------------- the domain network


@dataclass
class DomainNetwork:
    """The trained network plus what is needed to interpret its heads."""

    model: SliceCNN
    label_column: str | None
    class_names: list[str]
    position_span: tuple[int, int] | None
    summary: dict


def train_domain_network(images: np.ndarray, table: pd.DataFrame, settings: DomainSettings,
                         source: str = "slices.tsv") -> DomainNetwork:
    """Fit the domain network on the TRAIN rows of ``table`` (rows index ``images``).

    ``source`` names the table in error messages.
    """
    train = table[_in_split(table, "train")]
    if train.empty:
        raise InputError(f"{source} has no 'train' rows to learn the domain feature space from")
    column = choose_label_column(table, settings.label_column, where=source)
    span = position_range(table)
    has_position = span[1] > span[0]
    if not has_position and column is None:
        raise InputError(f"{source}: every slice has the same slice_index and no label column has "
                         "2 or more classes, so the domain network has nothing to learn")
    names = class_names(train[column]) if column else []
    model = fit_slice_cnn(
        take_images(images, train.index.to_numpy()),
        positions=slice_positions(train, span) if has_position else None,
        labels=encode_labels(train[column], names) if column else None,
        n_classes=len(names), settings=ClassifierSettings.of(settings), seed=settings.seed)
    return DomainNetwork(model, column, names, span if has_position else None, {})


def evaluate_domain_network(network: DomainNetwork, images: np.ndarray, table: pd.DataFrame,
                            split: str) -> dict:
    """Held-out quality of the heads on the rows of ``split``: position error and label accuracy."""
    rows = table[_in_split(table, split)]
    result: dict[str, Any] = {"split": split, "n_images": int(len(rows))}
    if rows.empty:
        return result
    pred = predict(network.model, take_images(images, rows.index.to_numpy()))
    if network.position_span is not None:
        truth = slice_positions(rows, network.position_span)
        err = pred["position"] - truth
        lo, hi = network.position_span
        var = float(np.var(truth))
        result["position"] = {
            "mae": float(np.mean(np.abs(err))),
            "mae_slices": float(np.mean(np.abs(err)) * (hi - lo)),
            "r2": float(1.0 - np.mean(err ** 2) / var) if var > 0 else None,
            # A network that always predicts the mean position: what "no skill" scores.
            "mae_predicting_mean": float(np.mean(np.abs(truth - truth.mean()))),
        }
    if network.label_column is not None:
        truth = encode_labels(rows[network.label_column], network.class_names)
        known = truth >= 0
        result["label"] = {
            "column": network.label_column,
            "accuracy": float(np.mean(pred["label"][known] == truth[known])) if known.any() else None,
            "chance": 1.0 / len(network.class_names),
            "n_images": int(known.sum()),
            "n_unseen_label": int((~known).sum()),
        }
    return result


def save_domain_network(network: DomainNetwork, path: Path) -> None:
    payload = {"state_dict": network.model.state_dict(), "config": network.model.config,
               "label_column": network.label_column, "class_names": network.class_names,
               "position_span": network.position_span, "summary": network.summary}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(plain_values(payload, "domain network"), tmp)


def load_domain_network(path: Path) -> DomainNetwork:
    """Rebuild the domain network saved by :func:`save_domain_network` (CPU, eval mode), loaded with
    ``weights_only=True``: a file that would need to run code to load is refused."""
    path = Path(path)
    payload = load_tensor_file(path, "domain network file")
    try:
        model = SliceCNN(**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # noqa: BLE001 - a foreign payload fails in many ways (missing keys, shapes)
        raise InputError(f"{path}: not a domain network saved by this pipeline ({exc})") from exc
    span = payload["position_span"]
    return DomainNetwork(model.eval(), payload["label_column"], list(payload["class_names"]),
                         tuple(span) if span is not None else None, payload.get("summary", {}))


@torch.no_grad()
def extract_domain_features(network: DomainNetwork | SliceCNN, images: np.ndarray,
                            batch_size: int = 256) -> np.ndarray:
    """Penultimate-layer features, (N, feature_dim) float64, of (N, H, W) images in [0, 1]."""
    model = network.model if isinstance(network, DomainNetwork) else network
    model.eval()
    parts = [model.features(x).double().numpy() for x in _batches(images, batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, model.config["feature_dim"]))


# ----------------------------------------------------------------- jobs


def domain_network_job(images: Path, table: Path, *, out_network: Path, out_summary: Path,
                       settings: Mapping[str, Any], threads: int | None = None) -> dict:
    """The ``domain_network`` rule: train, evaluate on both splits, save weights and a JSON summary."""
    import time

    from pipeline_lib.core.slices import SplitImages, grey_rows, image_channels, load_table, open_images
    from pipeline_lib.core.runtime import configure_threads

    configure_threads(threads)
    cfg = read_settings(DomainSettings, settings)
    frame = load_table(table)
    data = open_images(images)
    if len(data) != len(frame):
        raise InputError(f"{images} has {len(data)} images but {table} has {len(frame)} rows")
    # a stacked dataset is learnt as its channels' grey images (core.slices.grey_images), read
    # from disk as batches need them
    frame = grey_rows(frame, image_channels(data, frame) or 1)
    data = SplitImages(images, np.arange(len(data)), grey=True)
    started = time.monotonic()
    network = train_domain_network(data, frame, cfg, source=str(table))
    seconds = time.monotonic() - started
    network.summary = {
        "what": ("small CNN trained on the real training slices to predict slice position"
                 + (f" and '{network.label_column}'" if network.label_column else "")
                 + "; its penultimate layer is the domain feature space"),
        "settings": asdict(cfg),
        "label_column": network.label_column,
        "class_names": network.class_names,
        "position_span": list(network.position_span) if network.position_span else None,
        "feature_dim": cfg.feature_dim,
        "n_train": int((frame["split"] == "train").sum()),
        "train_seconds": round(seconds, 2),
        "train": evaluate_domain_network(network, data, frame, "train"),
        "test": evaluate_domain_network(network, data, frame, "test"),
    }
    save_domain_network(network, out_network)
    write_json(out_summary, network.summary)
    log.info("domain network trained in %.1f s; test: %s", seconds, network.summary["test"])
    return network.summary


def domain_metrics_job(network: Path, images: Path, table: Path, out: Path, *, settings: Mapping[str, Any],
                       samples: Path | None = None, threads: int | None = None) -> dict:
    """The ``domain_metrics`` rules: Fréchet distance and PRDC in the domain feature space.

    The reference set is the real TRAIN slices (a seeded subset of at most
    ``n_reference``). With ``samples`` given, that model's samples are
    compared with it; without, the real TEST slices are (the "original" row:
    what real unseen images score).
    """
    from pipeline_lib.core.slices import open_split
    from pipeline_lib.evaluation.distribution import prdc
    from pipeline_lib.evaluation.fid import frechet_distance_features
    from pipeline_lib.core.slices import load_checked_images as load_checked
    from pipeline_lib.core.runtime import configure_threads

    configure_threads(threads)
    cfg = read_settings(DomainSettings, settings)
    net = load_domain_network(network)
    reference, _ = open_split(images, table, "train", n=cfg.n_reference, seed=cfg.seed, grey=True)
    if samples is not None:
        candidates, kind = np.asarray(load_checked(samples, grey=True), dtype=np.float32), "model"
    else:
        candidates, _ = open_split(images, table, "test", grey=True)
        kind = "original"
    if candidates.shape[1:] != reference.shape[1:]:
        raise InputError(f"{samples}: image size {candidates.shape[1:]} differs from the slices' "
                         f"{reference.shape[1:]}")
    real = extract_domain_features(net, reference)
    fake = extract_domain_features(net, candidates)
    k = min(cfg.nearest_k, len(real) - 1, len(fake) - 1)
    if k < 1:
        raise InputError(f"domain PRDC needs at least 2 real and 2 compared images, got {len(real)} "
                         f"and {len(fake)}")
    scores = prdc(real, fake, nearest_k=k)
    result = {
        "kind": kind,
        "feature_space": "domain",
        "domain_fd": float(frechet_distance_features(fake, real)),
        **{f"domain_{key}": float(scores[key]) for key in ("precision", "recall", "density", "coverage")},
        "nearest_k": int(k),
        "n_samples": int(len(fake)),
        "n_reference": int(len(real)),
        "feature_dim": int(real.shape[1]),
        # Covariances from fewer images than dimensions make the Fréchet distance strongly biased.
        "few_images_warning": bool(min(len(real), len(fake)) < real.shape[1]),
    }
    write_json(out, result)
    return result


def _check_images(images: np.ndarray, what: str) -> np.ndarray:
    # arrays and splits on disk (core.slices.SplitImages) pass as they are: never read whole here
    images = images if hasattr(images, "shape") else np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise InputError(f"{what}: expected a non-empty (N, H, W) image stack, got shape {images.shape}")
    if images.shape[1] < 16 or images.shape[2] < 16:
        raise InputError(f"{what}: images of {images.shape[1]}×{images.shape[2]} pixels are too small "
                         "(at least 16×16)")
    return images


def _batches(images: np.ndarray, batch_size: int):
    for start in range(0, len(images), batch_size):
        # A copy: memory-mapped input is read-only, which torch warns about.
        block = np.array(images[start:start + batch_size], dtype=np.float32)
        yield torch.from_numpy(block).unsqueeze(1)
