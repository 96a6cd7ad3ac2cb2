"""`pretrain-damsm`: AttnGAN's DAMSM pretraining (taoxugit/AttnGAN code/pretrain_DAMSM.py, cfg/DAMSM/*.yml) over a
prepared data file.

One flat loop: per epoch, a fresh Adam (AttnGAN re-creates it every epoch) at the epoch's learning rate, the DAMSM
loss on random crops, the text encoder's gradients clipped, then the test loss, test R-precision, a stats line
and, every `checkpoint_every` epochs and at the end, a checkpoint that `--resume` continues exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from t2itool.data.dataset import CaptionDataset
from t2itool.data.store import Store
from t2itool.encoders.attention_maps import render_attention, word_attention
from t2itool.encoders.checkpoint import (
    CHECKPOINT_NAME,
    check_vocabulary,
    read_damsm,
    save_damsm,
)
from t2itool.encoders.image import ImageEncoder, load_backbone
from t2itool.encoders.losses import sentence_loss, word_loss
from t2itool.encoders.rprecision import r_precision
from t2itool.encoders.text import TextEncoder
from t2itool.errors import T2IError
from t2itool.fileio import append_jsonl, atomic_write_json

# AttnGAN cfg/DAMSM/{bird,coco}.yml; the rest of the schedule is shared.
PRESETS: dict[str, dict[str, Any]] = {
    "birds": {"epochs": 600, "max_words": 18, "checkpoint_every": 50},
    "coco": {"epochs": 600, "max_words": 15, "checkpoint_every": 5},
}


TRAINED = "+trained"  # appended to the recorded backbone when --train-backbone trained it


@dataclass
class PretrainConfig:
    data: str  # prepared HDF5 file
    out: str  # folder for damsm.pt, checkpoints/ and stats.jsonl
    preset: str = "birds"  # birds | coco: epochs, max_words, checkpoint interval
    epochs: int | None = None  # total epochs (preset: 600)
    batch_size: int = 48
    lr: float = 2e-3  # initial learning rate (ENCODER_LR)
    lr_decay: float = 0.98  # per epoch, while lr > lr * lr_floor
    lr_floor: float = 0.1  # as a fraction of the initial lr
    betas: tuple[float, float] = (0.5, 0.999)
    grad_clip: float = 0.25  # norm over the whole text encoder (embedding + LSTM), as AttnGAN's RNN_GRAD_CLIP
    reset_optimizer: bool = True  # AttnGAN re-creates Adam every epoch; False keeps its moments
    max_words: int | None = None  # caption length cap (preset: 18 birds, 15 coco)
    gamma1: float = 4.0
    gamma2: float = 5.0
    gamma3: float = 10.0
    encoder_image_size: int = 299  # crop fed to the image encoder (from a 76/64 larger resize, AttnGAN's 355 -> 299)
    backbone_weights: str = "imagenet"  # imagenet (download) | PATH | random
    train_backbone: bool = False  # train the Inception-v3 backbone too (AttnGAN: frozen)
    checkpoint_every: int | None = None  # epochs (preset: 50 birds, 5 coco)
    attention_every: int | None = None  # epochs between attention-map images (None: checkpoint_every; 0: never)
    attention_captions: int = 4  # test captions (the first test images') drawn in each attention-map image
    val_batches: int = 50  # test batches for the test loss (AttnGAN validates on ~50)
    rp_images: int | None = None  # test images for R-precision per epoch (None: all)
    workers: int = 2  # DataLoader workers
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: str | None = None  # a checkpoint of this run to continue from

    def resolved(self) -> PretrainConfig:
        """Fill the preset's values and check ranges; errors name the flag."""
        if self.preset not in PRESETS:
            raise T2IError(f"--preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        preset = PRESETS[self.preset]
        config = PretrainConfig(**{**asdict(self), "betas": tuple(self.betas)})
        for key in ("epochs", "max_words", "checkpoint_every"):
            if getattr(config, key) is None:
                setattr(config, key, preset[key])
        if config.attention_every is None:
            config.attention_every = config.checkpoint_every
        for flag, value in (
            ("--attention-every", config.attention_every),
            ("--attention-captions", config.attention_captions),
        ):
            if value < 0:
                raise T2IError(f"{flag} {value}: must be at least 0")
        for flag, value in (
            ("--epochs", config.epochs),
            ("--batch-size", config.batch_size),
            ("--max-words", config.max_words),
            ("--checkpoint-every", config.checkpoint_every),
        ):
            if value < 1:
                raise T2IError(f"{flag} {value}: must be at least 1")
        if not config.lr > 0:
            raise T2IError(f"--lr {config.lr}: must be positive")
        if config.encoder_image_size < 75:
            raise T2IError(f"--encoder-image-size {config.encoder_image_size}: Inception-v3 needs at least 75")
        return config


@dataclass
class PretrainResult:
    checkpoint: Path  # out/damsm.pt
    epoch: int
    stats: list[dict[str, Any]]


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise T2IError(f"--device {requested}: CUDA is not available on this machine (use --device cpu)")
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise T2IError(f"--device {requested!r}: expected auto, cpu, cuda or cuda:N") from exc


def epoch_lr(config: PretrainConfig, epoch: int) -> float:
    """AttnGAN's rule: after each epoch, lr *= decay while lr > floor (so it settles just below the floor)."""
    lr, floor = config.lr, config.lr * config.lr_floor
    for _ in range(epoch):
        if lr > floor:
            lr *= config.lr_decay
    return lr


def clip_text_gradients(text_encoder: TextEncoder, max_norm: float) -> torch.Tensor:
    """Clip the gradient norm of the whole text encoder, embedding and LSTM together: AttnGAN's pretrain_DAMSM.py
    clips `rnn_model.parameters()`, and its RNN_ENCODER holds the embedding. Returns the norm before clipping."""
    return torch.nn.utils.clip_grad_norm_(list(text_encoder.parameters()), max_norm)


def _to_device(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, ...]:
    return (
        batch["images"][0].to(device, non_blocking=True),
        batch["tokens"].to(device),
        torch.as_tensor(batch["length"]),
        torch.as_tensor(batch["class_id"]).to(device),
    )


def _losses(
    text_encoder: TextEncoder, image_encoder: ImageEncoder, batch: dict[str, Any], config: PretrainConfig, device
) -> tuple[torch.Tensor, torch.Tensor]:
    images, tokens, lengths, class_ids = _to_device(batch, device)
    regions, code = image_encoder(images)
    words, sentence = text_encoder(tokens, lengths)
    gammas = (config.gamma1, config.gamma2, config.gamma3)
    return (
        word_loss(regions, words, lengths, class_ids, *gammas),
        sentence_loss(code, sentence, class_ids, config.gamma3),
    )


@torch.no_grad()
def evaluate(
    text_encoder: TextEncoder,
    image_encoder: ImageEncoder,
    test_set: CaptionDataset,
    config: PretrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Test loss over the first `val_batches` batches, and R-precision of real test images against their captions."""
    text_encoder.eval()
    image_encoder.eval()
    loader = DataLoader(test_set, batch_size=config.batch_size, shuffle=False, num_workers=config.workers)
    word_total = sentence_total = 0.0
    batches = 0
    for batch in loader:
        if batches >= config.val_batches:
            break
        if len(batch["tokens"]) < 2:  # a lone leftover item has no negatives
            continue
        loss_w, loss_s = _losses(text_encoder, image_encoder, batch, config, device)
        word_total, sentence_total, batches = word_total + loss_w.item(), sentence_total + loss_s.item(), batches + 1
    count = len(test_set) if config.rp_images is None else min(config.rp_images, len(test_set))
    rng = np.random.default_rng(config.seed)
    store = test_set.store
    captions = []  # one caption of each scored test image, drawn once from the seed
    for position in range(count):
        options = store.caption_indices(int(test_set.indices[position]))
        captions.append(options[int(rng.integers(len(options)))])
    real = _RealImages(test_set, list(range(count)))
    damsm = _Encoders(text_encoder, image_encoder)
    result = r_precision(damsm, real, captions, store, device=device, max_words=config.max_words, seed=config.seed)
    return {
        "test_word_loss": word_total / max(batches, 1),
        "test_sentence_loss": sentence_total / max(batches, 1),
        "test_loss": (word_total + sentence_total) / max(batches, 1),
        "r_precision": result.mean,
        "r_precision_std": result.std,
        "r_precision_images": result.num_images,
    }


@torch.no_grad()
def write_attention_maps(
    text_encoder: TextEncoder,
    image_encoder: ImageEncoder,
    test_set: CaptionDataset,
    config: PretrainConfig,
    device: torch.device,
    path: Path,
) -> Path | None:
    """AttnGAN-style attention maps (pretrain_DAMSM.py writes them during training) for the first test images'
    captions: `path`, one row per caption. The captions are the test set's seeded draws, the same every epoch."""
    count = min(config.attention_captions, len(test_set))
    if count == 0:
        return None
    text_encoder.eval()
    image_encoder.eval()
    items = [test_set[position] for position in range(count)]
    images = torch.stack([item["images"][0] for item in items]).to(device)
    tokens = torch.stack([torch.as_tensor(item["tokens"]) for item in items]).to(device)
    lengths = torch.as_tensor([int(item["length"]) for item in items])
    regions, _ = image_encoder(images)
    words, _ = text_encoder(tokens, lengths)
    attention = word_attention(regions, words, lengths, config.gamma1).cpu()
    vocab = test_set.store.vocab.words
    captions = [[vocab[int(t)] for t in tokens[row, : int(lengths[row])]] for row in range(count)]
    return render_attention(images.cpu(), attention, captions, path)


@dataclass
class _Encoders:
    text_encoder: TextEncoder
    image_encoder: ImageEncoder


class _RealImages:
    """Centre crops of test images, in [-1, 1]."""

    def __init__(self, dataset: CaptionDataset, positions: list[int]) -> None:
        self.dataset, self.positions = dataset, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.dataset[self.positions[k]]["images"][0]


def pretrain(
    config: PretrainConfig,
    log: Callable[[str], None] = print,
    progress: Any = None,
) -> PretrainResult:
    """Run (or continue) DAMSM pretraining; `progress(total, advance)` hooks a progress bar if given."""
    config = config.resolved()
    device = pick_device(config.device)
    out = Path(config.out)
    store = Store(config.data)
    crop = config.encoder_image_size
    train_set = CaptionDataset(config.data, "train", (crop,), config.max_words, augment=True, seed=config.seed)
    test_set = CaptionDataset(config.data, "test", (crop,), config.max_words, augment=False, seed=config.seed)
    if len(train_set) < config.batch_size:
        raise T2IError(
            f"--batch-size {config.batch_size}: larger than the {len(train_set)} training images of {config.data}"
        )

    # Encoders: fresh (backbone as asked) or from the checkpoint being resumed.
    start_epoch, optimizer_state = 0, None
    if config.resume is not None:
        file, record = read_damsm(config.resume)
        check_vocabulary(record, store, f"--resume {file}")
        state = record.get("pretrain_state")
        if state is None:
            raise T2IError(f"--resume {file}: this checkpoint has no pretraining state (imported or foreign)")
        text_encoder = TextEncoder.from_config(record["text_encoder_config"])
        image_encoder = ImageEncoder.from_config(record["image_encoder_config"])
        text_encoder.load_state_dict(record["text_encoder"])
        image_encoder.load_state_dict(record["image_encoder"])
        backbone, start_epoch, optimizer_state = record["backbone"], int(record["epoch"]), state.get("optimizer")
        if state["seed"] != config.seed or state["batch_size"] != config.batch_size:
            log(
                f"warning: resuming with seed/batch size {config.seed}/{config.batch_size}, "
                f"the run used {state['seed']}/{state['batch_size']}: the continuation will differ"
            )
    else:
        torch.manual_seed(config.seed)
        text_encoder = TextEncoder(len(store.vocab))
        image_encoder = ImageEncoder(text_encoder.output_dim, crop)
        backbone = load_backbone(image_encoder, config.backbone_weights, config.seed)
    trainable = [*text_encoder.parameters(), *image_encoder.projection_parameters()]
    if config.train_backbone:
        image_encoder.unfreeze_backbone()
        trainable += image_encoder.backbone_parameters()
        backbone = backbone if backbone.endswith(TRAINED) else backbone + TRAINED
        origin = backbone.removesuffix(TRAINED)
        log(f"the Inception-v3 backbone ({origin}) trains with the projections (--train-backbone)")
    elif backbone == "random":
        log("warning: the DAMSM image encoder has a RANDOM Inception-v3 backbone (--backbone-weights random)")
    text_encoder.to(device)
    image_encoder.to(device)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {**asdict(config), "backbone": backbone, "device": str(device)})

    stats: list[dict[str, Any]] = []
    optimizer = None
    gammas = {"gamma1": config.gamma1, "gamma2": config.gamma2, "gamma3": config.gamma3}
    last_saved = None
    for epoch in range(start_epoch, config.epochs):
        # Everything random in an epoch is a function of (seed, epoch): resuming at an epoch boundary is exact.
        torch.manual_seed(config.seed * 1_000_003 + epoch)
        train_set.set_epoch(epoch)
        lr = epoch_lr(config, epoch)
        if optimizer is None or config.reset_optimizer:
            optimizer = torch.optim.Adam(trainable, lr=lr, betas=tuple(config.betas))
            if optimizer_state is not None and not config.reset_optimizer:
                optimizer.load_state_dict(optimizer_state)
            optimizer_state = None
        for group in optimizer.param_groups:
            group["lr"] = lr
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=config.workers,
            generator=torch.Generator().manual_seed(config.seed * 7_919 + epoch),
            persistent_workers=False,
        )
        text_encoder.train()
        image_encoder.train()
        started = time.perf_counter()
        word_sum = sentence_sum = 0.0
        steps = 0
        if progress is not None:
            progress(len(loader), 0)
        for batch in loader:
            loss_w, loss_s = _losses(text_encoder, image_encoder, batch, config, device)
            loss = loss_w + loss_s
            if not torch.isfinite(loss):
                raise T2IError(f"epoch {epoch + 1}, step {steps + 1}: non-finite DAMSM loss; try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_text_gradients(text_encoder, config.grad_clip)
            optimizer.step()
            word_sum, sentence_sum, steps = word_sum + loss_w.item(), sentence_sum + loss_s.item(), steps + 1
            if progress is not None:
                progress(len(loader), 1)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_word_loss": word_sum / steps,
            "train_sentence_loss": sentence_sum / steps,
            "train_loss": (word_sum + sentence_sum) / steps,
            **evaluate(text_encoder, image_encoder, test_set, config, device),
            "seconds": round(time.perf_counter() - started, 3),
        }
        append_jsonl(out / "stats.jsonl", record)
        stats.append(record)
        log(
            f"epoch {epoch + 1}/{config.epochs}  train {record['train_loss']:.3f}  test {record['test_loss']:.3f}  "
            f"R-precision {100 * record['r_precision']:.1f}% ± {100 * record['r_precision_std']:.1f}  "
            f"lr {lr:.2e}  {record['seconds']:.0f} s"
        )
        if config.attention_every and ((epoch + 1) % config.attention_every == 0 or epoch + 1 == config.epochs):
            target = out / "attention" / f"epoch{epoch + 1:04d}.png"
            write_attention_maps(text_encoder, image_encoder, test_set, config, device, target)
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            extra = {
                "pretrain_state": {
                    "optimizer": optimizer.state_dict(),
                    "seed": config.seed,
                    "batch_size": config.batch_size,
                    "config": {k: v for k, v in asdict(config).items() if isinstance(v, (int, float, str, bool))},
                },
                "last_stats": {k: v for k, v in record.items() if isinstance(v, (int, float))},
            }
            kwargs = {"store": store, "backbone": backbone, "gammas": gammas, "epoch": epoch + 1, "extra": extra}
            (out / "checkpoints").mkdir(exist_ok=True)
            save_damsm(out / "checkpoints" / f"damsm-epoch{epoch + 1:04d}.pt", text_encoder, image_encoder, **kwargs)
            last_saved = save_damsm(out / CHECKPOINT_NAME, text_encoder, image_encoder, **kwargs)
    if last_saved is None:  # nothing left to train: the resumed checkpoint is the result
        last_saved = out / CHECKPOINT_NAME
        if not last_saved.is_file():
            raise T2IError(f"--resume: already at epoch {start_epoch} >= --epochs {config.epochs}; nothing to do")
    return PretrainResult(checkpoint=last_saved, epoch=max(start_epoch, config.epochs), stats=stats)
