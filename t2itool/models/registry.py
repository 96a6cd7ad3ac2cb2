"""The model registry: each GAN package registers one `ModelSpec`; `train`, `models` and `sample` look models up here.

A spec says how to build the networks from a config dataclass, what the paper presets are, how one training step
runs (`GANRecipe`), which noise streams the generator takes and how it turns noise and text into images (used by the
sampler and sample grids). Importing `t2itool.models` registers the built-in models; a researcher's own models
register from their modules, named in the T2ITOOL_PLUGINS environment variable (comma-separated module names),
which every process imports before looking a model up.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from t2itool.encoders.features import TextFeatures
from t2itool.errors import T2IError
from t2itool.models.recipe import GANRecipe, ModelConfig
from t2itool.noise import NoiseStream

PLUGINS_ENV = "T2ITOOL_PLUGINS"


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
    config_cls:    a `ModelConfig` subclass (t2itool/models/recipe.py); every field declared with `param(...)`.
    presets:       named overrides of config fields, at least "birds" (paper settings; "coco" where the paper has it).
    recipe_cls:    the `GANRecipe` subclass the training loop drives; built as recipe_cls(config).
    build_generator: config -> generator nn.Module (used alone by the sampler).
    generate:      (generator, noise {stream name: (B, dim)}, text features) -> GeneratorOutput.
    noise:         config -> the generator's noise streams (t2itool/noise.py), e.g. [z 100, ca 100 untruncated].
    default_truncation: config -> truncation used for sampling by default (None = plain N(0, I)).
    train_presets: per preset, the paper's training-loop settings (e.g. {"global_batch": 32, "epochs": 1300}; the
        global batch is split over the processes, a "batch_size" key is per process);
                   `t2itool train --preset` applies them unless the flags or the TOML file say otherwise.
    notes:         lines shown by `t2itool models NAME`: deviations from the paper or its code, values the paper
                   leaves open, and what t2itool chose.
    """

    name: str
    summary: str
    paper: str
    config_cls: type
    presets: Mapping[str, Mapping[str, Any]]
    recipe_cls: type
    build_generator: Callable[[Any], torch.nn.Module]
    generate: Callable[[torch.nn.Module, dict[str, torch.Tensor], TextFeatures], GeneratorOutput]
    noise: Callable[[Any], Sequence[NoiseStream]]
    default_truncation: Callable[[Any], float | None]
    train_presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def noise_streams(self, config: Any) -> list[NoiseStream]:
        streams = list(self.noise(config))
        names = [s.name for s in streams]
        if not streams or len(set(names)) != len(names):
            raise ValueError(f"{self.name}: noise streams must be non-empty with unique names, got {names}")
        return streams

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
        try:
            return self.config_cls(**values)
        except (TypeError, ValueError) as exc:
            raise T2IError(f"{self.name} config: {exc}") from None


_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model: a unique name, a ModelConfig subclass, and a "birds" preset (other presets optional)."""
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    if not (dataclasses.is_dataclass(spec.config_cls) and issubclass(spec.config_cls, ModelConfig)):
        raise TypeError(f"{spec.name}: config_cls must be a dataclass subclassing t2itool.models.recipe.ModelConfig")
    if not issubclass(spec.recipe_cls, GANRecipe):
        raise TypeError(f"{spec.name}: recipe_cls must subclass t2itool.models.recipe.GANRecipe")
    if "birds" not in spec.presets:
        raise ValueError(f"{spec.name}: needs a 'birds' preset")
    _MODELS[spec.name] = spec
    return spec


def load_plugins() -> None:
    """Import the modules named in T2ITOOL_PLUGINS (each registers its models), once per process."""
    for module in [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]:
        if module in _LOADED_PLUGINS:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise T2IError(f"{PLUGINS_ENV}: cannot import model plugin {module!r} ({exc})") from None
        _LOADED_PLUGINS.add(module)


_LOADED_PLUGINS: set[str] = set()


def list_models() -> list[str]:
    load_plugins()
    return sorted(_MODELS)


def get_model(name: str) -> ModelSpec:
    load_plugins()
    if name not in _MODELS:
        raise T2IError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]
