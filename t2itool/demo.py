"""`t2itool demo`: the whole pipeline on the built-in shapes data, on a CPU, in minutes.

Every stage is the real command, run as a subprocess on real files and printed first, so any step can be repeated by
hand: prep shapes -> pretrain-damsm -> train drgan -> sample the held-out captions -> score (R-precision, colour and
shape agreement against chance, FID/IS when the Inception weights are present).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from t2itool.errors import T2IError

MODEL = "drgan"  # DR-GAN: its DAMSM loss makes samples follow the caption's colour within 100 steps (README)
MARKER = "demo.json"  # written into the demo folder: only such a folder is ever cleared by a later demo


@dataclass
class DemoSettings:
    """Sizes chosen so that 2 CPU cores finish within 10 minutes with the caption's colour learnt (README: 84.7% of
    held-out samples, 6.5x chance). Shape is not (45.8%, 1.4x): the DAMSM encoders pretrained here with a random
    image backbone encode colour but hardly shape, and G and D see the captions only through them."""

    out: Path = Path("demo-run")
    device: str = "auto"
    seed: int = 0
    num_images: int = 2048  # shapes drawn (90% train)
    image_size: int = 32  # training resolution (stored at its 76/64 margin)
    damsm_epochs: int = 4  # R-precision 27% after 4 (6% after 1); 8 epochs do not teach it shape (README)
    damsm_batch_size: int = 32
    encoder_image_size: int = 80  # DAMSM image encoder input (AttnGAN: 299; small for CPU speed)
    train_steps: int = 500
    batch_size: int = 32
    width: int = 16  # generator and discriminator base width, gf_dim = df_dim (DR-GAN: 64 and 32)
    damsm_lambda: float = 1.0  # weight of the DAMSM loss (DR-GAN birds: 5): lower lets D's realism shape the image
    lr_g: float = 4e-4  # generator learning rate (paper 2e-4), twice D's
    ema: float = 0.0  # no generator average: at 0.999 a 500-step average still weighs the initial G 61%
    inception_weights: Path | None = None  # TF-Inception weights for FID/IS (else the torch hub cache is checked)

    @classmethod
    def quick(cls, out: Path) -> DemoSettings:
        """A minute-long smoke version (the pipeline runs; the model does not learn much)."""
        return cls(out=out, num_images=256, damsm_epochs=1, train_steps=4, batch_size=8, width=8, damsm_batch_size=16)


@dataclass
class Stage:
    name: str
    args: list[str]  # after `t2itool`

    def command_line(self) -> str:
        return "t2itool " + " ".join(shlex.quote(arg) for arg in self.args)


@dataclass
class DemoReport:
    out: Path
    grid: Path
    scores: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)

    def metric(self, name: str) -> dict[str, Any]:
        return next(record for record in self.scores if record["metric"] == name)


def inception_weights_available(settings: DemoSettings) -> Path | None:
    """The TF-Inception weight file, if given or already in the torch hub cache (the demo never downloads it)."""
    from t2itool.metrics.extractors import TF_WEIGHTS_FILE, hub_checkpoint_dir

    if settings.inception_weights is not None:
        return Path(settings.inception_weights)
    cached = hub_checkpoint_dir() / TF_WEIGHTS_FILE
    return cached if cached.is_file() else None


def stages(settings: DemoSettings, run_dir: Path | None = None) -> list[Stage]:
    """The commands, in order. `run_dir` (known after training) completes the sample and score stages."""
    out = settings.out
    data, damsm, samples = out / "shapes.h5", out / "damsm", out / "samples"
    stored = settings.image_size * 76 // 64
    run = str(run_dir) if run_dir is not None else str(out / "runs" / "<run>")
    width = str(settings.width)
    score = ["score", str(samples), "--data", str(data), "--r-precision", "--damsm", str(damsm / "damsm.pt")]
    score += ["--shapes-agreement", "--device", settings.device, "--json"]
    weights = inception_weights_available(settings)
    if weights is not None:
        score += ["--fid", "--is", "--inception-weights", str(weights)]
    prep = ["prep", "shapes", "--out", str(data), "--num-images", str(settings.num_images)]
    prep += ["--image-size", str(stored), "--seed", str(settings.seed)]
    pretrain = ["pretrain-damsm", "--data", str(data), "--out", str(damsm), "--epochs", str(settings.damsm_epochs)]
    pretrain += ["--batch-size", str(settings.damsm_batch_size), "--backbone-weights", "random"]
    pretrain += ["--encoder-image-size", str(settings.encoder_image_size), "--workers", "0"]
    pretrain += ["--seed", str(settings.seed), "--device", settings.device]
    train = ["train", MODEL, "--data", str(data), "--damsm", str(damsm / "damsm.pt"), "--out", str(out / "runs")]
    train += ["--steps", str(settings.train_steps), "--image-size", str(settings.image_size)]
    train += ["--batch-size", str(settings.batch_size), "--set", f"gf_dim={width}", "--set", f"df_dim={width}"]
    train += ["--set", f"damsm_lambda={settings.damsm_lambda:g}", "--set", f"lr_g={settings.lr_g:g}"]
    train += ["--ema", f"{settings.ema:g}", "--workers", "1", "--grid-every", "100"]
    train += ["--snapshot-every", str(settings.train_steps), "--seed", str(settings.seed), "--device", settings.device]
    sample = ["sample", run, "--out", str(samples), "--split", "test", "--data", str(data)]
    sample += ["--device", settings.device, "--seed", str(settings.seed)]
    return [
        Stage("prep", prep),
        Stage("pretrain-damsm", pretrain),
        Stage("train", train),
        Stage("sample", sample),
        Stage("score", score),
    ]


def _prepare_folder(out: Path) -> None:
    """Start from an empty folder; a previous demo's folder (it has the marker) is cleared, anything else refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise T2IError(f"--out {out}: folder exists and is not a previous demo's; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _run(stage: Stage, echo: Callable[[str], None], capture: bool = False) -> str:
    echo(f"$ {stage.command_line()}")
    command = [sys.executable, "-m", "t2itool", *stage.args]
    result = subprocess.run(command, stdout=subprocess.PIPE if capture else None, text=True, check=False)
    if result.returncode != 0:
        raise T2IError(
            f"demo stage '{stage.name}' failed (exit {result.returncode}); rerun the command above to see why"
        )
    return result.stdout or ""


def run_demo(settings: DemoSettings, echo: Callable[[str], None] = print) -> DemoReport:
    """Run every stage and return what the closing report shows."""
    out = settings.out
    _prepare_folder(out)
    (out / MARKER).write_text(json.dumps({k: str(v) for k, v in asdict(settings).items()}, indent=2) + "\n")
    seconds: dict[str, float] = {}
    planned = stages(settings)
    for stage in planned[:3]:  # prep, pretrain-damsm, train
        started = time.perf_counter()
        _run(stage, echo)
        seconds[stage.name] = time.perf_counter() - started
    runs = sorted(p for p in (out / "runs").iterdir() if p.is_dir())
    if not runs:
        raise T2IError(f"{out / 'runs'}: training wrote no run folder")
    run_dir = runs[-1]
    sample, score = stages(settings, run_dir)[3:]
    started = time.perf_counter()
    _run(sample, echo)
    seconds["sample"] = time.perf_counter() - started
    started = time.perf_counter()
    records = json.loads(_run(score, echo, capture=True))
    seconds["score"] = time.perf_counter() - started
    grid = captioned_grid(out / "samples", out / "grid-with-captions.png")
    return DemoReport(out=out, grid=grid, scores=records, seconds=seconds)


def captioned_grid(samples: Path, path: Path, count: int = 16, columns: int = 4, cell: int = 128) -> Path:
    """The first `count` held-out samples enlarged to `cell` px (nearest: the pixels the model drew), each with its
    caption written under it, so that a person can judge the agreement at a glance."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    records = [json.loads(line) for line in (samples / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    records = records[:count]
    font = ImageFont.load_default()
    text_height = 4 * 12 + 6  # up to four lines of the default font
    rows = (len(records) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * (cell + 8) + 8, rows * (cell + text_height + 8) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for index, record in enumerate(records):
        row, column = divmod(index, columns)
        x, y = 8 + column * (cell + 8), 8 + row * (cell + text_height + 8)
        with Image.open(samples / record["file"]) as image:
            canvas.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        lines = textwrap.wrap(record["caption"], width=cell // 6)[:4]
        draw.multiline_text((x, y + cell + 3), "\n".join(lines), fill="black", font=font, spacing=1)
    canvas.save(path, format="PNG")
    return path


def format_report(report: DemoReport, settings: DemoSettings) -> list[str]:
    """The closing lines: where to look, the metrics, and the agreement beside chance."""
    lines = [f"held-out samples with their captions: {report.grid}  (all of them: {report.out / 'samples'})"]
    precision = report.metric("r_precision")
    lines.append(
        f"R-precision: {100 * precision['value']:.1f}% ± {100 * (precision['std'] or 0):.1f} "
        f"(chance 1%; DAMSM with a random backbone, {settings.damsm_epochs} epochs)"
    )
    for name in ("colour_agreement", "shape_agreement"):
        record = report.metric(name)
        ratio = record["value"] / record["chance"] if record["chance"] else float("nan")
        lines.append(
            f"{name.replace('_', ' ')}: {100 * record['value']:.1f}% of {record['num_scored']} held-out captions "
            f"(chance {100 * record['chance']:.1f}%, {ratio:.1f}x)"
        )
    fidelity = [r for r in report.scores if r["metric"] in ("fid", "is")]
    if fidelity:
        lines.extend(f"{r['metric'].upper()}: {r['value']:.3f}" for r in fidelity)
    else:
        from t2itool.metrics.extractors import TF_WEIGHTS_FILE, TF_WEIGHTS_URL, hub_checkpoint_dir

        lines.append(
            f"FID/IS skipped: put {TF_WEIGHTS_FILE} ({TF_WEIGHTS_URL}) in {hub_checkpoint_dir()}/ "
            "or pass --inception-weights PATH"
        )
    total = sum(report.seconds.values())
    lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items()) + f"; total {total:.0f} s")
    return lines
