"""What the trainer records about a run besides its losses: validation losses and sample snapshots.

* Validation loss (``validate_every``): the family's objective on a fixed,
  seeded subset of the test split, without an update (Ballesteros Ramirez's
  Figure 3 plots train and test curves). Families that have no such loss
  (the GANs: their losses measure one network against the other) say so with
  ``validation_losses() -> None`` and the trainer rejects the key for them.
* Snapshots (``snapshot_every``): ``snapshot_images`` images drawn with the
  same latents every time (a fixed seed), from the weights samples will be
  drawn with (the averaged ones when the run keeps an EMA), kept for a strip
  in the report that shows how samples evolve.
* Cheap FID (``fid_every``): ``fid_images`` samples (fixed latents, sampling
  weights) against a fixed seeded subset of as many training slices, with the
  FID Inception (offline weights, as the evaluation stage) and its Fréchet
  distance (``core/inception.py``); a column ``fid`` of the validation table.
  Few images bias FID upwards, so it is for watching a trend, not for
  comparing with the evaluation stage's FID. The Inception forward pass at 299
  px is costly on a CPU: off by default.

Both run inside ``torch.random.fork_rng`` with their own seed: they see the
same noise at every call, which makes the curve comparable from point to
point, and they leave the training random stream untouched, so a run with
monitoring trains exactly as one without and resumes exactly.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import atomic_path
from pipeline_lib.core.slices import grey_images
from pipeline_lib.models.base import batch_images, condition_tensor, image_batch
from pipeline_lib.models.progress import write_rows_csv

#: Offsets of the monitor's seeds from the model's seed (any fixed values would do).
VALIDATION_SEED, SNAPSHOT_SEED, FID_SEED = 1_000_003, 2_000_003, 3_000_003


@contextmanager
def isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for the block and restore the training stream after it."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class TrainingMonitor:
    """Validation rows and snapshots of one run; part of the checkpoint."""

    def __init__(self, *, seed: int, validate_every: int | None, snapshot_every: int | None,
                 snapshot_images: int, validation: tuple[np.ndarray, np.ndarray | None] | None,
                 validation_images: int | None, n_classes: int, conditional: bool,
                 batch_size: int = 64, fid_every: int | None = None, fid_images: int = 256,
                 fid_reference: np.ndarray | None = None):
        self.seed, self.validate_every, self.snapshot_every = seed, validate_every, snapshot_every
        self.n_snapshot, self.n_classes, self.conditional = snapshot_images, n_classes, conditional
        self.batch_size = batch_size
        self.validation_rows: list[dict[str, float]] = []
        self.snapshots: list[tuple[int, str, np.ndarray]] = []
        self.images, self.labels = self._subset(validation, validation_images)
        self.fid_every = fid_every
        self.fid = CheapFid(fid_reference, fid_images, seed) if fid_every else None

    def _subset(self, validation, limit):
        if validation is None or validation[0] is None or len(validation[0]) == 0:
            if self.validate_every:
                raise InputError("validate_every is set but there are no test slices to validate on")
            return None, None
        images, labels = validation
        rows = np.arange(len(images))
        if limit is not None and len(images) > limit:
            rows = np.sort(np.random.default_rng(self.seed).choice(len(images), limit, replace=False))
        x = image_batch(images[rows])
        y = condition_tensor(np.asarray(labels)[rows]) if labels is not None else None
        return x, y

    @staticmethod
    def check_supported(model, validate_every: int | None) -> None:
        if validate_every and not model.has_validation_loss:
            raise InputError(f"validate_every: family '{model.family}' has no validation loss "
                             "(its losses pit networks against each other); leave validate_every null")

    # -- per step -------------------------------------------------------------------------------
    def after_step(self, step: int, model, average=None, final: bool = False) -> dict[str, float] | None:
        """Validate and snapshot when due (always at the final step when enabled); returns the
        validation row written now, if any."""
        row = None
        validate = bool(self.validate_every) and (step % self.validate_every == 0 or final)
        fid = bool(self.fid_every) and (step % self.fid_every == 0 or final)
        if (validate or fid) and (not self.validation_rows or self.validation_rows[-1]["step"] != step):
            row = {"step": step, **(self.validation_loss(model) if validate else {})}
            if fid:
                row["fid"] = self.fid.score(model, average, self._snapshot_labels(self.fid.n, model))
            self.validation_rows.append(row)
        if self.snapshot_every and (step % self.snapshot_every == 0 or final):
            if not self.snapshots or self.snapshots[-1][0] != step:
                kind, images = self.snapshot(model, average)
                self.snapshots.append((step, kind, images))
        return row

    def resume_at(self, step: int) -> None:
        """Drop the rows and snapshots a run stopped by its minutes cap took at ``step`` only because
        it stopped there: the resumed run goes on, and an uninterrupted run has none at that step."""
        def scheduled(every: int | None) -> bool:
            return bool(every) and step % every == 0

        if not (scheduled(self.validate_every) or scheduled(self.fid_every)):
            self.validation_rows = [row for row in self.validation_rows if row["step"] != step]
        if not scheduled(self.snapshot_every):
            self.snapshots = [snap for snap in self.snapshots if snap[0] != step]

    @torch.no_grad()
    def validation_loss(self, model) -> dict[str, float]:
        """Mean of the family's validation losses over the fixed subset, in batches."""
        totals: dict[str, float] = {}
        n = len(self.images)
        with isolated_rng(self.seed + VALIDATION_SEED, model.device):
            for start in range(0, n, self.batch_size):
                x = self.images[start:start + self.batch_size].to(model.device)
                y = None if self.labels is None else self.labels[start:start + self.batch_size].to(model.device)
                losses = model.validation_losses(x, y)
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * len(x)
        return {key: value / n for key, value in totals.items()}

    def _snapshot_labels(self, n: int, model) -> torch.Tensor | None:
        """Classes 0, 1, ... in turn for a conditional model, covariates from the lowest to the
        highest of the training range (0 to 1 scaled) for a covariate-conditional one, else None."""
        if model.n_covariates:
            return torch.linspace(0.0, 1.0, n)[:, None].expand(n, model.n_covariates).contiguous().to(model.device)
        if self.conditional and self.n_classes:
            return (torch.arange(n) % self.n_classes).to(model.device)
        return None

    @torch.no_grad()
    def snapshot(self, model, average=None) -> tuple[str, np.ndarray]:
        labels = self._snapshot_labels(self.n_snapshot, model)
        reference = self.images[:self.n_snapshot] if self.images is not None else None
        applied = average.applied(model) if average is not None else nullcontext()
        with isolated_rng(self.seed + SNAPSHOT_SEED, model.device), applied:
            gen = torch.Generator().manual_seed(self.seed + SNAPSHOT_SEED)
            kind, images = model.snapshot(self.n_snapshot, labels, gen,
                                          None if reference is None else reference.to(model.device))
        # a stacked model's snapshot shows each image's channels as grey images, side by side
        return kind, grey_images(batch_images(images))

    # -- checkpoints and outputs ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # snapshots as tensors: checkpoints are loaded with weights_only, which refuses numpy arrays
        return {"validation_rows": self.validation_rows,
                "snapshots": [(s, k, torch.from_numpy(a.copy())) for s, k, a in self.snapshots]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.validation_rows = list(state["validation_rows"])
        self.snapshots = [(int(s), str(k), a.cpu().numpy()) for s, k, a in state["snapshots"]]

    def write(self, validation_csv: Path | None, snapshots_npz: Path | None) -> None:
        if validation_csv is not None:
            write_rows_csv(validation_csv, self.validation_rows)
        if snapshots_npz is not None:
            write_snapshots(snapshots_npz, self.snapshots)


class CheapFid:
    """FID of ``n`` samples against a fixed seeded subset of ``n`` training slices, during training."""

    def __init__(self, reference: np.ndarray | None, n: int, seed: int):
        if reference is None or len(reference) < 2:
            raise InputError("fid_every is set but there are fewer than 2 training slices to compare with")
        rows = np.arange(len(reference))
        if len(reference) > n:
            rows = np.sort(np.random.default_rng(seed).choice(len(reference), n, replace=False))
        # FID compares grey images: a stacked dataset's channels are pooled (core.slices.grey_images)
        self.reference = np.ascontiguousarray(grey_images(reference[rows]), dtype=np.float32)
        self.n, self.seed = len(rows), seed  # images to sample (each gives C grey images)
        self.net, self.real_features = None, None

    def _network(self, device: torch.device):
        if self.net is None:
            from pipeline_lib.core.inception import load_feature_network
            from pipeline_lib.core.pretrained import default_fid_cache, fid_inception_weights

            self.net = load_feature_network(fid_inception_weights(default_fid_cache()), device=str(device))
        return self.net

    @torch.no_grad()
    def score(self, model, average=None, labels: torch.Tensor | None = None) -> float:
        from pipeline_lib.core.inception import extract_features, frechet_distance_features

        # Building the network draws its layers' initial weights from torch's generator (the file's
        # weights replace them): kept off the training stream, as the samples are.
        with isolated_rng(self.seed + FID_SEED, model.device):
            net = self._network(model.device)
            if self.real_features is None:
                self.real_features = extract_features(self.reference, net, what="training slices")
        applied = average.applied(model) if average is not None else nullcontext()
        with isolated_rng(self.seed + FID_SEED, model.device), applied:
            gen = torch.Generator().manual_seed(self.seed + FID_SEED)
            samples = torch.cat([model.sample(len(chunk), labels=None if labels is None else labels[chunk],
                                              generator=gen).float().cpu()
                                 for chunk in torch.arange(self.n).split(64)])
        fake = grey_images(batch_images(samples))
        return frechet_distance_features(extract_features(fake, net, what="samples"), self.real_features)


def write_snapshots(path: Path, snapshots: list[tuple[int, str, np.ndarray]]) -> None:
    """``steps`` (K,), ``kinds`` (K,) and ``images`` (K, n, H, W) in [0, 1]; K = 0 when snapshots were off."""
    if snapshots:
        steps = np.array([s for s, _, _ in snapshots], dtype=np.int64)
        kinds = np.array([k for _, k, _ in snapshots])
        images = np.stack([a for _, _, a in snapshots]).astype(np.float32)
    else:
        steps, kinds, images = np.zeros(0, np.int64), np.array([], dtype="<U1"), np.zeros((0, 0, 0, 0), np.float32)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, steps=steps, kinds=kinds, images=images)
