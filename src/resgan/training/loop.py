"""The per-worker GAN training loop: DDP over G and D, EMA of G, FID, checkpoints.

It imports neither Ray nor MLflow: the Ray Train wrapper (``ray_train.py``) and a plain
single process both call ``fit`` and pass in how to report and where to log. Only rank 0
computes FID, writes sample grids, saves checkpoints and logs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from torchvision.utils import make_grid

from resgan.augment import ADA_INTERVAL, Augment
from resgan.config import Config
from resgan.console import epoch_line
from resgan.data import load_split
from resgan.losses import LOSSES, gradient_penalty
from resgan.metrics.scoring import FidRef, fid_name
from resgan.nets import Discriminator, Generator, sample
from resgan.runtime.cpu_share import CpuShare

# train.mixed_precision: auto turns bf16 + channels-last on for CUDA from this many images per
# worker: below it a step is bound by kernel launches, and the casts cost more than bf16 saves
# (measured by bench/gpu.py: docs/benchmarks.md (e)).
MIXED_PRECISION_MIN_BATCH = 256

Report = Callable[[dict[str, float], "dict[str, Any] | None"], None]


class DivergedError(FloatingPointError):
    """The losses became NaN or infinite: the run cannot recover."""


class RunLogger:
    """Where rank 0 sends metrics and images (an MLflow run; see resgan.tracking)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, image: np.ndarray, name: str) -> None: ...


def make_ema(G: torch.nn.Module, halflife_kimg: float, rampup: float | None,
             batch_size: int) -> AveragedModel:
    """EMA of G's weights and BN statistics, as in StyleGAN2-ADA: a half-life of
    ``halflife_kimg`` thousand images, limited to ``rampup`` x the images seen so far, so that
    short runs are not dominated by the early weights. Updated once per G step."""

    def lerp(avg: list[torch.Tensor], cur: list[torch.Tensor], n: torch.Tensor) -> None:
        nimg = float(n) * batch_size
        ema_nimg = halflife_kimg * 1000.0
        if rampup is not None:
            ema_nimg = min(ema_nimg, nimg * rampup)
        beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
        if avg[0].is_floating_point():
            torch._foreach_lerp_(avg, cur, 1.0 - beta)
        else:  # integer buffers (BN's num_batches_tracked): follow G
            torch._foreach_copy_(avg, cur)

    return AveragedModel(G, multi_avg_fn=lerp, use_buffers=True)


def _rng_state(device: torch.device) -> torch.Tensor:
    """This process's CPU RNG state, followed by the CUDA one on a GPU (uint8)."""
    state = torch.get_rng_state()
    if device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(device)])
    return state


def _set_rng(state: torch.Tensor, device: torch.device) -> None:
    cpu = torch.get_rng_state()
    torch.set_rng_state(state[: len(cpu)].clone())
    if device.type == "cuda" and len(state) > len(cpu):
        torch.cuda.set_rng_state(state[len(cpu):].clone(), device)


def _gather_rng(world_size: int, device: torch.device) -> list[torch.Tensor]:
    """Every rank's RNG state, for the checkpoint that rank 0 writes."""
    local = _rng_state(device)
    if world_size == 1:
        return [local]
    comm = "cuda" if dist.get_backend() == "nccl" else "cpu"
    out = [torch.empty_like(local, device=comm) for _ in range(world_size)]
    dist.all_gather(out, local.to(comm))
    return [o.cpu() for o in out]


def use_mixed_precision(setting: bool | str, device_type: str, per_worker_batch: int) -> bool:
    """train.mixed_precision: true/false as set; auto on CUDA from MIXED_PRECISION_MIN_BATCH."""
    if setting == "auto":
        return device_type == "cuda" and per_worker_batch >= MIXED_PRECISION_MIN_BATCH
    return bool(setting)


def build_models(cfg: Config, img_channels: int) -> tuple[Generator, Discriminator]:
    m, r = cfg.model, cfg.data.resolution
    G = Generator(z_dim=m.z_dim, channels=m.channels, depth=m.depth, resolution=r,
                  img_channels=img_channels, residual=m.residual)
    D = Discriminator(channels=m.channels, depth=m.depth, resolution=r,
                      img_channels=img_channels, residual=m.residual)
    return G, D


def fit(cfg: Config, *, data_path: str, report: Report, rank: int = 0, world_size: int = 1,
        device: str | torch.device = "cpu", fid_ref: FidRef | None = None,
        from_state: dict[str, Any] | None = None, logger: RunLogger | None = None,
        stop_epoch: int | None = None) -> dict[str, Any]:
    """Train G and D for ``cfg.train.epochs`` epochs (or up to ``stop_epoch``).

    Args:
        cfg: the validated configuration (model, train and data sections are used).
        data_path: the training split (.npz from resgan.data).
        report: called every epoch on every rank with the metrics, and on rank 0 with the
            checkpoint state when one is due (None otherwise).
        rank, world_size: this worker's DDP rank; world_size > 1 needs an initialised
            torch.distributed process group.
        device: where this worker trains.
        fid_ref: when given, rank 0 measures FID of G_ema every epoch (metric ``fid``).
        from_state: a checkpoint state to resume from: epoch, step, weights, optimizers, EMA,
            ADA's augmentation probability (train.augment: ada-...) and every rank's RNG
            state, so that a resumed run continues exactly as an uninterrupted one would
            (with another world size the noise is reseeded).
        logger: rank 0's metric and image sink.
        stop_epoch: stop after this epoch (with a checkpoint), as if the run were interrupted
            there: the schedule (learning-rate decay) is still that of ``cfg.train.epochs``,
            so a run continued from it is the run that was never stopped. A Tune trial
            stops at the search's budget; the train stage continues the best one.
    Returns:
        The final checkpoint state on rank 0 (``from_state`` when it is already at the end), an
        empty dict elsewhere.
    Raises:
        DivergedError: the losses became NaN or infinite.
    """
    cfg.require_fixed("training")
    t = cfg.train
    device = torch.device(device)
    x, _ = load_split(data_path)
    img_channels = x.shape[1]
    torch.manual_seed(t.seed)  # same initial weights on every rank (DDP also broadcasts them)
    G, D = build_models(cfg, img_channels)
    per_worker = max(1, t.batch_size // world_size)  # train.batch_size is the global batch
    # GPU path: bf16 autocast (no loss scaling needed) and channels-last convolutions. On
    # CPUs channels-last alone (oneDNN's blocked convolutions; docs/benchmarks.md (l)).
    fast = use_mixed_precision(t.mixed_precision, device.type, per_worker)
    channels_last = fast or device.type == "cpu"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    G, D = G.to(device, memory_format=memory_format), D.to(device, memory_format=memory_format)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=fast)

    G_ema = make_ema(G, t.ema_halflife_kimg, t.ema_rampup, t.batch_size)
    opt_G = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
    augment = Augment(t.augment, device)  # train.augment: before every call of D
    # rank 0's per-epoch FID of G_ema (the scoring module's monitor; it keeps the RNG as it was)
    monitor = fid_ref.monitor(t.fid_samples, seed=t.seed, device=device) if rank == 0 and fid_ref else None
    epoch0, step, resumed_from = 0, 0, []
    torch.manual_seed(t.seed + 1000 * rank)  # different noise per rank
    if from_state is not None:
        G.load_state_dict(from_state["G"])
        D.load_state_dict(from_state["D"])
        G_ema.load_state_dict(from_state["G_ema_avg"])
        opt_G.load_state_dict(from_state["opt_G"])
        opt_D.load_state_dict(from_state["opt_D"])
        epoch0, step = from_state["epoch"], from_state["step"]
        resumed_from = [*from_state.get("resumed_from", []), epoch0]
        if "augment" in from_state:  # ADA's p (a checkpoint without it: p starts again at 0)
            augment.load_state_dict(from_state["augment"], rank)
        rng = from_state.get("rng", [])
        if len(rng) == world_size:
            _set_rng(rng[rank], device)
        else:  # another world size: new noise streams, still seeded
            torch.manual_seed(t.seed + 1000 * rank + epoch0)
        if rank == 0:
            print(f"resuming from the checkpoint of epoch {epoch0} (step {step})", flush=True)
    if world_size > 1:
        ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        if device.type == "cuda":
            # G's batch norm over the global batch, as in one process (same parameters and
            # buffers, so checkpoints and G_ema are unchanged). SyncBatchNorm has no CPU
            # kernel: on CPUs each rank normalises over its own batch_size / world_size images.
            G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(G)
        G_t, D_t = DDP(G, **ddp_kw), DDP(D, **ddp_kw)
    else:
        G_t, D_t = G, D
    loss_d_fn, loss_g_fn = LOSSES[t.loss]
    dataset = TensorDataset(x)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                 shuffle=True, seed=t.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=per_worker, sampler=sampler, drop_last=True)

    lead = rank == 0
    z_dim = cfg.model.z_dim
    end = t.epochs if stop_epoch is None else min(stop_epoch, t.epochs)
    state: dict[str, Any] = dict(from_state) if from_state is not None and epoch0 >= end and lead else {}
    # on CPUs, the threads this process was given, or its share of the cores while other
    # trainings run on this machine (lock-step OpenMP threads must not oversubscribe them)
    with CpuShare(torch.get_num_threads(), enabled=device.type == "cpu") as share:
        for epoch in range(epoch0 + 1, end + 1):
            share.apply(say=lead)
            sampler.set_epoch(epoch)
            if t.lr_decay == "linear":  # derived from the epoch: nothing extra to checkpoint
                for opt, lr in ((opt_G, t.lr_g), (opt_D, t.lr_d)):
                    for group in opt.param_groups:
                        group["lr"] = lr * (1.0 - (epoch - 1) / t.epochs)
            G_t.train()
            D_t.train()
            sums = torch.zeros(2, device=device)  # loss_d, loss_g
            n_d = n_g = seen = 0
            t0 = time.perf_counter()
            for (xb,) in loader:
                xb = xb.to(device, non_blocking=True, memory_format=memory_format)
                z = torch.randn(len(xb), z_dim, device=device)
                with torch.no_grad(), autocast():
                    fake = G_t(z)
                both = torch.cat([xb, fake.to(xb.dtype)])
                if augment.enabled:  # each image its own transform, real and fake alike
                    both = augment(both)
                with autocast():
                    logits = D_t(both)
                    loss_d = loss_d_fn(logits[: len(xb)].float(), logits[len(xb):].float())
                augment.observe(logits[: len(xb)])
                if t.loss == "wgan-gp":
                    # in float32, through the unwrapped D: DDP hooks do not support double
                    # backward, and the penalty's gradients still reach D's parameters below.
                    # With train.augment, between the augmented images D's loss saw: D must be
                    # 1-Lipschitz where it is compared, on the augmented distributions.
                    loss_d = loss_d + t.gp_lambda * gradient_penalty(
                        D, both[: len(xb)], both[len(xb):].float())
                opt_D.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_D.step()
                sums[0] += loss_d.detach()
                n_d += 1
                seen += len(xb)
                step += 1
                if augment.adaptive and step % ADA_INTERVAL == 0:
                    augment.update(ADA_INTERVAL * len(xb) * world_size, world_size)
                if step % t.n_dis == 0:
                    z = torch.randn(len(xb), z_dim, device=device)
                    with autocast():
                        fake = G_t(z)
                        if augment.enabled:  # G learns through the same transforms
                            fake = augment(fake)
                        loss_g = loss_g_fn(D_t(fake).float())
                    opt_G.zero_grad(set_to_none=True)
                    loss_g.backward()  # also fills D's grads; opt_D.zero_grad clears them
                    opt_G.step()
                    G_ema.update_parameters(G)
                    sums[1] += loss_g.detach()
                    n_g += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
            if world_size > 1:
                dist.all_reduce(sums)
                sums /= world_size
            loss_d_mean, loss_g_mean = (sums / torch.tensor([max(n_d, 1), max(n_g, 1)], device=device)).tolist()
            if not (math.isfinite(loss_d_mean) and math.isfinite(loss_g_mean)):
                raise DivergedError(f"losses became non-finite at epoch {epoch}: "
                                    f"loss_d={loss_d_mean}, loss_g={loss_g_mean}")
            metrics = {"epoch": epoch, "loss_d": loss_d_mean, "loss_g": loss_g_mean,
                       "images_per_s": seen * world_size / elapsed}
            if augment.adaptive:
                metrics["augment_p"] = augment.p
            due = epoch % t.checkpoint_every == 0 or epoch == end
            rng = _gather_rng(world_size, device) if due else None  # every rank takes part
            aug_state = augment.state_dict(world_size) if due and augment.adaptive else None
            ckpt = None
            if lead:
                ema_G = G_ema.module.eval()
                if monitor is not None:
                    metrics["fid"] = monitor(ema_G)
                print(epoch_line(epoch, t.epochs, metrics), flush=True)
                if logger is not None:  # a recorded FID names its extractor and sample count
                    logger.log_metrics({fid_name(fid_ref.features, t.fid_samples) if k == "fid" else k: v
                                        for k, v in metrics.items()}, step=epoch)
                    if epoch % t.sample_every == 0 or epoch == end:
                        grid = make_grid(sample(ema_G, 64, seed=t.seed + 1, device=device),
                                         nrow=8, normalize=True, value_range=(-1, 1))
                        logger.log_image(grid.permute(1, 2, 0).numpy(), f"samples/epoch_{epoch:04d}.png")
                if due:
                    state = {
                        "epoch": epoch, "step": step, "config": cfg.model_dump(mode="json"),
                        "rng": rng, "resumed_from": resumed_from,
                        "G_kwargs": G.kwargs, "D_kwargs": D.kwargs,
                        "G": G.state_dict(), "D": D.state_dict(),
                        "G_ema": G_ema.module.state_dict(), "G_ema_avg": G_ema.state_dict(),
                        "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
                        "metrics": dict(metrics),
                    }
                    if aug_state is not None:  # ADA's p and its sums since the last update
                        state["augment"] = aug_state
                    ckpt = state
            report(metrics, ckpt)
    return state
