"""Checks a training run passes before its run folder exists: device, data, text source against the recipe's needs,
DAMSM vocabulary, batch size against the split, resume-state structure and `--init-from` shapes. Each failure is one
T2IError line naming the flag; nothing is written before they all pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from t2itool.data.store import Store
from t2itool.encoders.checkpoint import check_vocabulary, read_damsm
from t2itool.encoders.kinds import TextSource
from t2itool.errors import T2IError
from t2itool.models import ModelSpec
from t2itool.models.recipe import GANRecipe
from t2itool.training import checkpoint
from t2itool.training.config import TrainConfig
from t2itool.training.evaluate import check_metrics


def build_networks(recipe: GANRecipe, meta: bool = True) -> dict[str, nn.Module]:
    """The recipe's networks, on the meta device when its layers allow it (shapes without memory or init cost)."""
    if meta:
        try:
            with torch.device("meta"):
                return recipe.build_networks()
        except (RuntimeError, NotImplementedError, TypeError):
            pass  # an initialiser that needs real values (e.g. a QR decomposition): build on CPU
    return recipe.build_networks()


def needs_damsm(text_kind: str, recipe: GANRecipe) -> bool:
    """The run loads DAMSM encoders: for the text itself, or for a DAMSM loss on generated images."""
    return text_kind == "damsm" or recipe.needs_image_encoder


def text_dims(config: TrainConfig, store: Store, damsm_record: dict[str, Any] | None) -> tuple[int, int | None]:
    """(sentence width, word width or None) the run's text source provides."""
    if config.text == "precomputed":
        source = TextSource.precomputed(store)
        return source.sentence_dim, source.word_dim
    assert damsm_record is not None
    width = 2 * int(damsm_record["text_encoder_config"].get("hidden_dim", 128))
    return width, width


def check_text(config: TrainConfig, recipe: GANRecipe, dims: tuple[int, int | None]) -> None:
    needs = recipe.text_needs()
    sentence_dim, word_dim = dims
    source = f"--text {config.text}"
    if needs.sentence_dim is not None and needs.sentence_dim != sentence_dim:
        raise T2IError(
            f"{source} gives {sentence_dim}-d sentence features, {config.model} is configured for "
            f"{needs.sentence_dim}: set its text width to {sentence_dim} (see `t2itool models {config.model}`)"
        )
    if needs.word_dim is not None:
        if word_dim is None:
            raise T2IError(f"{source}: {config.model} needs word features and this text source has none")
        if needs.word_dim != word_dim:
            raise T2IError(
                f"{source} gives {word_dim}-d word features, {config.model} is configured for {needs.word_dim}: "
                f"set its word width to {word_dim} (see `t2itool models {config.model}`)"
            )


def check_resume(config: TrainConfig, recipe: GANRecipe, steps_per_epoch: int) -> None:
    """The resume state belongs to this model, has steps left to run, and its networks have this config's structure."""
    path, state = checkpoint.load_state(config.resume)
    if state["model"] != config.model:
        raise T2IError(f"--resume {path}: the state is for model {state['model']!r}, not {config.model!r}")
    total = config.steps if config.steps is not None else (config.epochs or 0) * steps_per_epoch
    if total <= int(state["step"]):
        flag = f"--steps {config.steps}" if config.steps is not None else f"--epochs {config.epochs} ({total} steps)"
        raise T2IError(
            f"--resume {path}: the state is at step {state['step']}, {flag} is not beyond it; give a larger total "
            "(--steps and --epochs count from step 0)"
        )
    nets = build_networks(recipe)
    problems = []
    for name, net in nets.items():
        if name not in state["nets"]:
            problems.append(f"network {name} is not in the state")
            continue
        problem = checkpoint.state_mismatch(net.state_dict(), state["nets"][name])
        if problem:
            problems.append(f"{name}: {problem}")
    if not problems:
        return
    old, new = state.get("model_config", {}), config.model_config
    changed = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in new if old.get(key) != new.get(key)]
    keys = f"config keys that differ: {', '.join(changed)}" if changed else problems[0]
    raise T2IError(f"--resume {path}: its networks do not fit this config ({keys}); resume with the run's settings")


def preflight(config: TrainConfig, spec: ModelSpec, world_size: int) -> None:
    """Every check that reads files, in the order a user would fix them."""
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise T2IError(f"--device {config.device}: CUDA is not available on this machine; use --device cpu")
    if config.amp == "fp16" and (config.device == "cpu" or not torch.cuda.is_available()):
        raise T2IError("--amp fp16 needs a CUDA device (fp16 autocast/GradScaler); on CPU use --amp bf16 or none")
    if config.steps is None and config.epochs is None:
        raise T2IError("give --steps or --epochs (or a --preset that sets epochs)")
    model_config = spec.make_config(None, config.model_config)
    recipe = spec.recipe_cls(model_config)
    if config.text not in recipe.text_kinds:
        raise T2IError(f"--text {config.text}: {config.model} takes {' or '.join(recipe.text_kinds)}")

    if not config.data:
        raise T2IError("--data is required (a file written by `t2itool prep`)")
    if not Path(config.data).is_file():
        raise T2IError(f"--data {config.data}: no such file")
    store = Store(config.data)
    record = None
    if needs_damsm(config.text, recipe):
        if not config.damsm:
            why = "the DAMSM loss" if recipe.needs_image_encoder else "--text damsm"
            raise T2IError(f"--damsm is required for {config.model} ({why}): a `t2itool pretrain-damsm` checkpoint")
        file, record = read_damsm(config.damsm)
        check_vocabulary(record, store, f"--damsm {file}")
    check_text(config, recipe, text_dims(config, store, record))

    if config.batch_size % recipe.sub_batches():
        raise T2IError(
            f"--batch-size {config.batch_size}: {config.model} splits each batch into {recipe.sub_batches()} equal "
            "parts; use a multiple of that"
        )
    train_images = len(store.split_indices("train"))
    if train_images < config.batch_size * world_size:
        raise T2IError(
            f"--batch-size {config.batch_size}: the training split has {train_images} images, fewer than one global "
            f"batch ({config.batch_size} x {world_size} processes)"
        )
    if config.metrics:
        check_metrics(config.metrics, config.data, config.damsm, config.inception_weights)
    if config.resume is not None:
        check_resume(config, recipe, train_images // (config.batch_size * world_size))
    nets = build_networks(recipe)
    if config.init_from is not None and config.resume is None:
        checkpoint.load_init_from(config.init_from, nets, dict(recipe.init_targets()), load=False)
    for name in recipe.frozen_modules():
        checkpoint.module_at(nets, name)
