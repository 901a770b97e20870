"""Benchmark (b): the fixed cost of a Ray Train run and of a Ray Tune trial (seconds).

At the default size (params.yaml, with the values tune chose), one worker: the wall time
of a short run minus the time its epochs took by the loop's own clock, i.e. what Ray adds
to start and end a run (worker group, process group, checkpoint upload, result). Measured
side by side with `ray.init` in one script: a Ray Train run, a Tune trial as the tune stage
runs it (the loop in the trial's process) and a Tune trial running a 1-worker TorchTrainer
(how trials ran before). Run after `make run`:
    .venv/bin/python bench/overhead.py [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from resgan.stage import monitor_ref, read_json, read_params  # noqa: E402

from resgan.config import replace  # noqa: E402
from resgan.machine import describe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prepared", default="outputs/prepare")
    args = ap.parse_args()
    cfg = read_params()
    cfg = cfg.with_tuned(read_json("outputs/tune/best.json")) if cfg.searched() else cfg
    e = args.epochs
    cfg = replace(cfg, train={"epochs": e, "checkpoint_every": 1, "sample_every": e, "num_workers": 1})
    data = f"{args.prepared}/train.npz"
    per_epoch = read_json(f"{args.prepared}/metrics.json")["stats_samples"] // cfg.train.batch_size * cfg.train.batch_size

    import ray

    t0 = time.perf_counter()
    from resgan.training.ray_train import init_ray, make_trainer

    init_ray()
    t_init = time.perf_counter() - t0
    from ray import tune

    from resgan.tuning import run_trials

    storage = str(Path(".ray_results").resolve())
    train_cost, trial_cost, trainer_trial_cost = [], [], []
    for i in range(args.repeats):
        trainer = make_trainer(cfg, data_path=data, fid_ref=monitor_ref(args.prepared, cfg.eval),
                               name=f"bench-overhead-{time.time():.0f}-{i}", storage=storage,
                               num_workers=1, use_gpu=False)
        t0 = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - t0
        epochs_s = sum(per_epoch / v for v in result.metrics_dataframe["images_per_s"])
        train_cost.append(wall - epochs_s)

        for direct, costs in ((True, trial_cost), (False, trainer_trial_cost)):
            t0 = time.perf_counter()
            rows = run_trials(cfg, {"seed": tune.grid_search([cfg.train.seed])}, num_samples=1,
                              epochs=e, scheduler=None, workers=1, max_concurrent=1, seed=0,
                              data_path=data, fid_ref=monitor_ref(args.prepared, cfg.eval),
                              use_gpu=False, parent_run_id=None, direct=direct,
                              name=f"bench-trial-{time.time():.0f}-{i}")
            wall = time.perf_counter() - t0
            # the trial's epochs by the loop's clock: its mean speed over epochs after the
            # first stands in for the first one too (a slight over-estimate of the epoch time)
            costs.append(wall - e * per_epoch / rows[0].images_per_s)
    ray.shutdown()
    print(f"\n{describe()}; depth {cfg.model.depth}, {cfg.model.channels} channels, "
          f"{cfg.data.resolution}x{cfg.data.resolution}, 1 worker, {e} epochs, {args.repeats} repeats\n")
    print("| fixed cost | seconds |")
    print("| --- | ---: |")
    print(f"| `ray.init` (start a local Ray) | {t_init:.1f} |")
    print(f"| a Ray Train run (TorchTrainer.fit), beyond its epochs | "
          f"{statistics.fmean(train_cost):.1f} (runs: {', '.join(f'{c:.1f}' for c in train_cost)}) |")
    for label, costs in (("a Ray Tune trial running a 1-worker TorchTrainer (before)", trainer_trial_cost),
                         ("a Ray Tune trial running the loop in its own process (the tune stage)",
                          trial_cost)):
        print(f"| {label}, beyond its epochs | {statistics.fmean(costs):.1f} "
              f"(runs: {', '.join(f'{c:.1f}' for c in costs)}) |")
    print(f"\nper trial: {statistics.fmean(trial_cost) / statistics.fmean(trainer_trial_cost):.2f}x "
          f"the fixed cost of a TorchTrainer trial")


if __name__ == "__main__":
    main()
