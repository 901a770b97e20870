"""quality: the champion against the real-data floor and the best plain network.

Trains the best plain (no-shortcut) depth of the ablation (docs/ablation.json) with the
champion's own configuration (the tuned learning rates, the same epochs, batch size and
workers, hence the same images seen) through the pipeline's Ray Train loop, then scores
both generators with the evaluate stage's extractor at the floor's sample count (FID is
biased by the count) and at eval.num_samples. Writes quality.md and sample grids of the
champion, the plain network and real images to --out; logs them to an MLflow run.

Needs `make run` (the champion in outputs/train) and `make ablation` (the plain depth).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from resgan.stage import PARAMS, monitor_ref, read_json, read_params, run
from resgan import tracking
from resgan.config import load_config, replace
from resgan.console import follow_epochs, say
from resgan.metrics.scoring import fid_name


def main() -> str:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=PARAMS, help="parameter file (default: %(default)s)")
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--trained", default="outputs/train", help="train's output folder")
    ap.add_argument("--ablation", default="docs/ablation.json", help="the ablation's results")
    ap.add_argument("--out", default="docs", help="report folder (default: %(default)s)")
    ap.add_argument("--generators", default="outputs/quality",
                    help="where the plain network's generator is kept (default: %(default)s)")
    args = ap.parse_args()
    cfg = read_params(args.params)
    e = cfg.eval
    for need, how in ((f"{args.trained}/generator.pt", "make run"), (args.ablation, "make ablation")):
        if not Path(need).exists():
            raise SystemExit(f"error: {need} not found: run `{how}` first")
    import torch
    from torchvision.utils import save_image

    from resgan.ablation import best_plain
    from resgan.data import load_split
    from resgan.machine import describe
    from resgan.metrics.scoring import Scorer
    from resgan.nets import sample
    from resgan.training import checkpoint as ckpt_io
    from resgan.training.ray_train import (fit_tracked, init_ray, make_trainer, resolve_use_gpu,
                                           resolve_workers)

    champ_state = ckpt_io.load(f"{args.trained}/generator.pt")
    champ_cfg = load_config(champ_state["config"], "champion config")
    depth = best_plain(args.ablation)
    plain_cfg = replace(champ_cfg, model={"depth": depth, "residual": False})
    t = plain_cfg.train
    init_ray()
    use_gpu = resolve_use_gpu(t.use_gpu)
    workers, cpus = resolve_workers(t.num_workers, use_gpu)
    run_id = tracking.start_run(cfg.tracking.experiment, "quality-plain",
                                params=plain_cfg.model_dump(mode="json"),
                                tags={"resgan.stage": "quality"})
    say(f"quality: training the plain network, depth {depth}, with the champion's config "
        f"({t.epochs} epochs, lr_g {t.lr_g:.2e}, lr_d {t.lr_d:.2e}); MLflow run {run_id}")
    trainer = make_trainer(
        plain_cfg, data_path=f"{args.prepared}/train.npz", fid_ref=monitor_ref(args.prepared, e),
        name=f"quality-{time.strftime('%Y%m%d-%H%M%S')}", storage=cfg.ray.storage_path,
        num_workers=workers, cpus_per_worker=cpus, use_gpu=use_gpu, run_id=run_id,
        tracking_uri=tracking.tracking_uri())
    follow_epochs(t.epochs)
    plain_state, seconds = fit_tracked(trainer, run_id)
    ckpt_io.export_generator(plain_state, Path(args.generators) / "plain.pt")

    prep = read_json(f"{args.prepared}/metrics.json")
    n_floor = prep["floor_samples"]
    scorer = Scorer.from_eval(args.prepared, e)  # as the evaluate stage scores
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, state in (("champion", champ_state), ("plain", plain_state)):
        G = ckpt_io.generator_from(state)
        c = load_config(state["config"], label)
        fid_floor_n = scorer.with_samples(n_floor).score(G, fid_only=True).fid
        fid_n = scorer.score(G, fid_only=True).fid
        images = prep["stats_samples"] // c.train.batch_size * c.train.batch_size * c.train.epochs
        rows.append({"model": label, "depth": c.model.depth, "residual": c.model.residual,
                     "images": images, "fid_floor_n": fid_floor_n, "fid_n": fid_n,
                     "ratio": fid_floor_n / prep["fid_floor"]})
        save_image(sample(G, 64, seed=e.seed), out / f"samples-{label}.png", nrow=8,
                   normalize=True, value_range=(-1, 1))
    x, _ = load_split(f"{args.prepared}/test.npz")
    save_image(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:64]],
               out / "samples-real.png", nrow=8, normalize=True, value_range=(-1, 1))

    champ, plain = rows
    lines = [
        "# Quality on the default data",
        "",
        "Written by `make quality` (`pipeline/quality.py`) after `make run` and `make ablation`.",
        "",
        f"- machine: {describe()}",
        f"- data: {cfg.data.dataset} at {cfg.data.resolution}px, {prep['stats_samples']} training "
        f"and {n_floor} held-out images",
        f"- FID: {e.features} features against the training split's statistics; at "
        f"{n_floor} samples (the held-out count, so that the floor and the models are compared "
        f"at the same sample count) and at {e.num_samples} samples",
        f"- the plain network: the best plain depth of the ablation ({depth}), trained with the "
        f"champion's configuration (loss {t.loss}, lr_g {t.lr_g:.2e}, lr_d {t.lr_d:.2e}, "
        f"{t.epochs} epochs, batch {t.batch_size}, {workers} Ray Train worker(s) x {cpus:g} CPU(s)) in "
        f"{seconds / 60:.1f} min",
        "",
        f"| | depth | shortcuts | images seen | FID @ {n_floor} | × floor | FID @ {e.num_samples} |",
        "| :--- | ---: | :--- | ---: | ---: | ---: | ---: |",
        f"| real held-out images (the floor) | | | | {prep['fid_floor']:.2f} | 1.0 | |",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['depth']} | {'residual' if r['residual'] else 'plain'} | "
                     f"{r['images']:,} | {r['fid_floor_n']:.2f} | {r['ratio']:.1f} | {r['fid_n']:.2f} |")
    lines += ["", f"Champion / floor at equal sample count: **{champ['ratio']:.1f}**; "
              f"plain / champion: **{plain['fid_floor_n'] / champ['fid_floor_n']:.2f}**.", "",
              "| real held-out images | champion | best plain network |", "| :---: | :---: | :---: |",
              "| ![real](samples-real.png) | ![champion](samples-champion.png) | "
              "![plain](samples-plain.png) |", ""]
    (out / "quality.md").write_text("\n".join(lines))
    c = tracking.client()
    c.log_metric(run_id, fid_name(e.features, n_floor), plain["fid_floor_n"])
    c.log_metric(run_id, fid_name(e.features, e.num_samples), plain["fid_n"])
    for f in ("quality.md", "samples-champion.png", "samples-plain.png", "samples-real.png"):
        c.log_artifact(run_id, str(out / f), artifact_path="quality")
    tracking.end_run(run_id)
    return f"report {out / 'quality.md'}\n" + "\n".join(
        ln for ln in lines if ln.startswith("|") and "![" not in ln)


if __name__ == "__main__":
    run(main)
