"""The training loop shared by the radiology trainers: one function per rank, ``run_rank``.

Cases are read, normalised exactly as inference normalises them (``normalise``: RAS,
3 x 3 x 4 mm, HU window) and, when the run reads them more than once, cached by a MONAI
``CacheDataset`` within a byte budget (``data.datasets``). Each step trains on class-balanced
random patches of ``NetworkConfig.roi_size`` (on the CPU one patch per forward and backward pass,
which bounds the activations' memory; the step is still the whole batch's); each epoch ends with a
sliding-window validation (mean foreground Dice), best-model tracking, a checkpoint and early
stopping. The same function runs alone (one process, CPU or one GPU) or as one rank of a
``torch.distributed`` data-parallel run (``ddp.train_ddp``).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.tasks import TrainContext, TrainResult

from ..clicks import GuidanceInputs, ImageInputs
from ..metrics import dice_per_case
from ..networks import load_weights, unet
from ..segmentation import sliding_window_logits
from .data import datasets, shard
from .job import Dist, TrainJob
from .progress import Progress

__all__ = ["CHECKPOINT", "WEIGHTS", "RankOutcome", "run_rank", "state_digest"]

#: File names in the run's workdir: the resumable checkpoint and the best weights (a plain state dict).
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"


@dataclass
class RankOutcome:
    """What a rank ends with: the run's result (complete on rank 0), and its final weights' digest."""

    result: TrainResult
    digest: str


def run_rank(ctx: TrainContext, job: TrainJob, dist: Dist | None = None) -> RankOutcome:
    """Train ``job`` on ``ctx.device``: the whole run, or this rank's part of a data-parallel one.

    Rank 0 (or the only process) reports through ``ctx`` after every iteration and epoch, writes
    ``CHECKPOINT`` after every epoch and ``WEIGHTS`` (the best weights so far, a plain state
    dict) whenever they improve. Gradients, losses, Dice sums and the stop decision are
    all-reduced, so every rank takes the same steps and ends with the same weights.
    """
    run = _Run(ctx, job, dist)
    for epoch in range(run.progress.epoch + 1, job.config.max_epochs + 1):
        started = time.monotonic()
        run.progress.epoch = epoch
        try:
            run.train_epoch()
            early = run.end_epoch(started)
        except _Stopped:
            run.progress.epoch = epoch - 1  # unfinished: a resumed run repeats it
            return run.finish(stopped=True)
        if early:
            break
    return run.finish(stopped=False)


class _Stopped(Exception):
    """The run was asked to stop (``ctx.should_stop()``)."""


class _Run:
    """The state of one rank's run: network, optimiser, data and progress."""

    def __init__(self, ctx: TrainContext, job: TrainJob, dist: Dist | None) -> None:
        import torch
        from monai.data import DataLoader
        from monai.losses import DiceCELoss

        self.ctx, self.job, self.dist, self.cfg = ctx, job, dist, job.config
        self.rank = dist.rank if dist else 0
        self.device = torch.device(ctx.device)
        self.amp = self.device.type == "cuda"  # mixed precision on CUDA; plain float32 on the CPU
        torch.manual_seed(self.cfg.seed)
        self.network: Any = unet(job.in_channels, len(job.labels), job.network)
        resume = ctx.resume_checkpoint()
        checkpoint: dict[str, Any] = {}
        if resume is not None:
            checkpoint = torch.load(str(resume), map_location="cpu", weights_only=True)
            self.network.load_state_dict(checkpoint["network"])
        elif job.init_weights is not None and self.cfg.pretrained:
            load_weights(self.network, job.init_weights, "cpu")
        self.network.to(self.device).train()
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=self.cfg.learning_rate, weight_decay=1e-5
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.progress = Progress()
        self.best: dict[str, Any] | None = None
        if checkpoint:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if checkpoint["scaler"] and self.amp:  # empty when saved on the CPU (scaling off)
                self.scaler.load_state_dict(checkpoint["scaler"])
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.learning_rate  # this run's choice, not the earlier run's
            self.progress = Progress(**checkpoint["progress"])
            self.progress.run_start_iteration = self.progress.iteration
            self.best = checkpoint["best_network"]
            self._log(f"resuming after epoch {self.progress.epoch} from {resume}")
        self.model: Any = self.network
        if dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.amp else None
            )
        torch.manual_seed(self.cfg.seed + 1 + self.rank)  # other patches on each rank, same weights
        train, self.val = datasets(job, *shard(job, dist), passes=job.config.max_epochs - self.progress.epoch)
        # Patches per forward and backward pass. A 96 x 96 x 64 patch's activations take ~350 MB:
        # the CPU (no faster on bigger batches) runs one at a time; a GPU takes the whole batch.
        self.patches_per_pass = 1 if self.device.type == "cpu" else 0
        self.loader = DataLoader(train, batch_size=self.cfg.train_batch_size, shuffle=True, num_workers=0)
        self.loss = DiceCELoss(include_background=True, to_onehot_y=True, softmax=True, reduction="mean")
        rng = np.random.default_rng([self.cfg.seed, self.rank])
        clicks = self.cfg.clicks
        self.inputs = ImageInputs() if clicks is None else GuidanceInputs(job.labels, clicks, rng)

    def train_epoch(self) -> None:
        """One pass over this rank's cases; raises ``_Stopped`` when asked to (checked every step)."""
        import torch

        sums = torch.zeros(4, dtype=torch.float64)  # loss sum, steps, patch Dice sum, patches scored
        self.progress.epoch_iteration = 0
        for batch in self.loader:
            if self._all_sum(torch.tensor([float(self.rank == 0 and self.ctx.should_stop())]))[0] > 0:
                raise _Stopped
            images = _plain(batch["image"]).to(self.device)
            labels = _plain(batch["label"]).to(self.device).long()
            inputs = self.inputs.for_training(images, labels, self.network)
            loss, predictions = self._step(inputs, labels)
            scores = [
                s for s in dice_per_case(predictions, labels[:, 0], len(self.job.labels)) if s is not None
            ]
            sums += torch.tensor([loss, 1.0, sum(scores), len(scores)], dtype=torch.float64)
            self.progress.iteration += 1
            self.progress.epoch_iteration += 1
            self.progress.train_loss = float(sums[0] / sums[1])
            self._report()
        sums = self._all_sum(sums)
        self.progress.train_loss = float(sums[0] / max(float(sums[1]), 1.0))
        self.progress.train_dice = float(sums[2] / sums[3]) if sums[3] > 0 else None

    def _step(self, inputs: Any, labels: Any) -> tuple[float, Any]:
        """One optimiser step on a batch, ``patches_per_pass`` patches at a time (0: all at once).

        Each part's loss is weighted by its share of the batch and the gradients add up, so the
        step is the whole batch's: the loss is a mean over patches of one size, and instance norm
        works per patch. A data-parallel run all-reduces once, on the batch's last backward pass.
        Returns the batch's loss and its predicted labels ``(B, X, Y, Z)``.
        """
        import contextlib

        import torch

        total = int(inputs.shape[0])
        per_pass = self.patches_per_pass or total
        loss_sum = 0.0
        predictions = []
        self.optimizer.zero_grad(set_to_none=True)
        for start in range(0, total, per_pass):
            part = slice(start, min(start + per_pass, total))
            share = (part.stop - part.start) / total
            last = part.stop == total
            sync = contextlib.nullcontext() if last or self.dist is None else self.model.no_sync()
            with sync:
                with torch.autocast(device_type=self.device.type, enabled=self.amp):
                    logits = self.model(inputs[part])
                    loss = self.loss(logits, labels[part])
                self.scaler.scale(loss * share).backward()
            loss_sum += float(loss.detach()) * share
            predictions.append(logits.detach().argmax(dim=1))
            del logits, loss  # this part's graph and activations go before the next part's forward
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_sum, torch.cat(predictions)

    def end_epoch(self, started: float) -> bool:
        """Validate, track the best weights, checkpoint, report; True to stop early.

        ``started`` is the ``time.monotonic()`` of the epoch's start, for the log line.
        """
        p, epoch = self.progress, self.progress.epoch
        p.val_dice = self._validate() if self.job.val else None
        if p.train_dice is not None and p.train_dice > p.best_train:
            p.best_train, p.best_train_epoch = p.train_dice, epoch
        key = p.val_dice if self.job.val else -(p.train_loss or 0.0)
        if key is not None and key > p.key:
            p.key, p.best_epoch, p.stale, p.best_val = key, epoch, 0, p.val_dice
            self.best = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
            if self.rank == 0:
                _save(self.best, self.job.workdir / WEIGHTS)
        else:
            p.stale += 1
        self._checkpoint()
        self._report(final=epoch == self.cfg.max_epochs)
        val = f" val dice {p.val_dice:.4f}" if p.val_dice is not None else ""
        seconds = time.monotonic() - started
        self._log(f"epoch {epoch}/{self.cfg.max_epochs} loss {p.train_loss:.4f}{val} ({seconds:.1f} s)")
        if 0 < self.cfg.early_stop_patience <= p.stale:
            self._log(f"early stopping: no improvement for {p.stale} epochs; best epoch {p.best_epoch}")
            return True
        return False

    def finish(self, stopped: bool) -> RankOutcome:
        final = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        weights = self.job.workdir / WEIGHTS
        if stopped:
            self._checkpoint()
            self._log(f"stopped at iteration {self.progress.iteration}; checkpoint saved")
        if self.rank == 0 and (self.best is None or not weights.is_file()):
            # no epoch finished: the weights as they are; resumed: the best of the earlier run
            _save(final if self.best is None else self.best, weights)
        stats = self.progress.stats(self.job, len(self.loader), final=not stopped)
        if self.rank == 0:
            self.ctx.report(stats)
        return RankOutcome(TrainResult(weights, self.progress.metrics(), stats), state_digest(final))

    def _validate(self) -> float | None:
        """Mean over validation cases of the foreground Dice, by sliding window (DeepEdit: no clicks).

        Alone, a stop request is honoured between cases; ranks of a data-parallel run validate
        shards of different sizes, so they finish the pass (they cannot agree case by case).
        """
        import torch

        self.network.eval()
        total = torch.zeros(2, dtype=torch.float64)
        for case in self.val:
            if self.dist is None and self.ctx.should_stop():
                raise _Stopped
            inputs = self.inputs.for_validation(_plain(case["image"])[None])
            net = self.job.network
            logits = sliding_window_logits(
                self.network, inputs, self.device, sw_batch_size=net.sw_batch_size, config=net
            )
            score = dice_per_case(logits.argmax(dim=1), _plain(case["label"]), len(self.job.labels))[0]
            total += torch.tensor([score or 0.0, float(score is not None)], dtype=torch.float64)
        self.network.train()
        total = self._all_sum(total)
        return float(total[0] / total[1]) if total[1] > 0 else None

    def _all_sum(self, values: Any) -> Any:
        """A CPU float64 tensor summed over all ranks."""
        if self.dist is None:
            return values
        import torch.distributed

        on_device = values.to(self.device, dtype=values.dtype)
        torch.distributed.all_reduce(on_device)
        return on_device.cpu()

    def _report(self, final: bool = False) -> None:
        if self.rank == 0:
            self.ctx.report(self.progress.stats(self.job, len(self.loader), final=final))

    def _log(self, line: str) -> None:
        if self.rank == 0:
            self.ctx.log(line)

    def _checkpoint(self) -> None:
        if self.rank != 0:
            return
        state = {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": {f.name: getattr(self.progress, f.name) for f in fields(self.progress)},
            "best_network": self.best,
        }
        _save(state, self.job.workdir / CHECKPOINT)


def _plain(tensor: Any) -> Any:
    """A MONAI ``MetaTensor`` as a plain tensor (no metadata tracking in the hot loop)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of a state dict's names and bytes: equal digests mean identical weights."""
    sha = hashlib.sha256()
    for name, tensor in state.items():
        sha.update(name.encode())
        sha.update(tensor.contiguous().numpy().tobytes())
    return sha.hexdigest()


def _save(state: Any, path: Path) -> None:
    """Write atomically, so a reader (or a resumed run) never sees half a file."""
    import torch

    partial = path.with_name(path.name + ".partial")
    torch.save(state, str(partial))
    os.replace(partial, path)
