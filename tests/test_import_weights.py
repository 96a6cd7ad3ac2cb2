"""`t2itool import-weights`: fixture files in the official layouts (names from ../shared/official-keys, random
values) import exactly, reproduce the generator's output, survive DataParallel prefixes and the old serialisation,
refuse wrong sizes, stray or missing keys and pickle payloads, and go on through sample and score."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.errors import T2IError
from t2itool.weights import load_official_networks, state_path_for

KEYS = Path(__file__).resolve().parents[2] / "shared" / "official-keys"
if not KEYS.is_dir():  # worktrees live beside the shared folder
    KEYS = Path("/work/shared/official-keys")
runner = CliRunner()
pytestmark = pytest.mark.skipif(not KEYS.is_dir(), reason="official-keys listings not available")


def listing(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """`name (shape)` rows of an official-keys file, in state_dict order."""
    rows = []
    for line in (KEYS / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        found = re.match(r"^(\S+) \((.*)\)$", line)
        assert found, line
        rows.append((found.group(1), tuple(int(x) for x in found.group(2).replace(" ", "").split(",") if x)))
    return rows


def random_state(rows, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in rows:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[name] = torch.randn(shape, generator=generator) * 0.2
    return state


# --- our own reading of the official layouts, written independently of the tables under test ----------------------

_MLP = (("fc_gamma.linear1", "gamma.0"), ("fc_gamma.linear2", "gamma.2"), ("fc_beta.linear1", "beta.0"),
        ("fc_beta.linear2", "beta.2"))  # fmt: skip


def dfgan_ours(label: str, name: str) -> tuple[str, str]:
    if label == "netC":
        return "head", name.replace("joint_conv.", "joint.")
    if label == "netD":
        name = name.replace("DBlocks.", "blocks.").replace(".conv_r.", ".residual.").replace(".conv_s.", ".shortcut.")
        return "discriminator", re.sub(r"\.gamma$", ".gain", name)
    name = name.replace("GBlocks.", "blocks.").replace(".c1.", ".conv0.").replace(".c2.", ".conv1.")
    name = name.replace(".c_sc.", ".shortcut.").replace(".fuse1.", ".fuse0.").replace(".fuse2.", ".fuse1.")
    for official, ours in _MLP:
        name = name.replace(official, ours)
    return "generator", name


def ssagan_ours(label: str, name: str) -> tuple[str, str]:
    if label == "netD":
        if name.startswith("COND_DNET.joint_conv."):
            return "head", name.replace("COND_DNET.joint_conv.", "joint.")
        name = re.sub(r"^block(\d+)\.", r"blocks.\1.", name).replace(".conv_r.", ".residual.")
        return "discriminator", re.sub(r"\.gamma$", ".gain", name.replace(".conv_s.", ".shortcut."))
    if name.startswith("conv_mask."):
        return "generator", name.replace("conv_mask.", "mask_predictors.0.layers.")
    found = re.match(r"^block(\d+)\.conv_mask\.(.+)$", name)
    if found:
        return "generator", f"mask_predictors.{int(found.group(1)) + 1}.layers.{found.group(2)}"
    if name.startswith("conv_img."):
        return "generator", name.replace("conv_img.", "to_rgb.")
    name = re.sub(r"\.gamma$", ".gain", re.sub(r"^block(\d+)\.", r"blocks.\1.", name))
    for official, ours in ((".c1.", ".conv0."), (".c2.", ".conv1."), (".c_sc.", ".shortcut."),
                           (".affine2.", ".affine1."), (".batch_norm2d.", ".norm."), *_MLP):  # fmt: skip
        name = name.replace(official, ours)
    return "generator", name


def load_through(rename, official: dict[str, dict[str, torch.Tensor]], nets: dict) -> None:
    """Load `nets` from official states through `rename`; square 1x1 shortcuts the official forward skips are
    dropped; strict, so every entry of ours must be filled."""
    ours: dict[str, dict[str, torch.Tensor]] = {}
    names = {network: set(net.state_dict()) for network, net in nets.items()}
    for label, state in official.items():
        for name, value in state.items():
            network, our_name = rename(label, name)
            if our_name not in names[network]:
                assert ".shortcut." in our_name and value.shape[0] == value.shape[1 if value.dim() > 1 else 0]
                continue
            ours.setdefault(network, {})[our_name] = value
    for network, state in ours.items():
        nets[network].load_state_dict(state, strict=True)


def small_listing(rows, rename, label: str, nets: dict) -> list[tuple[str, tuple[int, ...]]]:
    """The official names of `rows` with the shapes of our (narrower) networks; a skipped square shortcut takes the
    width of its block's first conv."""
    small, states = [], {network: net.state_dict() for network, net in nets.items()}
    for name, _ in rows:
        network, ours = rename(label, name)
        state = states[network]
        if ours in state:
            small.append((name, tuple(state[ours].shape)))
        else:
            width = state[ours.split(".shortcut.")[0] + ".residual.0.weight"].shape[0]
            small.append((name, (width, width, 1, 1) if name.endswith("weight") else (width,)))
    return small


def dfgan_file(path: Path, size: int, seed: int = 0, **save) -> dict[str, dict[str, torch.Tensor]]:
    """A DF-GAN state file at the released width (nf 32) and `size` px; returns its networks."""
    model = {
        "netG": random_state(listing(f"dfgan-netG-{size}px-nf32.txt"), seed),
        "netD": random_state(listing(f"dfgan-netD-{size}px-nf32.txt"), seed + 1),
        "netC": random_state(listing("dfgan-netC-nf32.txt"), seed + 2),
    }
    torch.save({"model": model, "optimizers": {}, "epoch": 1220}, path, **save)
    return model


def narrow_dfgan_file(path: Path, size: int, width: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """A DF-GAN state file with the official names at `size` px and ngf = ndf = `width` (fast to sample)."""
    from t2itool.models.dfgan import DFGANConfig, DFGANRecipe

    nets = DFGANRecipe(DFGANConfig(image_size=size, ngf=width, ndf=width)).build_networks()
    files = {
        "netG": f"dfgan-netG-{size}px-nf32.txt",
        "netD": f"dfgan-netD-{size}px-nf32.txt",
        "netC": "dfgan-netC-nf32.txt",
    }
    model = {
        label: random_state(small_listing(listing(file), dfgan_ours, label, nets), seed + k)
        for k, (label, file) in enumerate(files.items())
    }
    torch.save({"model": model, "optimizers": {}, "epoch": 1220}, path)
    return model


def dfgan_reference(config, official) -> dict:
    from t2itool.models.dfgan import DFGANRecipe

    nets = DFGANRecipe(config).build_networks()
    load_through(dfgan_ours, official, nets)
    return nets


def fixed_input(noise_dim: int, cond_dim: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    return torch.randn(batch, noise_dim, generator=generator), torch.randn(batch, cond_dim, generator=generator)


# --- DF-GAN: 64, 128 and 256 px state files --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128, 256])
def test_dfgan_state_file_imports_exactly_at_each_released_size(tmp_path: Path, size: int) -> None:
    official = dfgan_file(tmp_path / "state_epoch_1220.pth", size)
    imported = load_official_networks(
        "dfgan", tmp_path / "state_epoch_1220.pth", preset="birds", with_discriminator=True
    )
    assert imported.config.image_size == size and imported.config.ngf == 32 and imported.config.ndf == 32
    reference = dfgan_reference(imported.config, official)
    for name in ("generator", "discriminator", "head"):
        ours, expected = imported.nets[name].state_dict(), reference[name].state_dict()
        assert ours.keys() == expected.keys() and all(torch.equal(ours[k], expected[k]) for k in ours)
    # Every official entry landed (nothing filled by chance): the square shortcuts are the only ones left out.
    skipped = [
        k for k in official["netD"] if dfgan_ours("netD", k)[1] not in imported.nets["discriminator"].state_dict()
    ]
    assert skipped and all(".conv_s." in k for k in skipped)
    z, sentence = fixed_input(100, 256, batch=1)
    with torch.no_grad():
        assert torch.equal(imported.nets["generator"](z, sentence), reference["generator"](z, sentence))
        if size == 64:  # the discriminator side once (its layout is the same at every size)
            features = imported.nets["discriminator"](torch.rand(1, 3, size, size))
            head, expected_head = imported.nets["head"], reference["head"]
            assert torch.equal(head(features, sentence), expected_head(features, sentence))


def test_dfgan_bare_generator_with_prefix_and_old_serialisation(tmp_path: Path) -> None:
    official = dfgan_file(tmp_path / "state.pth", 64)
    plain = load_official_networks("dfgan", tmp_path / "state.pth")
    ddp = {"module." + k: v for k, v in official["netG"].items()}
    torch.save(ddp, tmp_path / "netG_legacy.pth", _use_new_zipfile_serialization=False)
    legacy = load_official_networks("dfgan", tmp_path / "netG_legacy.pth", sets={"image_size": "64"})
    torch.save(
        {"model": {k: {"module." + n: v for n, v in s.items()} for k, s in official.items()}}, tmp_path / "d.pth"
    )
    wrapped = load_official_networks("dfgan", tmp_path / "d.pth", with_discriminator=True)
    for other in (legacy, wrapped):
        ours, expected = other.nets["generator"].state_dict(), plain.nets["generator"].state_dict()
        assert all(torch.equal(ours[k], expected[k]) for k in expected)
    assert legacy.origin["layout"] == "bare state dict" and "netG" in plain.origin["layout"]
    assert list(plain.nets) == ["generator"] and set(wrapped.nets) == {"generator", "discriminator", "head"}


def _expect(match: str, *args, **kwargs) -> str:
    with pytest.raises(T2IError, match=match) as info:
        load_official_networks(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_refuses_wrong_sizes_stray_and_missing_keys(tmp_path: Path) -> None:
    official = dfgan_file(tmp_path / "state.pth", 64)
    netg = dict(official["netG"])
    # A width the config does not have: named by its key.
    torch.save(netg, tmp_path / "netG.pth")
    _expect(r"--set ngf=64: netG.pth was saved with ngf=32", "dfgan", tmp_path / "netG.pth", sets={"ngf": "64"})
    _expect(r"--set image_size=128: .*image_size=64", "dfgan", tmp_path / "netG.pth", sets={"image_size": "128"})
    wrong = {**netg, "GBlocks.2.c1.weight": torch.zeros(64, 128, 3, 3)[:, :100]}
    torch.save(wrong, tmp_path / "wrong.pth")
    _expect(
        r"wrong.pth: netG entry GBlocks\.2\.c1\.weight has shape \(64, 100, 3, 3\)", "dfgan", tmp_path / "wrong.pth"
    )
    # An entry the official layout does not have, and one that is missing.
    torch.save({**netg, "GBlocks.0.fuse3.affine0.fc_gamma.linear1.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    _expect(r"netG entry GBlocks\.0\.fuse3\.affine0.* not in the official layout", "dfgan", tmp_path / "extra.pth")
    torch.save({k: v for k, v in netg.items() if k != "GBlocks.2.c2.bias"}, tmp_path / "missing.pth")
    _expect(r"nothing in the file fills t2itool's generator\.blocks\.2\.conv1\.bias", "dfgan", tmp_path / "missing.pth")
    # A file of another model, prefixes on some names only, a state file without the discriminator asked for.
    _expect(r"no entry block0\.affine0", "dfgan-ssacn", tmp_path / "netG.pth")
    torch.save({("module." + k if k == "fc.weight" else k): v for k, v in netg.items()}, tmp_path / "mixed.pth")
    _expect(r"module.fc.weight carries a 'module.' prefix that other names lack", "dfgan", tmp_path / "mixed.pth")
    torch.save({"model": {"netG": netg}}, tmp_path / "g_only.pth")
    _expect(r"a state file without model\['netD'\]", "dfgan", tmp_path / "g_only.pth", with_discriminator=True)
    _expect(r"holds only the generator; give its discriminator files", "dfgan", tmp_path / "netG.pth",
            with_discriminator=True)  # fmt: skip


def test_a_pickle_payload_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"fc.weight": torch.zeros(2, 2), "extra": Payload()}, tmp_path / "evil.pth")
    message = _expect(r"evil.pth: refused: it holds more than tensors", "dfgan", tmp_path / "evil.pth")
    assert "open" in message and not marker.exists()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    _expect(r"junk.pth: cannot be read as a torch checkpoint", "dfgan", tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    _expect(r"list.pth: not a state dict \(found list\)", "dfgan", tmp_path / "list.pth")


# --- SSA-GAN: the released 256 px layout, at the listed width (names and shapes) and narrow (values) ----------------


def test_ssagan_listing_at_the_released_size_maps_onto_our_shapes() -> None:
    from t2itool.models.dfgan_ssacn import SSAGANRecipe
    from t2itool.models.dfgan_ssacn.config import SSAGANConfig

    config = SSAGANConfig()  # released: 256 px, nf 64
    nets = {k: v for k, v in SSAGANRecipe(config).build_networks().items() if k != "image_projections"}
    for label, file in (("netG", "ssagan-netG-256px-nf64.txt"), ("netD", "ssagan-netD-256px-nf64.txt")):
        rows = listing(file)
        assert small_listing(rows, ssagan_ours, label, nets) == rows  # every shape as the official one
    covered = {
        ssagan_ours(label, name) for label in ("netG", "netD") for name, _ in listing(f"ssagan-{label}-256px-nf64.txt")
    }
    for network, net in nets.items():
        assert {(network, k) for k in net.state_dict()} <= covered


def ssagan_files(tmp_path: Path, cond_dim: int = 16) -> tuple[Path, Path, dict]:
    """netG_*.pth and netD_*.pth in the official 256 px layout (DataParallel names) at nf 2."""
    from t2itool.models.dfgan_ssacn import SSAGANRecipe
    from t2itool.models.dfgan_ssacn.config import SSAGANConfig

    config = SSAGANConfig(ngf=2, ndf=2, cond_dim=cond_dim, mask_hidden=3, noise_dim=10)
    nets = SSAGANRecipe(config).build_networks()
    official = {}
    for seed, label in enumerate(("netG", "netD")):
        rows = small_listing(listing(f"ssagan-{label}-256px-nf64.txt"), ssagan_ours, label, nets)
        official[label] = random_state(rows, seed)
        torch.save({"module." + k: v for k, v in official[label].items()}, tmp_path / f"{label}_550.pth")
    return tmp_path / "netG_550.pth", tmp_path / "netD_550.pth", official


def test_ssagan_imports_exactly_with_its_discriminator_file(tmp_path: Path) -> None:
    from t2itool.models.dfgan_ssacn import SSAGANRecipe

    netg, netd, official = ssagan_files(tmp_path)
    imported = load_official_networks("dfgan-ssacn", netg, preset="birds", discriminator_files=[netd],
                                      with_discriminator=True)  # fmt: skip
    config = imported.config
    assert (config.ngf, config.ndf, config.cond_dim, config.mask_hidden, config.image_size) == (2, 2, 16, 3, 256)
    reference = SSAGANRecipe(config).build_networks()
    load_through(ssagan_ours, official, reference)
    for name in ("generator", "discriminator", "head"):
        ours, expected = imported.nets[name].state_dict(), reference[name].state_dict()
        assert ours.keys() == expected.keys() and all(torch.equal(ours[k], expected[k]) for k in ours)
    z, sentence = fixed_input(10, 16, batch=1)
    with torch.no_grad():
        (image, masks), (expected_image, expected_masks) = (
            net.eval()(z, sentence) for net in (imported.nets["generator"], reference["generator"])
        )
    assert torch.equal(image, expected_image)
    assert all(torch.equal(a, b) for a, b in zip(masks, expected_masks, strict=True))
    assert imported.origin["discriminator_files"][0]["file"] == "netD_550.pth"


# --- AttnGAN and StackGAN at library level (their models register elsewhere) ----------------------------------------


def attngan_files(folder: Path, small) -> tuple[list[Path], dict, list]:
    """netG.pth, netD0-2.pth in the released birds layout (official names, in official order) with the shapes of
    `small` (an AttnGANConfig) and random values: (files, official states by label, (label, listing, net, table))."""
    from t2itool.models.attngan.networks import build_discriminators, build_generator
    from t2itool.models.attngan.official_names import DISCRIMINATORS, GENERATOR, convert_official_state_dict

    ours = {"generator": build_generator(small), **build_discriminators(small)}
    by_name = {name: net.state_dict() for name, net in ours.items()}
    files, official = [], {}
    specs = [("netG", "attngan-G_NET-birds.txt", "generator", GENERATOR)]
    specs += [
        (f"netD{k}", f"attngan-D_NET{s}-birds.txt", f"d{s}", DISCRIMINATORS[s]) for k, s in enumerate((64, 128, 256))
    ]
    for seed, (label, file, network, table) in enumerate(specs):
        names = [name for name, _ in listing(file)]
        renamed = convert_official_state_dict(dict.fromkeys(names, None), table)  # type: ignore[arg-type]
        pairs = zip(names, renamed, strict=True)  # keys: our names, in official order
        rows = [(name, tuple(by_name[network][ours_name].shape)) for name, ours_name in pairs]
        official[label] = random_state(rows, seed)
        torch.save(official[label], folder / f"{label}.pth")
        files.append(folder / f"{label}.pth")
    return files, official, specs


def test_attngan_generator_and_discriminators_import_exactly(tmp_path: Path) -> None:
    from t2itool.models.attngan.config import AttnGANConfig
    from t2itool.models.attngan.networks import build_discriminators, build_generator
    from t2itool.models.attngan.official_names import convert_official_state_dict

    # Released birds layout (three stages at 64/128/256, two residual blocks) at GF 4 / DF 2 and small embeddings.
    small = AttnGANConfig(gf_dim=4, df_dim=2, r_num=2, z_dim=6, cond_dim=5, text_dim=256)
    files, official, specs = attngan_files(tmp_path, small)
    imported = load_official_networks("attngan", files[0], preset="birds", with_discriminator=True,
                                      discriminator_files=files[1:])  # fmt: skip
    config = imported.config
    assert (config.gf_dim, config.df_dim, config.r_num, config.z_dim, config.cond_dim) == (4, 2, 2, 6, 5)
    reference = {"generator": build_generator(config), **build_discriminators(config)}
    for label, _, network, table in specs:
        reference[network].load_state_dict(convert_official_state_dict(official[label], table), strict=True)
        got, expected = imported.nets[network].state_dict(), reference[network].state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    generator = torch.Generator().manual_seed(1)
    words = torch.randn(1, 256, 5, generator=generator)
    inputs = (torch.randn(1, 6, generator=generator), torch.randn(1, 5, generator=generator),
              torch.randn(1, 256, generator=generator), words, torch.zeros(1, 5, dtype=torch.bool))  # fmt: skip
    with torch.no_grad():
        got = imported.nets["generator"].eval()(*inputs).images
        expected = reference["generator"].eval()(*inputs).images
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def stackgan_files(folder: Path, small) -> tuple[dict, dict]:
    """netG.pth and netD.pth of stage `small.stage` in the official COCO layout (r_num 2) with the shapes of `small`
    (a StackGANConfig) and random values: (official states, name tables) by label."""
    from t2itool.models.stackgan.networks import build_discriminator, build_generator
    from t2itool.models.stackgan.official_names import TABLES, rename_state_dict, stage2_generator_table

    stage = small.stage
    ours = {"netG": build_generator(small).state_dict(), "netD": build_discriminator(small).state_dict()}
    tables = {
        "netG": stage2_generator_table(2) if stage == 2 else TABLES["STAGE1_G"],
        "netD": TABLES[f"STAGE{stage}_D"],
    }
    official = {}
    for seed, label in enumerate(("netG", "netD")):
        names = [name for name, _ in listing(f"stackgan-STAGE{stage}_{label[-1]}-coco.txt")]
        renamed = rename_state_dict(names, tables[label])
        official[label] = random_state([(n, tuple(ours[label][renamed[n]].shape)) for n in names], seed)
        torch.save(official[label], folder / f"{label}.pth")
    return official, tables


@pytest.mark.parametrize("stage", [1, 2])
def test_stackgan_stages_import_exactly(tmp_path: Path, stage: int) -> None:
    from t2itool.models.stackgan.config import StackGANConfig
    from t2itool.models.stackgan.networks import build_discriminator, build_generator
    from t2itool.models.stackgan.official_names import rename_state_dict

    small = StackGANConfig(stage=stage, gf_dim=8, df_dim=4, r_num=2, cond_dim=6, z_dim=7, text_dim=1024)
    official, tables = stackgan_files(tmp_path, small)
    imported = load_official_networks("stackgan", tmp_path / "netG.pth", preset="coco", with_discriminator=True,
                                      discriminator_files=[tmp_path / "netD.pth"])  # fmt: skip
    config = imported.config
    assert (config.stage, config.gf_dim, config.df_dim, config.cond_dim, config.z_dim) == (stage, 8, 4, 6, 7)
    assert config.image_size == (64 if stage == 1 else 256)
    for label, network, build in (
        ("netG", "generator", build_generator),
        ("netD", "discriminator", build_discriminator),
    ):
        reference = build(config)
        renamed = rename_state_dict(official[label], tables[label])
        reference.load_state_dict({renamed[k]: v for k, v in official[label].items()}, strict=True)
        got, expected = imported.nets[network].state_dict(), reference.state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
        if label == "netG":
            generator = torch.Generator().manual_seed(2)
            inputs = [torch.randn(1, d, generator=generator) for d in (1024, 7, 6, 6)][: 3 if stage == 1 else 4]
            with torch.no_grad():
                assert torch.equal(imported.nets[network].eval()(*inputs).image, reference.eval()(*inputs).image)


# --- end to end: import -> sample -> score on the shapes data ---------------------------------------------------------


def _damsm(tmp_path: Path, data: str, hidden_dim: int) -> Path:
    from t2itool.data.store import Store
    from t2itool.encoders import ImageEncoder, TextEncoder, save_damsm

    store = Store(data)
    torch.manual_seed(0)
    return save_damsm(tmp_path / "damsm.pt", TextEncoder(len(store.vocab), 16, hidden_dim), ImageEncoder(), store=store)


def test_dfgan_import_sample_score_end_to_end(tmp_path: Path, shapes_h5: str, monkeypatch) -> None:
    from t2itool.fileio import sha256_file
    from t2itool.training import checkpoint

    monkeypatch.setenv("T2ITOOL_CACHE", str(tmp_path / "cache"))
    official = narrow_dfgan_file(tmp_path / "state_epoch_1220.pth", 64, width=4)
    damsm = _damsm(tmp_path, shapes_h5, 128)  # 256-d sentences, as the released DF-GAN
    snapshot = tmp_path / "dfgan-birds.pt"
    args = ["import-weights", "dfgan", str(tmp_path / "state_epoch_1220.pth"), "--data", shapes_h5, "--damsm",
            str(damsm), "--out", str(snapshot), "--preset", "birds", "--with-discriminator"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "image_size=64" in result.output and "ngf=4" in result.output and "for --init-from" in result.output

    snap = checkpoint.load_snapshot(snapshot)
    assert snap.origin["imported"] and snap.origin["file"] == "state_epoch_1220.pth"
    assert snap.origin["sha256"] == sha256_file(tmp_path / "state_epoch_1220.pth") and snap.config.image_size == 64
    reference = dfgan_reference(snap.config, official)
    z, sentence = fixed_input(100, 256)
    with torch.no_grad():
        assert torch.equal(snap.generator(z, sentence), reference["generator"](z, sentence))

    # The discriminators feed a new run through --init-from, never --resume.
    from t2itool.models.dfgan import DFGANRecipe

    nets = DFGANRecipe(snap.config).build_networks()
    loaded = checkpoint.load_init_from(str(state_path_for(snapshot)), nets, {})
    assert sorted(loaded) == ["discriminator -> discriminator", "generator -> generator", "head -> head"]
    assert all(torch.equal(nets["head"].state_dict()[k], v) for k, v in reference["head"].state_dict().items())
    with pytest.raises(T2IError, match="cannot be resumed; start a run with --init-from"):
        checkpoint.load_state(state_path_for(snapshot))

    samples = tmp_path / "samples"
    captions = ["a small red circle on a white background", "this picture shows a large square that is blue"]
    args = ["sample", str(snapshot), "--out", str(samples), "--per-caption", "2"]
    args += [part for caption in captions for part in ("--text", caption)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["score", str(samples), "--data", shapes_h5, "--shapes-agreement", "--json"])
    assert result.exit_code == 0, result.output
    colour = json.loads(result.stdout)[0]
    assert colour["metric"] == "colour_agreement" and colour["num_scored"] == 4 and 0 <= colour["value"] <= 1
    records = [json.loads(line) for line in (samples / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["caption"] for r in records} == set(captions)


def test_cli_errors_are_one_line(tmp_path: Path, shapes_h5: str) -> None:
    dfgan_file(tmp_path / "state.pth", 64)
    damsm = _damsm(tmp_path, shapes_h5, 8)  # 16-d sentences: not what the file's generator takes
    common = ["--data", shapes_h5, "--out", str(tmp_path / "s.pt")]
    cases = [
        (["import-weights", "dfgan", str(tmp_path / "state.pth"), *common, "--damsm", str(damsm)],
         "--damsm: the DAMSM text encoder (16-d words and sentences) gives 16-d sentences"),
        (["import-weights", "dfgan", str(tmp_path / "state.pth"), *common], "--damsm CKPT is required"),
        (["import-weights", "nosuch", str(tmp_path / "state.pth"), *common], "model 'nosuch' is not registered"),
        (["import-weights", "dfgan", str(tmp_path / "state.pth"), *common, "--set", "ngf"], "--set 'ngf'"),
        (["import-weights", "dfgan", str(tmp_path / "state.pth"), *common, "--damsm", str(damsm), "--preset", "x"],
         "--preset 'x'"),
    ]  # fmt: skip
    for args, expected in cases:
        result = runner.invoke(app, args)
        text = result.output + (result.stderr if result.stderr_bytes is not None else "")
        assert result.exit_code == 2 and expected in text, text
        assert "Traceback" not in text and not (tmp_path / "s.pt").exists()


def test_ssagan_import_through_the_cli_samples_the_same_images(tmp_path: Path, shapes_h5: str) -> None:
    from t2itool.models.dfgan_ssacn import SSAGANRecipe
    from t2itool.training import checkpoint

    netg, netd, official = ssagan_files(tmp_path)
    damsm = _damsm(tmp_path, shapes_h5, 8)
    snapshot = tmp_path / "ssagan.pt"
    args = ["import-weights", "dfgan-ssacn", str(netg), "--data", shapes_h5, "--damsm", str(damsm), "--out",
            str(snapshot), "--preset", "birds", "--discriminator", str(netd)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = torch.load(state_path_for(snapshot), weights_only=True)
    assert state["imported"] and sorted(state["nets"]) == ["discriminator", "generator", "head"]
    assert state["origin"]["discriminator_files"][0]["file"] == "netD_550.pth"
    snap = checkpoint.load_snapshot(snapshot)
    reference = SSAGANRecipe(snap.config).build_networks()
    load_through(ssagan_ours, official, reference)
    assert all(torch.equal(state["nets"]["head"][k], v) for k, v in reference["head"].state_dict().items())
    z, sentence = fixed_input(10, 16, batch=1)
    with torch.no_grad():
        assert torch.equal(snap.generator(z, sentence)[0], reference["generator"].eval()(z, sentence)[0])
    images = snap.generate(["red circle"], seeds=3)
    assert images.shape == (1, 3, 256, 256) and snap.origin["file"] == "netG_550.pth"
