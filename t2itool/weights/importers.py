"""Importers of released weights, one per model, in a registry keyed by the model name: which official networks a
checkpoint holds (with the model package's name table), which config values their shapes fix, and how to build the
t2itool networks they fill. The tables themselves are data in each model package (official_names.py).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from t2itool.errors import T2IError
from t2itool.weights.mapping import Table, prefix_rows

States = Mapping[str, Mapping[str, torch.Tensor]]  # official network label -> its state dict (no `module.`)


@dataclass(frozen=True)
class OfficialNetwork:
    """One network of a release: `label` is its key under state["model"] in DF-GAN's state files (and its name in
    messages), `file` the name the official code saves it under."""

    label: str
    file: str
    table: Table


@dataclass(frozen=True)
class Importer:
    model: str
    config_cls: type
    presets: Mapping[str, Mapping[str, Any]]
    # config -> (generator network, discriminator-side networks in the order of their files)
    networks: Callable[[Any], tuple[OfficialNetwork, tuple[OfficialNetwork, ...]]]
    # official states -> the config values their shapes fix (the generator's alone, or with the discriminators')
    config_from_shapes: Callable[[States], dict[str, Any]]
    # config -> t2itool networks: "generator" and the discriminator-side networks the tables fill
    build_networks: Callable[[Any], dict[str, nn.Module]]
    # config -> the sentence-feature size the generator takes (checked against the DAMSM encoder)
    sentence_dim: Callable[[Any], int]

    def make_config(self, preset: str | None, values: Mapping[str, Any]) -> Any:
        merged: dict[str, Any] = {}
        if preset is not None:
            if preset not in self.presets:
                raise T2IError(f"--preset {preset!r}: {self.model} has presets {', '.join(sorted(self.presets))}")
            merged.update(self.presets[preset])
        merged.update(values)
        valid = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(merged) - valid)
        if unknown:
            raise T2IError(f"{self.model} has no config key {unknown[0]!r}; valid keys: {', '.join(sorted(valid))}")
        try:
            return self.config_cls(**merged)
        except (TypeError, ValueError) as exc:
            raise T2IError(f"{self.model} config: {exc}") from None


_IMPORTERS: dict[str, Importer] = {}


def register_importer(importer: Importer) -> Importer:
    if importer.model in _IMPORTERS:
        raise ValueError(f"an importer for {importer.model!r} is already registered")
    _IMPORTERS[importer.model] = importer
    return importer


def list_importers() -> list[str]:
    return sorted(_IMPORTERS)


def get_importer(model: str) -> Importer:
    if model not in _IMPORTERS:
        raise T2IError(f"no importer for model {model!r}; import-weights knows {', '.join(list_importers())}")
    return _IMPORTERS[model]


# --- reading sizes off official shapes ----------------------------------------------------------------------------


def entry(states: States, label: str, name: str) -> torch.Tensor:
    state = states.get(label, {})
    if name not in state:
        raise T2IError(f"{label}: no entry {name} (not the official layout of this model)")
    return state[name]


def indices(state: Mapping[str, torch.Tensor], pattern: str) -> set[int]:
    """The indices `{i}` of the names that start with `pattern` ("GBlocks.{i}.")."""
    before, after = pattern.split("{i}")
    regex = re.compile("^" + re.escape(before) + r"(\d+)" + re.escape(after))
    return {int(m.group(1)) for name in state if (m := regex.match(name))}


def count_indices(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    """How many consecutive indices from 0 occur in names that start with `pattern` ("GBlocks.{i}.")."""
    found, count = indices(state, pattern), 0
    while count in found:
        count += 1
    return count


def _exact(total: int, divisor: int, what: str) -> int:
    if total % divisor or total < divisor:
        raise T2IError(f"{what}: {total} is not a multiple of {divisor} (not the official layout of this model)")
    return total // divisor


# --- dfgan --------------------------------------------------------------------------------------------------------


def _dfgan() -> Importer:
    from t2itool.models.dfgan import SPEC, official_names
    from t2itool.models.dfgan.config import DFGANConfig

    networks = tuple(
        OfficialNetwork(label, "state_epoch_*.pth", Table(rows, official_names.UNUSED_WHEN_SQUARE))
        for label, rows in official_names.NETWORKS.items()
    )

    def shapes(states: States) -> dict[str, Any]:
        fc = entry(states, "netG", "fc.weight")
        values = {"noise_dim": int(fc.shape[1]), "ngf": _exact(int(fc.shape[0]), 8 * 16, "netG fc.weight rows")}
        values["image_size"] = 4 * 2 ** count_indices(states["netG"], "GBlocks.{i}.")
        fused = entry(states, "netG", "GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight").shape[1]
        values["cond_dim"] = int(fused) - values["noise_dim"]
        if "netD" in states:
            values["ndf"] = int(entry(states, "netD", "conv_img.weight").shape[0])
        elif "netC" in states:
            values["ndf"] = _exact(int(entry(states, "netC", "joint_conv.0.weight").shape[0]), 2, "netC width")
        return values

    def build(config: DFGANConfig) -> dict[str, nn.Module]:
        return SPEC.recipe_cls(config).build_networks()

    return Importer(
        model="dfgan",
        config_cls=DFGANConfig,
        presets=SPEC.presets,
        networks=lambda config: (networks[0], networks[1:]),
        config_from_shapes=shapes,
        build_networks=build,
        sentence_dim=lambda config: config.cond_dim,
    )


# --- dfgan-ssacn (SSA-GAN) ----------------------------------------------------------------------------------------


def _ssagan() -> Importer:
    from t2itool.models.dfgan_ssacn import SPEC, official_names
    from t2itool.models.dfgan_ssacn.config import SSAGANConfig
    from t2itool.models.dfgan_ssacn.networks import NetD, NetG, build_head

    generator = OfficialNetwork("netG", "netG_*.pth", Table(official_names.NET_G))
    d_table = Table(official_names.NET_D, official_names.UNUSED_WHEN_SQUARE)
    discriminator = OfficialNetwork("netD", "netD_*.pth", d_table)

    def shapes(states: States) -> dict[str, Any]:
        fc = entry(states, "netG", "fc.weight")
        values = {"noise_dim": int(fc.shape[1]), "ngf": _exact(int(fc.shape[0]), 8 * 16, "netG fc.weight rows")}
        values["image_size"] = 4 * 2 ** (count_indices(states["netG"], "block{i}.") - 1)  # block0 stays at 4x4
        values["cond_dim"] = int(entry(states, "netG", "block0.affine0.fc_gamma.linear1.weight").shape[1])
        values["mask_hidden"] = int(entry(states, "netG", "conv_mask.0.weight").shape[0])
        if "netD" in states:
            values["ndf"] = int(entry(states, "netD", "conv_img.weight").shape[0])
        return values

    def build(c: SSAGANConfig) -> dict[str, nn.Module]:
        return {
            "generator": NetG(c.ngf, c.noise_dim, c.cond_dim, c.image_size, c.mask_hidden),
            "discriminator": NetD(c.ndf, c.image_size),
            "head": build_head(c.ndf, c.cond_dim, c.image_size),
        }

    return Importer(
        model="dfgan-ssacn",
        config_cls=SSAGANConfig,
        presets=SPEC.presets,
        networks=lambda config: (generator, (discriminator,)),
        config_from_shapes=shapes,
        build_networks=build,
        sentence_dim=lambda config: config.cond_dim,
    )


# --- attngan ------------------------------------------------------------------------------------------------------


def _attngan() -> Importer:
    from t2itool.models.attngan import official_names
    from t2itool.models.attngan.config import PRESETS, AttnGANConfig
    from t2itool.models.attngan.networks import build_discriminators, build_generator

    def networks(config: AttnGANConfig) -> tuple[OfficialNetwork, tuple[OfficialNetwork, ...]]:
        generator = OfficialNetwork("netG", "*_AttnGAN2.pth", Table(prefix_rows(official_names.GENERATOR, "generator")))
        discriminators = tuple(
            OfficialNetwork(
                f"netD{k}", f"netD{k}.pth", Table(prefix_rows(official_names.DISCRIMINATORS[size], f"d{size}"))
            )
            for k, size in enumerate(config.stage_sizes)
        )
        return generator, discriminators

    def shapes(states: States) -> dict[str, Any]:
        ca = entry(states, "netG", "ca_net.fc.weight")  # GLU: 4 cond_dim rows (mu, logvar, each gated)
        cond_dim = _exact(int(ca.shape[0]), 4, "netG ca_net.fc.weight rows")
        first = entry(states, "netG", "h_net1.fc.0.weight")
        stage1 = 4 * 2 ** len(indices(states["netG"], "h_net1.upsample{i}."))  # upsample1..k, 4 px -> stage 1
        values = {
            "text_dim": int(ca.shape[1]),
            "cond_dim": cond_dim,
            "z_dim": int(first.shape[1]) - cond_dim,
            "gf_dim": int(entry(states, "netG", "img_net1.img.0.weight").shape[1]),
            "r_num": count_indices(states["netG"], "h_net2.residual.{i}."),
            "image_size": 4 * stage1,  # three stages, each doubling
        }
        if "netD0" in states:
            values["df_dim"] = int(entry(states, "netD0", "img_code_s16.0.weight").shape[0])
            values["unconditional_head"] = "UNCOND_DNET.outlogits.0.weight" in states["netD0"]
        return values

    def build(config: AttnGANConfig) -> dict[str, nn.Module]:
        return {"generator": build_generator(config), **build_discriminators(config)}

    return Importer(
        model="attngan",
        config_cls=AttnGANConfig,
        presets=PRESETS,
        networks=networks,
        config_from_shapes=shapes,
        build_networks=build,
        sentence_dim=lambda config: config.text_dim,
    )


# --- stackgan -----------------------------------------------------------------------------------------------------


def _stackgan() -> Importer:
    from t2itool.models.stackgan import SPEC, official_names
    from t2itool.models.stackgan.config import StackGANConfig
    from t2itool.models.stackgan.networks import build_discriminator, build_generator

    def networks(config: StackGANConfig) -> tuple[OfficialNetwork, tuple[OfficialNetwork, ...]]:
        if config.stage == 1:
            g_table, d_table = official_names.STAGE1_G, official_names.STAGE1_D
        else:
            g_table, d_table = official_names.stage2_generator_table(config.r_num), official_names.STAGE2_D
        generator = OfficialNetwork("netG", "netG_epoch_*.pth", Table(prefix_rows(g_table.items(), "generator")))
        d_rows = prefix_rows(d_table.items(), "discriminator")
        discriminator = OfficialNetwork("netD", "netD_epoch_*.pth", Table(d_rows))
        return generator, (discriminator,)

    def shapes(states: States) -> dict[str, Any]:
        state = states.get("netG", {})
        stage = 2 if any(name.split(".", 1)[0] == "STAGE1_G" for name in state) else 1
        stage1 = "STAGE1_G." if stage == 2 else ""
        ca = entry(states, "netG", "ca_net.fc.weight")  # ReLU CA: 2 cond_dim rows (mu, logvar)
        cond_dim = _exact(int(ca.shape[0]), 2, "netG ca_net.fc.weight rows")
        fc = entry(states, "netG", f"{stage1}fc.0.weight")
        size1 = 4 * 2 ** len(indices(state, stage1 + "upsample{i}."))  # stage I: upsample1..k from 4 px
        values = {
            "stage": stage,
            "text_dim": int(ca.shape[1]),
            "cond_dim": cond_dim,
            "z_dim": int(fc.shape[1]) - cond_dim,
            "gf_dim": _exact(int(fc.shape[0]), 8 * 16, "netG fc.0.weight rows"),
            "image_size": size1 * (4 if stage == 2 else 1),
        }
        if stage == 2:
            values["r_num"] = count_indices(state, "residual.{i}.")
        if "netD" in states:
            values["df_dim"] = int(entry(states, "netD", "encode_img.0.weight").shape[0])
        return values

    def build(config: StackGANConfig) -> dict[str, nn.Module]:
        return {"generator": build_generator(config), "discriminator": build_discriminator(config)}

    return Importer(
        model="stackgan",
        config_cls=StackGANConfig,
        presets=SPEC.presets,  # birds, coco (stage I) and birds-stage2, coco-stage2
        networks=networks,
        config_from_shapes=shapes,
        build_networks=build,
        sentence_dim=lambda config: config.text_dim,
    )


for _make in (_dfgan, _ssagan, _attngan, _stackgan):
    register_importer(_make())
