"""XMC-GAN's config: field order, the released constants as defaults, help text everywhere, range checks, presets,
and networks built from it."""

from __future__ import annotations

import dataclasses

import pytest

from t2itool.models.xmcgan.config import PRESETS, TRAIN_PRESETS, XMCGANConfig
from t2itool.models.xmcgan.networks import build_discriminator, build_generator


def test_fields_start_with_the_engine_fields_and_all_have_help() -> None:
    fields = dataclasses.fields(XMCGANConfig)
    assert [f.name for f in fields[:3]] == ["image_size", "max_words", "sync_batchnorm"]
    for f in fields:
        assert f.metadata.get("help"), f"{f.name} has no help text"


def test_defaults_are_the_released_coco_constants() -> None:
    config = XMCGANConfig()
    released = {
        "image_size": 128, "z_dim": 128, "gf_dim": 96, "df_dim": 96, "rho0": 15.0, "rho1": 5.0, "rho2": 5.0,
        "word_region_scale": 50.0, "tau_sentence": 0.1, "tau_image": 0.1, "tau_image_features": 0.1,
        "sentence_weight": 1.0, "word_weight": 1.0, "image_weight": 1.0, "image_features_weight": 1.0,
        "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.5, "beta2": 0.999, "d_steps": 2,
        "image_encoder": "resnet50", "bn_momentum": 0.1, "bn_eps": 1e-5,
        "sentence_dim": 256, "word_dim": 256,  # DAMSM text by default; 768 for BERT-base features
    }  # fmt: skip
    assert {key: getattr(config, key) for key in released} == released


def test_values_are_checked_and_floats_coerced() -> None:
    config = XMCGANConfig(beta1=0, lr_g=1)
    assert isinstance(config.beta1, float) and isinstance(config.lr_g, float)
    with pytest.raises(ValueError, match=r"image_size=96: expected one of 32, 64, 128, 256"):
        XMCGANConfig(image_size=96)
    with pytest.raises(ValueError, match=r"tau_sentence=0.0: must be > 0"):
        XMCGANConfig(tau_sentence=0.0)
    with pytest.raises(ValueError, match=r"d_steps=0: must be >= 1"):
        XMCGANConfig(d_steps=0)
    with pytest.raises(ValueError, match=r"beta2=1.5: must be <= 1"):
        XMCGANConfig(beta2=1.5)


def test_presets_are_valid_configs() -> None:
    assert set(PRESETS) == set(TRAIN_PRESETS) == {"coco", "birds"}
    assert PRESETS["coco"]["image_size"] == 128
    # 56 images per discriminator step (the code's global batch_size), two sub-batches per step, over all processes
    assert TRAIN_PRESETS["coco"]["global_batch"] == 2 * 56
    for values in PRESETS.values():
        XMCGANConfig(**values)


def test_networks_build_from_the_config_with_its_widths() -> None:
    config = XMCGANConfig(image_size=32, gf_dim=2, df_dim=3, z_dim=4, sentence_dim=7, word_dim=9, rho0=3.0)
    generator, discriminator = build_generator(config), build_discriminator(config)
    assert generator.sentence_proj.in_features == 7 and generator.region_proj.out_channels == 9
    assert generator.fc.in_features == 4 and generator.fc.out_features == 16 * 2 * 16 and generator.rho0 == 3.0
    assert discriminator.sentence_proj.in_features == 7 and discriminator.sentence_proj.out_features == 16 * 3
    assert discriminator.region_proj.out_channels == 9
