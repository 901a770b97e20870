"""quality: the champion against two real-data references and two contenders from the ablation.

Trains, through the pipeline's Ray Train loop and for the champion's images seen (its
epochs and batch size):

- plain: the best plain (no-shortcut) depth of the ablation (studies/ablation8/report/ablation.json) with the
  champion's own configuration (the tuned learning rates): shortcuts against none;
- ablation-best: the ablation's best cell (depth, shortcuts, augment policy) with the
  configuration the ablation trained it with: the search's pick against the ablation's.

Then scores the champion and both with the evaluate stage's extractor at prepare's held-out
count (FID is biased by the count; the references, a generator copying the training set and
one of new real images, are at that count) and at eval.num_samples. Writes quality.md and sample
grids of each network and of real images to --out; logs each contender's scores to its
MLflow run.

Run as a DVC pipeline: `make quality` (`dvc repro studies/quality/dvc.yaml`), which first
brings the champion (the root pipeline) and the ablation (studies/ablation8) up to date.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from resgan.stage import PARAMS, monitor_ref, read_json, read_params, run
from resgan import tracking
from resgan.config import ConfigError, load_config, replace
from resgan.console import follow_epochs, say
from resgan.metrics.scoring import fid_name


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=PARAMS, help="parameter file (default: %(default)s)")
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--trained", default="outputs/train", help="train's output folder")
    ap.add_argument("--ablation", default="studies/ablation8/report/ablation.json",
                    help="the ablation's results (default: %(default)s)")
    ap.add_argument("--out", default="studies/quality/report",
                    help="report folder (default: %(default)s)")
    ap.add_argument("--generators", default="studies/quality/outputs/generators",
                    help="where the plain network's generator is kept (default: %(default)s)")
    return ap.parse_args()


def _contenders(args, champ_cfg) -> dict[str, tuple]:
    """label -> (config, what it is), each trained for the champion's images seen: the best
    plain depth of the ablation with the champion's own configuration (does the residual
    champion beat the same search's plain network?), and the ablation's best cell as the
    ablation trained it (would the ablation's pick, trained as long, beat the search's?)."""
    from resgan.ablation import best_cell, best_plain

    ablation = read_json(args.ablation)
    if "config" not in ablation:
        raise ConfigError(f"{args.ablation} does not record the configuration its cells "
                          f"started from (written by an older `make ablation`): run it again")
    for key in ("dataset", "resolution"):  # its cells must have seen the champion's data
        theirs, ours = ablation["config"]["data"][key], getattr(champ_cfg.data, key)
        if theirs != ours:
            raise ConfigError(f"{args.ablation} was trained with data.{key} {theirs}, the "
                              f"champion with {ours}: run `make ablation` on this data first")
    depth = best_plain(args.ablation)
    cell = best_cell(args.ablation)
    cell_cfg = load_config(ablation["config"], f"{args.ablation} config")
    return {
        "plain": (replace(champ_cfg, model={"depth": depth, "residual": False}),
                  f"the best plain depth of the ablation ({depth}) with the champion's configuration"),
        "ablation-best": (replace(cell_cfg, model={"depth": cell.depth, "residual": cell.residual},
                                  train={"augment": cell.augment, "epochs": champ_cfg.train.epochs,
                                         "batch_size": champ_cfg.train.batch_size,
                                         "num_workers": champ_cfg.train.num_workers}),
                          f"the ablation's best cell (depth {cell.depth}, "
                          f"{'residual' if cell.residual else 'plain'}, augment {cell.augment}, "
                          f"FID {cell.fid_mean:.2f} after its {ablation['settings']['images seen per network']} "
                          f"images) with the ablation's configuration"),
    }


def _train(cfg, args, contenders) -> tuple[dict, list[str], dict[str, str]]:
    """Train every contender through the pipeline's Ray Train loop, each in an MLflow run.
    Returns (label -> final state, one note per contender, label -> MLflow run id)."""
    from resgan.training import checkpoint as ckpt_io
    from resgan.training.ray_train import fit_tracked, make_trainer, place

    states, notes, run_ids = {}, [], {}
    for label, (c_cfg, what) in contenders.items():
        t = c_cfg.train
        where = place(t)
        run_ids[label] = run_id = tracking.start_run(
            cfg.tracking.experiment, f"quality-{label}", params=c_cfg.model_dump(mode="json"),
            tags={"resgan.stage": "quality"})
        say(f"quality: training {what}: {t.epochs} epochs, loss {t.loss}, lr_g {t.lr_g:.2e}, "
            f"lr_d {t.lr_d:.2e}; MLflow run {run_id}")
        trainer = make_trainer(
            c_cfg, data_path=f"{args.prepared}/train.npz", fid_ref=monitor_ref(args.prepared, cfg.eval),
            name=f"quality-{label}-{time.strftime('%Y%m%d-%H%M%S')}", storage=cfg.ray.storage_path,
            num_workers=where.workers, cpus_per_worker=where.cpus, use_gpu=where.use_gpu,
            run_id=run_id, tracking_uri=tracking.tracking_uri())
        follow_epochs(t.epochs)
        states[label], seconds = fit_tracked(trainer, run_id)
        tracking.end_run(run_id)  # its scores are logged to it below
        ckpt_io.export_generator(states[label], Path(args.generators) / f"{label}.pt")
        notes.append(f"- {label}: {what} (loss {t.loss}, lr_g {t.lr_g:.2e}, lr_d {t.lr_d:.2e}, "
                     f"{t.epochs} epochs, batch {t.batch_size}, seed {t.seed}, {where}), "
                     f"trained in {seconds / 60:.1f} min")
    return states, notes, run_ids


def _images_seen(prep: dict, c) -> int:
    from resgan.data import images_per_epoch

    return images_per_epoch(prep["stats_samples"], c.train.batch_size) * c.train.epochs


def _score(e, args, prep: dict, states: dict, out: Path) -> list[dict]:
    """Every network scored as the evaluate stage scores, at the held-out count and at
    eval.num_samples, with a sample grid of each and of real held-out images."""
    import torch
    from torchvision.utils import save_image

    from resgan.data import load_split
    from resgan.metrics.scoring import Scorer
    from resgan.nets import sample
    from resgan.training import checkpoint as ckpt_io

    n_floor = prep["floor_samples"]
    scorer = Scorer.from_eval(args.prepared, e)
    rows = []
    for label, state in states.items():
        G = ckpt_io.generator_from(state)
        c = load_config(state["config"], label)
        fid_floor_n = scorer.with_samples(n_floor).score(G, fid_only=True).fid
        fid_n = scorer.score(G, fid_only=True).fid
        rows.append({"model": label, "depth": c.model.depth, "residual": c.model.residual,
                     "lr": f"{c.train.lr_g:.2e} / {c.train.lr_d:.2e}",
                     "images": _images_seen(prep, c), "fid_floor_n": fid_floor_n, "fid_n": fid_n,
                     "ratio": fid_floor_n / prep["fid_copier"]})
        save_image(sample(G, 64, seed=e.seed), out / f"samples-{label}.png", nrow=8,
                   normalize=True, value_range=(-1, 1))
    x, _ = load_split(f"{args.prepared}/test.npz")
    save_image(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:64]],
               out / "samples-real.png", nrow=8, normalize=True, value_range=(-1, 1))
    return rows


def _report(cfg, args, prep: dict, rows: list[dict], notes: list[str], contenders) -> list[str]:
    """quality.md's lines: the set-up, the table against the references, the grids."""
    import numpy as np

    from resgan.machine import describe
    from resgan.metrics.fid import ratio_band
    from resgan.metrics.scoring import features_dir

    e, n_floor = cfg.eval, prep["floor_samples"]
    by = {r["model"]: r for r in rows}
    champ = by["champion"]
    lines = [
        "# Quality on the default data",
        "",
        "Written by `make quality` (`dvc repro studies/quality/dvc.yaml`: `pipeline/quality.py` "
        "after the pipeline and the ablation).",
        "",
        f"- machine: {describe()}",
        f"- data: {cfg.data.dataset} at {cfg.data.resolution}px, {prep['stats_samples']} training "
        f"and {n_floor} held-out images",
        f"- FID: {e.features} features against the training split's statistics, G_ema, sample "
        f"seeds {e.seed}-{e.seed + e.repeats - 1} (means); at {n_floor} samples (the held-out "
        f"count, so that the references and the models are compared at the same sample count) "
        f"and at {e.num_samples} samples",
        f"- every network saw the champion's {champ['images']:,} images",
        *notes,
        "",
        f"| | depth | shortcuts | lr_g / lr_d | images seen | FID @ {n_floor} | × copier | FID @ {e.num_samples} |",
        "| :--- | ---: | :--- | ---: | ---: | ---: | ---: | ---: |",
        f"| a generator copying the training set (mean of its draws) | | | | | "
        f"{prep['fid_copier']:.2f} | 1.0 | |",
        f"| a generator of new real images (mean of its draws) | | | | | "
        f"{prep['fid_novel']:.2f} | {prep['fid_novel'] / prep['fid_copier']:.2f} | |",
        f"| the real held-out images (label-stratified) | | | | | "
        f"{prep['fid_heldout']:.2f} | {prep['fid_heldout'] / prep['fid_copier']:.2f} | |",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['depth']} | {'residual' if r['residual'] else 'plain'} | "
                     f"{r['lr']} | {r['images']:,} | {r['fid_floor_n']:.2f} | {r['ratio']:.2f} | "
                     f"{r['fid_n']:.2f} |")
    with np.load(features_dir(args.prepared) / "floor-draws.npz") as draws:
        lo, hi = ratio_band(draws["copier"], e.repeats)
    lines += ["", f"By noise alone, a generator copying the training set reads {lo:.2f}-{hi:.2f} "
              f"× its own mean over {e.repeats} seeds (5-95 %): a ratio inside that range cannot "
              f"be told from it.",
              "", f"Champion / copier at equal sample count: **{champ['ratio']:.2f}**; "
              + "; ".join(f"{k} / champion: **{by[k]['fid_floor_n'] / champ['fid_floor_n']:.2f}**"
                          for k in contenders) + " (above 1: the champion is better).", "",
              "| real held-out images | champion | " + " | ".join(contenders) + " |",
              "| :---: | :---: | " + " | ".join(":---:" for _ in contenders) + " |",
              "| ![real](samples-real.png) | ![champion](samples-champion.png) | "
              + " | ".join(f"![{k}](samples-{k}.png)" for k in contenders) + " |", ""]
    return lines


def main() -> str:
    args = _args()
    cfg = read_params(args.params)
    e = cfg.eval
    for need, how in ((f"{args.trained}/generator.pt", "make run"), (args.ablation, "make ablation")):
        if not Path(need).exists():
            raise ConfigError(f"{need} not found: run `{how}` first")
    from resgan.training import checkpoint as ckpt_io

    champ_state = ckpt_io.load(f"{args.trained}/generator.pt")
    champ_cfg = load_config(champ_state["config"], "champion config")
    contenders = _contenders(args, champ_cfg)
    prep = read_json(f"{args.prepared}/metrics.json")
    trained, notes, run_ids = _train(cfg, args, contenders)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = _score(e, args, prep, {"champion": champ_state, **trained}, out)
    assert len({r["images"] for r in rows}) == 1, rows  # all at the champion's images seen
    lines = _report(cfg, args, prep, rows, notes, contenders)
    (out / "quality.md").write_text("\n".join(lines))
    by = {r["model"]: r for r in rows}
    c = tracking.client()
    n_floor = prep["floor_samples"]
    for label, run_id in run_ids.items():
        c.log_metric(run_id, fid_name(e.features, n_floor), by[label]["fid_floor_n"])
        c.log_metric(run_id, fid_name(e.features, e.num_samples), by[label]["fid_n"])
        for f in ("quality.md", "samples-champion.png", f"samples-{label}.png", "samples-real.png"):
            c.log_artifact(run_id, str(out / f), artifact_path="quality")
    return f"report {out / 'quality.md'}\n" + "\n".join(
        ln for ln in lines if ln.startswith("|") and "![" not in ln)


if __name__ == "__main__":
    run(main)
