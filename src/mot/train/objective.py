"""What the trainer optimises in each setting, behind one small interface.

* :class:`NextTokenObjective` (Chameleon, Chameleon+Speech): next-token cross-entropy on every
  trained position, normalised by the number of trained positions of the whole global batch.
* :class:`TransfusionObjective`: ``LM + loss_weight * diffusion``. The LM term is normalised by the
  global number of next-token positions, the diffusion term (the mean squared error of the
  predicted noise, or velocity for ``diffusion.objective=flow``, one value per image) by the global
  number of images.

Per-modality sums and counts are what both report: for Transfusion the image modality's entry is
the diffusion loss (summed per-image values, and the number of images), the others the LM loss.
(Image positions have no next-token target in this setting, so nothing else lands there.)

The trainer calls ``normalisers`` on the host before the step (one all-reduce makes them global),
then for each micro-batch ``model_inputs`` -> forward -> ``loss`` -> ``to_backpropagate``.
Random draws are keyed by ``(seed, step, rank, micro-batch)``, never global state (exact resume).
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch

from ..data.packing import IGNORE, PackedBatch
from ..model.transformer import ModelOutput
from ..objectives.autoregressive import LossBreakdown, next_token_loss
from ..objectives.diffusion import (NoisedLatents, diffusion_loss_per_image, draw_timesteps, generator_for,
                                    noise_latents)
from ..objectives.schedulers import make_scheduler
from ..runs.recipe import DiffusionConfig

Run = Callable[[dict], ModelOutput]
#: distinct purposes of keyed random streams
_TRAIN_TIMESTEPS, _TRAIN_NOISE, _VALID_NOISE = 0, 1, 2


class NextTokenObjective:
    """Next-token cross-entropy everywhere (the Chameleon settings)."""

    def __init__(self, modalities: Sequence[str]):
        self.num_modalities = len(modalities)

    def normalisers(self, batches: Sequence[PackedBatch]) -> torch.Tensor:
        """``[M]`` float64: what each modality's summed loss is divided by (here all the same)."""
        count = sum(int((b.targets != IGNORE).sum()) for b in batches)
        return torch.full((self.num_modalities,), float(count), dtype=torch.float64)

    def model_inputs(self, batch: PackedBatch, key: Sequence[int]) -> Tuple[dict, None]:
        return batch.model_inputs(), None

    def loss(self, output: ModelOutput, batch: PackedBatch, extra: None) -> LossBreakdown:
        return next_token_loss(output.logits, batch.targets, batch.modality_ids, self.num_modalities)

    def to_backpropagate(self, loss: LossBreakdown, global_normalisers: torch.Tensor, world_size: int) -> torch.Tensor:
        # FSDP averages gradients over ranks; the world size undoes it, so the loss is the global mean
        return loss.sum_per_modality.sum() * (world_size / max(float(global_normalisers[0]), 1.0))

    def total(self, sums: torch.Tensor, counts: torch.Tensor) -> float:
        """The logged loss: the mean over every trained position."""
        return float(sums.sum() / counts.sum().clamp(min=1))

    def validation_loss(self, run: Run, batch: PackedBatch, index: int) -> LossBreakdown:
        return self.loss(run(batch.model_inputs()), batch, None)


class TransfusionObjective:
    """Next-token loss on text plus ``loss_weight`` x the per-image diffusion loss."""

    def __init__(self, modalities: Sequence[str], latent_modality: str, config: DiffusionConfig,
                 seed: int, rank: int):
        self.num_modalities = len(modalities)
        self.image = list(modalities).index(latent_modality)
        self.config, self.seed, self.rank = config, seed, rank
        self.scheduler = make_scheduler(config.objective, config.train_steps, config.schedule)
        weights = torch.ones(self.num_modalities, dtype=torch.float64)
        weights[self.image] = config.loss_weight
        self.weights = weights
        self._is_image = torch.arange(self.num_modalities) == self.image

    def normalisers(self, batches: Sequence[PackedBatch]) -> torch.Tensor:
        """``[M]`` float64: next-token positions for the LM modalities, images for the image one."""
        positions = sum(int((b.targets != IGNORE).sum()) for b in batches)
        images = sum(len(b.latents) for b in batches)
        return torch.where(self._is_image, float(images), float(positions)).to(torch.float64)

    def model_inputs(self, batch: PackedBatch, key: Sequence[int]) -> Tuple[dict, NoisedLatents]:
        config = self.config
        timesteps = draw_timesteps(len(batch.latents), config.train_steps, generator_for((*key, _TRAIN_TIMESTEPS)),
                                   batch.latent_before_text, config.noise_cap_fraction, config.noise_cap_timestep)
        noised = noise_latents(batch.latents, timesteps, self.scheduler,
                               generator_for((*key, _TRAIN_NOISE), batch.latents.device))
        return self._inputs(batch, noised), noised

    @staticmethod
    def _inputs(batch: PackedBatch, noised: NoisedLatents) -> dict:
        return dict(batch.model_inputs(), latents=noised.noisy, latent_starts=batch.latent_starts,
                    timesteps=noised.timesteps)

    def loss(self, output: ModelOutput, batch: PackedBatch, noised: NoisedLatents) -> LossBreakdown:
        per_image = diffusion_loss_per_image(output.latent_prediction, noised.target)  # [N]
        return self._breakdown(output, batch, per_image)

    def _breakdown(self, output: ModelOutput, batch: PackedBatch, per_image: torch.Tensor) -> LossBreakdown:
        lm = next_token_loss(output.logits, batch.targets, batch.modality_ids, self.num_modalities)
        is_image = self._is_image.to(per_image.device)
        sums = torch.where(is_image, per_image.sum(), lm.sum_per_modality)
        counts = torch.where(is_image, torch.tensor(len(per_image), device=per_image.device),
                             lm.count_per_modality)
        total = lm.total + self.config.loss_weight * per_image.sum() / max(len(per_image), 1)
        return LossBreakdown(total, sums, counts)

    def to_backpropagate(self, loss: LossBreakdown, global_normalisers: torch.Tensor, world_size: int) -> torch.Tensor:
        scale = (self.weights * world_size / global_normalisers.clamp(min=1.0)).to(loss.sum_per_modality)
        return (loss.sum_per_modality * scale).sum()

    def total(self, sums: torch.Tensor, counts: torch.Tensor) -> float:
        """The logged loss: LM mean + ``loss_weight`` x the mean per-image diffusion loss."""
        sums, counts = sums.double().cpu(), counts.double().cpu()
        lm = float(sums[~self._is_image].sum() / counts[~self._is_image].sum().clamp(min=1))
        return lm + self.config.loss_weight * float(sums[self.image] / counts[self.image].clamp(min=1))

    def validation_loss(self, run: Run, batch: PackedBatch, index: int) -> LossBreakdown:
        """LM loss with clean images as context; diffusion loss averaged over the fixed grid of
        ``valid_timesteps``, with the same noise for an image at every timestep and evaluation."""
        clean = NoisedLatents(batch.latents, torch.zeros_like(batch.latents),
                              torch.zeros(len(batch.latents), dtype=torch.int64, device=batch.latents.device))
        output = run(self._inputs(batch, clean))
        generator = generator_for((self.seed, _VALID_NOISE, index, self.rank), batch.latents.device)
        noise = torch.randn(batch.latents.shape, generator=generator, device=batch.latents.device)
        per_image: List[torch.Tensor] = []
        for timestep in self.config.valid_timesteps:
            timesteps = torch.full((len(batch.latents),), timestep, dtype=torch.int64)
            noisy = self.scheduler.add_noise(batch.latents.float(), noise, timesteps)
            target = self.scheduler.target(batch.latents.float(), noise)
            prediction = run(self._inputs(batch, NoisedLatents(noisy, target, timesteps.to(noise.device))))
            per_image.append(diffusion_loss_per_image(prediction.latent_prediction, target))
        return self._breakdown(output, batch, torch.stack(per_image).mean(dim=0))


def make_objective(config, modalities: Sequence[str], rank: int):
    """The objective of ``config`` (a resolved ``TrainConfig``)."""
    if config.data.setting == "transfusion":
        return TransfusionObjective(modalities, config.model.latent.modality, config.diffusion, config.seed,
                                    rank)
    return NextTokenObjective(modalities)
