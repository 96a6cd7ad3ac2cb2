"""The frozen ImageNet network of XMC-GAN's image-image contrastive loss on pretrained features: torchvision ResNet-50
logits (what the code uses) or VGG-19 fc7 features (the paper's VGG), its weight file, and the input conversion.

The code (google-research/xmcgan_image_generation xmcgan/utils/pretrained_model_utils.py, xmcgan/xmc_gan.py) feeds
its images in [0, 1], bilinearly resized to 224 x 224 and not mean/std-normalised, to a Flax ResNet-50 of its own
(weights `resnet_pretrained.npy`, never a torchvision file) and takes the 1000 logits. torchvision's weights were
trained on ImageNet-normalised inputs, so here images in [-1, 1] go to [0, 1], are resized bilinearly to 224 (with
antialiasing when shrinking, as jax.image.resize) and then normalised with the ImageNet mean and std.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.errors import T2IError

INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's ImageNet weight files (IMAGENET1K_V1) looked up in the torch hub cache; any state dict of the same
# architecture (e.g. ResNet-50 IMAGENET1K_V2, resnet50-11ad3fa6.pth) loads from a file given explicitly.
WEIGHT_FILES = {"resnet50": "resnet50-0676ba61.pth", "vgg19": "vgg19-dcbb9e9d.pth"}
FEATURE_DIMS = {"resnet50": 1000, "vgg19": 4096}


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _torchvision_network(name: str) -> nn.Module:
    from torchvision.models import resnet50, vgg19

    return resnet50(weights=None) if name == "resnet50" else vgg19(weights=None)


class FrozenImageFeatures(nn.Module):
    """images (B, 3, H, W) in [-1, 1] -> features (B, 1000) ResNet-50 logits or (B, 4096) VGG-19 fc7.

    VGG-19's fc7 (the second 4096-d fully connected layer, after its ReLU; dropout off) is the network's last
    layer before the class logits: a global descriptor of the whole image, which an image-level contrastive loss
    needs, where conv feature maps (perceptual losses) describe local texture. The paper names VGG without a layer.
    Parameters never train and the network stays in eval mode; gradients still flow to the input images (G).
    """

    def __init__(self, name: str, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """`state_dict`: torchvision weights of `name` (checked by `check_state_dict`); None: torchvision's random
        init (tests)."""
        super().__init__()
        if name not in WEIGHT_FILES:
            raise ValueError(f"image encoder {name!r}: choose {', '.join(WEIGHT_FILES)}")
        self.name = name
        self.feature_dim = FEATURE_DIMS[name]
        if state_dict is None:
            self.net = _torchvision_network(name)
        else:
            with torch.device("meta"):  # no random init of weights that are replaced at once
                self.net = _torchvision_network(name)
            self.net.load_state_dict(state_dict, assign=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenImageFeatures:
        return super().train(False)  # frozen, batch-norm statistics included, whatever the caller asks

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() + 1.0) / 2.0
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            shrink = x.shape[-1] > INPUT_SIZE or x.shape[-2] > INPUT_SIZE
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=shrink)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dim() == 4 and images.shape[1] == 3, f"images {tuple(images.shape)}"
        x = self.preprocess(images)
        if self.name == "resnet50":
            return self.net(x)
        vgg = self.net
        x = torch.flatten(vgg.avgpool(vgg.features(x)), 1)
        return vgg.classifier[:5](x)  # fc6 -> ReLU -> dropout (off) -> fc7 -> ReLU


def resolve_weights(name: str, weights: str | Path | None, allow_download: bool = True) -> tuple[dict, str]:
    """The state dict of network `name` and where it came from: the file `weights` if given, else torchvision's file
    in the torch hub cache, else (when `allow_download`) torchvision's download into that cache. Anything missing or
    unreadable ends in one T2IError naming the file and where to put it."""
    from t2itool.fileio import load_checkpoint

    file_name = WEIGHT_FILES[name]
    where = (
        f"put torchvision's {file_name} in {hub_checkpoint_dir()}/ ($TORCH_HOME/hub/checkpoints/) or pass "
        f"--set image_encoder_weights=PATH (or image_encoder=none to train without this loss)"
    )
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise T2IError(f"image_encoder_weights {path}: no such file; {where}")
        return load_checkpoint(path, f"{name} state dict"), str(path)
    cached = hub_checkpoint_dir() / file_name
    if cached.is_file():
        return load_checkpoint(cached, f"{name} state dict"), str(cached)
    if not allow_download:
        raise T2IError(f"the {name} weights {file_name} are needed for the image-image loss: {where}")
    from torchvision.models import ResNet50_Weights, VGG19_Weights

    entry = ResNet50_Weights.IMAGENET1K_V1 if name == "resnet50" else VGG19_Weights.IMAGENET1K_V1
    try:
        return entry.get_state_dict(progress=False), entry.url
    except Exception as exc:  # offline, proxy, certificate...: the message says what to do instead
        raise T2IError(f"cannot download the {name} weights ({type(exc).__name__}); {where}") from exc


def build_image_features(
    name: str, weights: str | Path | None = None, allow_download: bool = True
) -> FrozenImageFeatures | None:
    """The frozen network for `image_encoder` (None for 'none'), weights loaded as `resolve_weights` finds them."""
    if name == "none":
        return None
    if name not in WEIGHT_FILES:
        raise T2IError(f"image_encoder={name!r}: choose one of {', '.join(WEIGHT_FILES)}, none")
    state, source = resolve_weights(name, weights, allow_download)
    return FrozenImageFeatures(name, check_state_dict(name, state, source))


def check_state_dict(name: str, state: dict, source: str) -> dict[str, torch.Tensor]:
    """The torchvision `name` state dict in `state` (a DataParallel `module.` prefix removed), or one T2IError naming
    `source` and the first missing key or wrong shape."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    with torch.device("meta"):
        expected = _torchvision_network(name).state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise T2IError(
            f"{source}: not a torchvision {name} state dict ({len(missing)} keys missing, e.g. {missing[0]})"
        )
    for key, target in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != target.shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise T2IError(f"{source}: {key} has shape {found}, torchvision {name} has {tuple(target.shape)}")
    return {key: state[key] for key in expected}
