"""A small two-stage model that exercises every part of the engine (registered as a plugin by tests/test_engine.py):

- two noise streams: "z" (truncated when sampling) and "ca" (conditioning-augmentation eps, never truncated);
- stage 2 holds the stage-1 generator as a frozen sub-module, loaded with `--init-from STAGE1_RUN:generator`;
- an epoch learning-rate schedule (halved every `lr_halve_epochs` epochs);
- two discriminator update phases per step, each on its own half of the batch (as XMC-GAN);
- a batch-coupled generator term over the global batch (a contrastive loss through `ctx.gather(..., grad=True)`);
- batch norm in G and D (synchronised across processes by the loop);
- either text source: DAMSM or precomputed sentence features.
It is also the example of docs/training.md ("Adding a model"), in a more compact form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.encoders.features import TextFeatures
from t2itool.models.blocks import ConditioningAugmentation, hinge_d_loss, hinge_g_loss, kl_loss
from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch, GANRecipe, ModelConfig, TextNeeds, param
from t2itool.models.registry import GeneratorOutput, ModelSpec, register_model
from t2itool.noise import NoiseStream


@dataclass
class ToyConfig(ModelConfig):
    image_size: int = param(16, "final resolution of this stage (stage 2 refines a stage 1 of half the size)", min=8)
    stage: int = param(1, "1: the base generator; 2: a refiner on top of a frozen stage 1", choices=(1, 2))
    width: int = param(8, "channels", min=1)
    text_dim: int = param(256, "sentence width", min=1)
    z_dim: int = param(8, "noise size", min=1)
    ca_dim: int = param(8, "conditioning-augmentation size", min=1)
    lr: float = param(1e-3, "Adam learning rate of G and D", above=0)
    lr_halve_epochs: int = param(1, "halve the learning rates every N epochs", min=1)


class Stage1(nn.Module):
    def __init__(self, c: ToyConfig, size: int) -> None:
        super().__init__()
        self.size = size
        self.ca = ConditioningAugmentation(c.text_dim, c.ca_dim, "glu")
        self.fc = nn.Linear(c.z_dim + c.ca_dim, c.width * 4 * 4)
        self.body = nn.Sequential(nn.BatchNorm2d(c.width), nn.ReLU(), nn.Conv2d(c.width, 3, 3, 1, 1), nn.Tanh())
        self.width = c.width

    def forward(self, z: torch.Tensor, eps: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, ...]:
        condition, mu, logvar = self.ca(sentence, eps)
        x = self.fc(torch.cat([z, condition], 1)).view(-1, self.width, 4, 4)
        x = F.interpolate(x, size=self.size, mode="nearest")
        return self.body(x), mu, logvar


class Stage2(nn.Module):
    def __init__(self, c: ToyConfig) -> None:
        super().__init__()
        self.stage1 = Stage1(c, c.image_size // 2)
        self.refine = nn.Sequential(nn.Conv2d(3, c.width, 3, 1, 1, bias=False), nn.BatchNorm2d(c.width), nn.ReLU(),
                                    nn.Conv2d(c.width, 3, 3, 1, 1), nn.Tanh())  # fmt: skip

    def forward(self, z: torch.Tensor, eps: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, ...]:
        low, mu, logvar = self.stage1(z, eps, sentence)
        return self.refine(F.interpolate(low.detach(), scale_factor=2, mode="nearest")), mu, logvar


class Discriminator(nn.Module):
    def __init__(self, c: ToyConfig, size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, c.width, 4, 2, 1, bias=False), nn.BatchNorm2d(c.width),
                                      nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # fmt: skip
        self.logit = nn.Linear(c.width, 1)
        self.project = nn.Linear(c.text_dim, c.width)
        self.size = size

    def forward(self, images: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert images.shape[-1] == self.size, tuple(images.shape)
        h = self.features(images)
        return self.logit(h).squeeze(1) + (h * self.project(sentence)).sum(1), h


def build_generator(c: ToyConfig) -> nn.Module:
    return Stage1(c, c.image_size) if c.stage == 1 else Stage2(c)


def generate(generator: nn.Module, noise: dict[str, torch.Tensor], text: TextFeatures) -> GeneratorOutput:
    image, _, _ = generator(noise["z"], noise["ca"], text.sentence)
    return GeneratorOutput([image])


class ToyRecipe(GANRecipe):
    config: ToyConfig

    def text_needs(self) -> TextNeeds:
        return TextNeeds(sentence_dim=self.config.text_dim)

    def init_targets(self) -> dict[str, str]:
        return {"generator": "generator.stage1"} if self.config.stage == 2 else {}  # stage 2 starts from stage 1

    def sub_batches(self) -> int:
        return 2  # one discriminator update per half of the batch

    def frozen_modules(self) -> tuple[str, ...]:
        return ("generator.stage1",) if self.config.stage == 2 else ()

    def lr_schedule(self, epoch: int) -> dict[str, float]:
        factor = 0.5 ** (epoch // self.config.lr_halve_epochs)
        return {"generator": factor, "discriminator": factor}

    def build_networks(self) -> dict[str, nn.Module]:
        return {
            "generator": build_generator(self.config),
            "discriminator": Discriminator(self.config, self.config.image_size),
        }

    def build_optimizers(self, nets, text_encoder) -> dict[str, torch.optim.Optimizer]:
        trainable = [p for p in nets["generator"].parameters() if p.requires_grad]
        lr = self.config.lr
        return {
            "generator": torch.optim.Adam(trainable, lr=lr, betas=(0.5, 0.999)),
            "discriminator": torch.optim.Adam(nets["discriminator"].parameters(), lr=lr, betas=(0.5, 0.999)),
        }

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        generator, disc = ctx.nets["generator"], ctx.nets["discriminator"]
        sentence = ctx.text(batch).sentence
        fake, mu, logvar = generator(ctx.noise(batch, "z"), ctx.noise(batch, "ca"), sentence)

        # Two discriminator updates, each on its own half of the batch.
        losses_d, size = [], len(batch) // 2
        for part, half in enumerate(batch.split(2)):
            rows = slice(part * size, (part + 1) * size)
            with ctx.update("discriminator") as phase:
                real_logits, _ = disc(half.images[-1], sentence[rows])
                fake_logits, _ = disc(fake[rows].detach(), sentence[rows])
                loss_d = hinge_d_loss(real_logits, fake_logits)
                phase.backward(loss_d, "loss_d")
            losses_d.append(loss_d.detach())

        # Generator: hinge + KL + a contrastive term between fake and real D features over the global batch.
        with ctx.update("generator") as phase:
            fake_logits, fake_features = disc(fake, sentence)
            _, real_features = disc(batch.images[-1], sentence)
            all_fake = F.normalize(ctx.gather(fake_features, grad=True), dim=1)
            all_real = F.normalize(ctx.gather(real_features.detach()), dim=1)
            logits = all_fake @ all_real.T / 0.1
            contrastive = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))
            loss_g = hinge_g_loss(fake_logits) + kl_loss(mu, logvar) + 0.1 * contrastive
            phase.backward(loss_g, "loss_g")
        return {"loss_d": torch.stack(losses_d).mean(), "loss_g": loss_g.detach(), "contrastive": contrastive.detach()}


SPEC = register_model(
    ModelSpec(
        name="toy-staged",
        summary="engine test model: two stages, two noise streams, frozen stage 1, sub-batch D phases",
        paper="none (tests/toy_staged_model.py)",
        config_cls=ToyConfig,
        presets={"birds": {}},
        recipe_cls=ToyRecipe,
        build_generator=build_generator,
        generate=generate,
        noise=lambda c: [NoiseStream("z", c.z_dim), NoiseStream("ca", c.ca_dim, truncated=False)],
        default_truncation=lambda c: 0.7,
    )
)
