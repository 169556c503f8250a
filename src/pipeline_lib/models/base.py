"""The interface every generative-model family implements.

A family is one module under ``pipeline_lib.models`` that defines a subclass of
:class:`GenerativeModel` and exposes it as ``MODEL``. The trainer, the sampler
and the workflow rules only talk to this interface, so adding a family means
writing one module and one config block.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.families.hparams.fields import as_dict, choices_of, defaults, from_defaults, resolve


#: Mixed-precision names and their autocast dtypes.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Devices whose fused Adam kernel torch provides (others get the default implementation).
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def image_batch(images: np.ndarray) -> torch.Tensor:
    """A dataset's images as the network's (N, C, H, W) float32 tensor: grey (N, H, W) images get
    C = 1, a stacked dataset's (N, C, H, W) images keep their channels, and a volume dataset's
    (N, C, X, Y, Z) volumes (core/volumes.py) pass as they are."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim not in (4, 5):
        raise InputError(f"expected images shaped (N, H, W) or (N, C, H, W), or volumes (N, C, X, Y, Z), "
                         f"got {tuple(x.shape)}")
    return x


def condition_tensor(values) -> torch.Tensor:
    """Training conditions as the models take them: class indices as int64, continuous covariates
    (N, K) as float32. A copy: pandas may hand over a read-only array, which torch warns about."""
    values = np.asarray(values)
    return torch.as_tensor(np.array(values, dtype=np.float32 if values.dtype.kind == "f" else np.int64))


def batch_images(x: torch.Tensor) -> np.ndarray:
    """The network's (N, C, H, W) output as the dataset's images, float32 clamped to [0, 1]:
    (N, H, W) for one channel (as grey datasets are stored), (N, C, H, W) otherwise; volumes
    (N, C, X, Y, Z) keep their channel axis, as volume datasets store them."""
    x = x.detach().float().clamp(0, 1).cpu()
    return (x[:, 0] if x.ndim == 4 and x.shape[1] == 1 else x).numpy().astype(np.float32)


class GenerativeModel(nn.Module):
    """Base class: owns networks, optimisers and mixed-precision state.

    Subclasses set ``family`` and ``HYPERPARAMETERS`` (a frozen dataclass of the published
    hyperparameters, ``models/families/hparams/``), build their networks in ``__init__`` reading
    ``self.hp`` and implement :meth:`training_step` and :meth:`sample`; models that can encode images
    also implement :meth:`reconstruct` and set ``can_reconstruct``.
    """

    family: ClassVar[str] = ""
    conditional: ClassVar[bool] = False
    can_reconstruct: ClassVar[bool] = False
    #: The family's hyperparameters: every key a config block may set, its type, published value and doc.
    HYPERPARAMETERS: ClassVar[type | None] = None
    #: key -> published value, in declaration order (derived from ``HYPERPARAMETERS``).
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: key -> allowed values, for keys with a fixed set (derived from ``HYPERPARAMETERS``).
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {}
    #: Networks whose weights the trainer averages when ``ema_decay`` is set (those sampling uses).
    EMA_MODULES: ClassVar[tuple[str, ...]] = ()
    #: 2: the family learns images (N, C, S, S); 3: volumes (N, C, S, S, S) of a volume dataset.
    spatial_dims: ClassVar[int] = 2
    #: Whether the family can condition on continuous covariates (``condition_on_covariates``).
    takes_covariates: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """``DEFAULTS`` and ``CHOICES`` from the declaration; a family that sets a ``DEFAULTS`` mapping
        (and ``CHOICES``) instead, as families written before declarations did, gets one made from it."""
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "DEFAULTS" in own and "HYPERPARAMETERS" not in own:
            cls.HYPERPARAMETERS = from_defaults(f"{cls.__name__}Hyperparameters", own["DEFAULTS"],
                                                own.get("CHOICES", {}))
        if cls.HYPERPARAMETERS is not None:
            cls.DEFAULTS = defaults(cls.HYPERPARAMETERS)
            cls.CHOICES = choices_of(cls.HYPERPARAMETERS)

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, n_covariates: int = 0,
                 **hparams: Any):
        super().__init__()
        if image_size < 16 or image_size & (image_size - 1):
            raise InputError(f"{self.family}: image_size must be a power of two >= 16, got {image_size}")
        if n_covariates and not self.takes_covariates:
            raise InputError(f"model family '{self.family}' cannot condition on covariates "
                             f"(condition_on_covariates); families that can: ldm3d, ddpm3d")
        self.image_size = image_size
        self.channels = channels
        self.n_classes = n_classes
        self.n_covariates = int(n_covariates)
        self.hp = self.resolve_hparams(hparams)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.use_amp = False
        self.deferred_losses = False
        self.amp_dtype: torch.dtype | None = None
        self.scaler: torch.amp.GradScaler | None = None

    @classmethod
    def resolve_hparams(cls, given: dict[str, Any]):
        """The family's declaration with its published values overridden by ``given``; unknown keys
        (a sub-block's included) and values outside a key's choices are errors."""
        if cls.HYPERPARAMETERS is None:
            raise InputError(f"model family '{cls.family}' declares no HYPERPARAMETERS")
        return resolve(cls.HYPERPARAMETERS, given, f"models.<{cls.family} model>")

    @property
    def hparams(self) -> dict[str, Any]:
        """The resolved hyperparameters as a mapping (a sub-block as a mapping): what summaries,
        weights files and exported models record, and what rebuilds the model."""
        return as_dict(self.hp)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- training -----------------------------------------------------------
    def configure_optimizers(self) -> None:
        """Create ``self.optimizers`` (called once, after the model is on its device)."""
        raise NotImplementedError

    def adam(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        """Adam with torch's fused kernel on the CPU and CUDA: one pass over each parameter per step
        instead of about ten element-wise ones, with the same update rule. It matters most where
        the optimiser dominates a step, e.g. the fully connected cvae (bench/README.md)."""
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=self.device.type in FUSED_ADAM_DEVICES)

    def enable_mixed_precision(self, precision: str | bool | None, on_cpu: bool = False) -> None:
        """Autocast to ``precision`` (``bf16``, ``fp16``; true = fp16, false/None = float32) on CUDA, and
        on the CPU only with ``on_cpu`` (bf16: the CPU has no fp16 autocast). fp16 scales the
        gradients (its range is too narrow for small gradients); bf16 has float32's range and
        needs no scaler. Elsewhere a no-op, so a GPU setting does not change CPU results."""
        precision = "fp16" if precision is True else (precision or None)
        if precision not in (None, *AUTOCAST_DTYPES):
            raise InputError(f"mixed precision must be one of {', '.join(AUTOCAST_DTYPES)}, got {precision!r}")
        device = self.device.type
        applies = precision is not None and (device == "cuda" or (device == "cpu" and on_cpu))
        if applies and device == "cpu" and precision != "bf16":
            raise InputError(f"mixed precision on the CPU is bf16 only, got {precision}")
        self.use_amp = applies
        self.amp_dtype = AUTOCAST_DTYPES[precision] if applies else None
        self.scaler = torch.amp.GradScaler("cuda") if applies and precision == "fp16" else None

    def autocast(self):
        if self.use_amp:
            return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
        return nullcontext()

    def optimise(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, **backward_kwargs) -> None:
        """Backward pass and optimiser step, through the gradient scaler under AMP."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward(**backward_kwargs)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward(**backward_kwargs)
            optimizer.step()

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float | torch.Tensor]:
        """One optimisation step on a batch (N, C, H, W) in [0, 1]; returns named losses, through
        :meth:`loss_values`."""
        raise NotImplementedError

    def loss_values(self, losses: dict[str, torch.Tensor | float]) -> dict[str, torch.Tensor | float]:
        """A training step's losses as the step returns them: Python floats, or, when the trainer
        set ``deferred_losses``, detached tensors left on the device, which the trainer reads back
        when it writes a row (reading a value from a GPU waits for every queued kernel)."""
        if self.deferred_losses:
            return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in losses.items()}
        return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in losses.items()}

    def ema_modules(self) -> tuple[str, ...]:
        """The networks to average now (a family that trains them in stages may change the answer)."""
        return self.EMA_MODULES

    def check_budget(self, steps: int | None) -> None:
        """Called by the trainer before the first step with the run's total steps (``budget.steps``, or
        ``budget.epochs`` converted); a family whose training has stages raises InputError when the
        budget cannot reach them."""

    def schedule_position(self, step: int, total_steps: int | None) -> tuple[int, int | None]:
        """(1-based step within the current training stage, that stage's number of steps): what the
        learning-rate schedule counts. One stage by default; a family that trains in stages starts
        each stage's warm-up and cosine afresh (each stage has optimisers of its own)."""
        return step, total_steps

    @property
    def has_validation_loss(self) -> bool:
        return type(self).validation_losses is not GenerativeModel.validation_losses

    def validation_losses(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """The training objective's terms on held-out images, without an update (eval mode)."""
        raise NotImplementedError(f"family '{self.family}' has no validation loss")

    # -- inference ----------------------------------------------------------
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` new images (n, C, H, W) in [0, 1]."""
        raise NotImplementedError

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"family '{self.family}' cannot reconstruct images")

    def snapshot(self, n: int, labels: torch.Tensor | None, generator: torch.Generator,
                 reference: torch.Tensor | None) -> tuple[str, torch.Tensor]:
        """What a training snapshot shows: ``("samples", n samples)`` (``reference`` holds held-out
        images for families whose early stages can only reconstruct)."""
        return "samples", self.sample(n, labels=labels, generator=generator)

    # -- checkpoints --------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, optimisers, scaler."""
        return {
            "model": self.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
