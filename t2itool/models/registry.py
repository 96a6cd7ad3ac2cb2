"""The model registry: each GAN package registers one `ModelSpec`; `train`, `models` and `sample` look models up here.

A spec says how to build the networks from a config dataclass, what the paper presets are, how one training step
runs (`GANRecipe`), and how the generator turns noise and text into images (used by the sampler and sample grids).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from t2itool.encoders.features import TextFeatures
from t2itool.errors import T2IError


@dataclass
class GeneratorOutput:
    """What a generator produces for one batch.

    images: images per resolution, smallest first; the last one is the final image, (B, 3, H, W) in [-1, 1].
    maps:   the model's own visualisable maps, e.g. {"mask": [(B,1,4,4), ..., (B,1,256,256)]} for SSA-GAN,
            {"attention": [...]} for AttnGAN-family models; empty when the model has none.
    """

    images: list[torch.Tensor]
    maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    @property
    def image(self) -> torch.Tensor:
        return self.images[-1]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the rest of t2itool needs to know about one GAN.

    name:          CLI name (`t2itool train NAME`), lower-case with dashes.
    summary:       one line for `t2itool models`.
    paper:         citation (authors, venue, year).
    config_cls:    a dataclass; every field has a default and `metadata={"help": ...}`.
    presets:       named overrides of config fields, at least "birds" and "coco" (paper settings).
    recipe_cls:    the class the training loop drives (see t2itool.training); built as recipe_cls(config).
    build_generator: config -> generator nn.Module (used alone by the sampler).
    generate:      (generator, noise, text features) -> GeneratorOutput.
    noise_dim:     config -> length of the noise vector per image.
    default_truncation: config -> truncation used for sampling by default (None = plain N(0, I)).
    train_presets: per preset, the paper's training-loop settings (e.g. {"batch_size": 32, "epochs": 1301});
                   `t2itool train --preset` applies them unless the flags or the TOML file say otherwise.
    """

    name: str
    summary: str
    paper: str
    config_cls: type
    presets: Mapping[str, Mapping[str, Any]]
    recipe_cls: type
    build_generator: Callable[[Any], torch.nn.Module]
    generate: Callable[[torch.nn.Module, torch.Tensor, TextFeatures], GeneratorOutput]
    noise_dim: Callable[[Any], int]
    default_truncation: Callable[[Any], float | None]
    train_presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def make_config(self, preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
        """Build the config: defaults, then the preset, then `overrides` (already typed values)."""
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in self.presets:
                raise T2IError(f"--preset {preset!r}: {self.name} has presets {', '.join(sorted(self.presets))}")
            values.update(self.presets[preset])
        if overrides:
            values.update(overrides)
        valid = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise T2IError(f"{self.name} has no config key {unknown[0]!r}; valid keys: {', '.join(sorted(valid))}")
        return self.config_cls(**values)


_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model; names are unique and the config must be a dataclass with presets for birds and coco."""
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    if not dataclasses.is_dataclass(spec.config_cls):
        raise TypeError(f"{spec.name}: config_cls must be a dataclass")
    missing = {"birds", "coco"} - set(spec.presets)
    if missing:
        raise ValueError(f"{spec.name}: presets missing {sorted(missing)}")
    _MODELS[spec.name] = spec
    return spec


def _load_builtin_models() -> None:
    # Importing t2itool.models imports every model package, each of which calls register_model.
    import t2itool.models  # noqa: F401


def list_models() -> list[str]:
    _load_builtin_models()
    return sorted(_MODELS)


def get_model(name: str) -> ModelSpec:
    _load_builtin_models()
    if name not in _MODELS:
        raise T2IError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]
