"""`import-weights` as a library: an official checkpoint -> t2itool networks (config from the preset, --set and the
file's shapes), then a snapshot that `sample` and `score --generate` use like any other, recording its origin.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from t2itool.errors import T2IError
from t2itool.fileio import sha256_file
from t2itool.weights.files import container_networks, network_state, read_official
from t2itool.weights.importers import get_importer
from t2itool.weights.mapping import map_networks

IMPORT_SOURCE = "import-weights"


@dataclass
class ImportedNetworks:
    model: str
    config: Any
    nets: dict[str, nn.Module]  # "generator", plus the discriminator side when asked for
    origin: dict[str, Any]  # file name, sha256, layout, official networks read
    from_file: dict[str, Any]  # config values the file's shapes fixed


def _official_states(
    file: Path, obj: Any, generator_label: str, discriminator_labels: list[str], discriminator_files: list[Path]
) -> tuple[dict[str, dict[str, torch.Tensor]], str, list[dict[str, str]]]:
    """({label: state}, layout, [{label, file, sha256} of extra files]) from the main file and discriminator files."""
    networks = container_networks(obj)
    wanted = [generator_label, *discriminator_labels]
    if networks is not None:
        if discriminator_files:
            raise T2IError(f"--discriminator: {file.name} already holds the discriminators (a state file)")
        states = {}
        for label in wanted:
            if label not in networks:
                found = ", ".join(map(str, networks))
                raise T2IError(f"{file}: a state file without model[{label!r}] (it has {found})")
            states[label] = network_state(networks[label], f"{file.name} model[{label!r}]")
        return states, "state file {'model': {" + ", ".join(map(str, networks)) + "}}", []
    states = {generator_label: network_state(obj, file.name)}
    if discriminator_labels and len(discriminator_files) != len(discriminator_labels):
        raise T2IError(
            f"--with-discriminator: {file.name} holds only the generator; give its discriminator files with "
            f"--discriminator ({', '.join(discriminator_labels)}, in this order)"
        )
    extra = []
    for label, path in zip(discriminator_labels, discriminator_files, strict=False):
        states[label] = network_state(read_official(path), f"{Path(path).name} ({label})")
        extra.append({"network": label, "file": Path(path).name, "sha256": sha256_file(path)})
    return states, "bare state dict", extra


def load_official_networks(
    model: str,
    file: str | Path,
    *,
    preset: str | None = None,
    sets: dict[str, Any] | None = None,
    with_discriminator: bool = False,
    discriminator_files: list[str | Path] | tuple[str | Path, ...] = (),
) -> ImportedNetworks:
    """Read an official checkpoint of `model` and fill t2itool networks with it, exactly (see weights.mapping).
    `sets` are config overrides (strings as from --set, or typed values); values the file's shapes fix win over the
    preset, and an override that contradicts them is refused naming the key."""
    from t2itool.training.config import parse_overrides

    importer = get_importer(model)
    file = Path(file)
    obj = read_official(file)
    overrides = parse_overrides(importer.config_cls, {k: str(v) for k, v in (sets or {}).items()}, "--set")

    # The networks to read: the labels do not depend on sizes, so a first config from the preset names them.
    probe_generator, probe_discriminators = importer.networks(importer.make_config(preset, overrides))
    labels = [d.label for d in probe_discriminators] if with_discriminator else []
    states, layout, extra = _official_states(
        file, obj, probe_generator.label, labels, [Path(p) for p in discriminator_files]
    )

    # Config: defaults < preset < the file's shapes; an explicit --set must agree with the file.
    from_file = importer.config_from_shapes(states)
    for key, value in from_file.items():
        if key in overrides and overrides[key] != value:
            raise T2IError(f"--set {key}={overrides[key]}: {file.name} was saved with {key}={value}")
    config = importer.make_config(preset, {**overrides, **from_file})

    generator, discriminators = importer.networks(config)
    official = [generator, *(discriminators if with_discriminator else ())]
    nets = importer.build_networks(config)
    tables = {net.label: net.table for net in official}
    fill = list(dict.fromkeys(n for net in official for n in net.table.networks()))
    targets = {name: nets[name].state_dict() for name in fill}
    mapped = map_networks({net.label: states[net.label] for net in official}, tables, targets, file.name, fill)
    for name, state in mapped.items():
        nets[name].load_state_dict(state, strict=True)
    origin = {
        "source": IMPORT_SOURCE,
        "imported": True,
        "model": model,
        "file": file.name,
        "sha256": sha256_file(file),
        "layout": layout,
        "networks": [net.label for net in official],
        "discriminator_files": extra,
    }
    return ImportedNetworks(model, config, {name: nets[name] for name in fill}, origin, from_file)


@dataclass
class ImportResult:
    snapshot: Path
    state: Path | None
    imported: ImportedNetworks


def state_path_for(out: str | Path) -> Path:
    """Where --with-discriminator writes the networks for --init-from: beside the snapshot, `NAME.state.pt`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.state{out.suffix or '.pt'}")


def import_weights(
    model: str,
    file: str | Path,
    *,
    data: str | Path,
    out: str | Path,
    damsm: str | Path | None = None,
    text: str = "damsm",
    preset: str | None = None,
    sets: dict[str, Any] | None = None,
    with_discriminator: bool = False,
    discriminator_files: list[str | Path] | tuple[str | Path, ...] = (),
) -> ImportResult:
    """Write a t2itool snapshot (and with `with_discriminator` an init-from state) from an official checkpoint."""
    from t2itool.data.store import Store
    from t2itool.encoders import load_damsm
    from t2itool.encoders.kinds import TEXT_KINDS, TextSource
    from t2itool.fileio import atomic_torch_save, check_writable
    from t2itool.models import get_model, list_models
    from t2itool.training import checkpoint

    if model not in list_models():
        raise T2IError(f"model {model!r} is not registered in this t2itool (models: {', '.join(list_models())})")
    spec = get_model(model)
    if text not in TEXT_KINDS:
        raise T2IError(f"--text {text!r}: choose one of {', '.join(TEXT_KINDS)}")
    if text == "damsm" and not damsm:
        raise T2IError("--damsm CKPT is required: the snapshot carries the text encoder the generator was trained with")
    out = check_writable(out, "--out")
    state_out = check_writable(state_path_for(out), "--out") if with_discriminator else None
    store = Store(data)

    imported = load_official_networks(
        model, file, preset=preset, sets=sets, with_discriminator=with_discriminator,
        discriminator_files=discriminator_files,
    )  # fmt: skip
    importer = get_importer(model)
    if text == "damsm":
        text_source = TextSource.damsm(load_damsm(damsm, store=store).text_encoder)
    else:
        text_source = TextSource.precomputed(store)
    wanted = importer.sentence_dim(imported.config)
    if text_source.sentence_dim != wanted:
        flag = "--damsm" if text == "damsm" else "--data"
        raise T2IError(
            f"{flag}: the {text_source.describe()} gives {text_source.sentence_dim}-d sentences, "
            f"{Path(file).name}'s generator takes {wanted}-d"
        )

    # The sampler rebuilds the generator from the spec: load into that network, so the snapshot is sure to load.
    generator = spec.build_generator(imported.config)
    generator.load_state_dict(imported.nets["generator"].state_dict(), strict=True)
    checkpoint.save_snapshot(
        out, model=model, config=imported.config, generator=generator, text=text_source,
        vocab_words=list(store.vocab.words), vocab_sha256=store.vocab_sha256, step=0, data=store.identity(),
        ema=False, extra={"origin": imported.origin},
    )  # fmt: skip
    if state_out is not None:
        atomic_torch_save(
            {
                "format": checkpoint.STATE_FORMAT,
                "format_version": checkpoint.FORMAT_VERSION,
                "model": model,
                "model_config": dataclasses.asdict(imported.config),
                "imported": True,
                "origin": imported.origin,
                "nets": {name: {k: v.detach().cpu() for k, v in net.state_dict().items()}
                         for name, net in imported.nets.items()},
            },
            state_out,
        )  # fmt: skip
    return ImportResult(out, state_out, imported)
