"""The frozen network of XMC-GAN's image-image loss: weights from a file or the torch hub cache (random weights saved
to a temp file; nothing is downloaded), one-line errors naming the file, the input conversion, and frozen-ness."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F

from t2itool.errors import T2IError
from t2itool.models.xmcgan import image_features
from t2itool.models.xmcgan.config import XMCGANConfig
from t2itool.models.xmcgan.image_features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WEIGHT_FILES,
    FrozenImageFeatures,
    build_image_features,
)


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A random-weight torchvision ResNet-50 state dict (BN statistics made non-trivial), saved as a file."""
    torch.manual_seed(0)
    reference = FrozenImageFeatures("resnet50")
    with torch.no_grad():
        for module in reference.net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "my-resnet50.pth"
    torch.save(reference.net.state_dict(), path)
    return path, reference


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_weights_load_from_a_file_and_features_follow_the_documented_conversion(resnet_file) -> None:
    path, reference = resnet_file
    network = build_image_features("resnet50", path, allow_download=False)
    assert network.feature_dim == 1000
    for key, value in reference.net.state_dict().items():
        assert torch.equal(network.net.state_dict()[key], value), key
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    by_hand = F.interpolate((images + 1) / 2, size=(224, 224), mode="bilinear", align_corners=False)
    by_hand = (by_hand - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(network(images), reference.net.eval()(by_hand), rtol=1e-4, atol=1e-4)
        # Larger images are shrunk with antialiasing (jax.image.resize antialiases when down-sampling).
        large = torch.rand(1, 3, 256, 256) * 2 - 1
        shrunk = F.interpolate((large + 1) / 2, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        torch.testing.assert_close(network.preprocess(large), (shrunk - mean) / std)


def test_weights_load_from_the_torch_hub_cache(resnet_file, empty_hub) -> None:
    path, reference = resnet_file
    cached = empty_hub / "checkpoints" / WEIGHT_FILES["resnet50"]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    network = build_image_features("resnet50", None, allow_download=False)
    key = "fc.weight"
    assert torch.equal(network.net.state_dict()[key], reference.net.state_dict()[key])


def test_missing_weights_offline_give_one_line_naming_the_file_and_where_to_put_it(empty_hub, monkeypatch) -> None:
    with pytest.raises(T2IError) as error:
        build_image_features("resnet50", None, allow_download=False)
    message = str(error.value)
    assert "\n" not in message
    assert "resnet50-0676ba61.pth" in message and str(empty_hub / "checkpoints") in message
    assert "image_encoder=none" in message

    # Allowed to download but offline: the same advice, not a traceback.
    from torchvision.models import VGG19_Weights

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(VGG19_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(T2IError, match="cannot download the vgg19 weights.*vgg19-dcbb9e9d.pth"):
        build_image_features("vgg19", None, allow_download=True)

    with pytest.raises(T2IError, match=r"image_encoder_weights .*nowhere\.pth: no such file"):
        build_image_features("resnet50", empty_hub / "nowhere.pth")


def test_a_wrong_file_is_refused_with_the_key_at_fault(tmp_path, resnet_file) -> None:
    path, reference = resnet_file
    state = dict(reference.net.state_dict())
    state["fc.weight"] = torch.zeros(10, 2048)
    wrong_shape = tmp_path / "wrong.pth"
    torch.save(state, wrong_shape)
    with pytest.raises(T2IError, match=r"fc.weight has shape \(10, 2048\), torchvision resnet50 has \(1000, 2048\)"):
        build_image_features("resnet50", wrong_shape)
    # A ResNet-50 file offered as VGG-19: the first missing key is named.
    with pytest.raises(T2IError, match="not a torchvision vgg19 state dict .* keys missing, e.g. classifier.0.bias"):
        build_image_features("vgg19", path)
    # A DataParallel prefix is tolerated.
    prefixed = tmp_path / "prefixed.pth"
    torch.save({f"module.{k}": v for k, v in reference.net.state_dict().items()}, prefixed)
    assert build_image_features("resnet50", prefixed).feature_dim == 1000


def test_none_builds_nothing_and_the_config_only_accepts_known_networks() -> None:
    assert build_image_features("none") is None
    with pytest.raises(T2IError, match="image_encoder='resnet18'"):
        build_image_features("resnet18")
    with pytest.raises(ValueError, match="image_encoder='resnet18': expected one of resnet50, vgg19, none"):
        XMCGANConfig(image_encoder="resnet18")


def test_the_network_is_frozen_but_passes_gradients_to_the_images(resnet_file) -> None:
    path, _ = resnet_file
    network = build_image_features("resnet50", path)
    network.train()
    assert not network.training and not any(m.training for m in network.modules())
    assert not any(p.requires_grad for p in network.parameters())
    images = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    before = {k: v.clone() for k, v in network.state_dict().items() if "running" in k}
    network(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(torch.equal(network.state_dict()[k], v) for k, v in before.items())  # no BN statistics update


@pytest.mark.slow
def test_vgg19_features_are_fc7_after_relu(tmp_path) -> None:
    # 143 M parameters: a 550 MB temp file, hence slow.
    torch.manual_seed(0)
    reference = FrozenImageFeatures("vgg19")
    path = tmp_path / "vgg.pth"
    torch.save(reference.net.state_dict(), path)
    network = build_image_features("vgg19", path)
    assert network.feature_dim == 4096
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        features = network(images)
        x = torch.flatten(reference.net.avgpool(reference.net.features(network.preprocess(images))), 1)
        vgg = reference.net.classifier
        fc7 = torch.relu(vgg[3](torch.relu(vgg[0](x))))
    assert features.shape == (1, 4096) and (features >= 0).all()
    torch.testing.assert_close(features, fc7, rtol=1e-4, atol=1e-4)
    assert image_features.FEATURE_DIMS["vgg19"] == 4096
