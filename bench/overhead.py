"""Benchmark (b): the fixed cost of a Ray Train run and of a Ray Tune trial (seconds).

At the default size (params.yaml, with the values tune chose), one worker per run or
trial. A cost here is wall time minus the time the epochs took by the loop's own clock:
what Ray adds to start and end a run, plus the per-epoch monitoring FID, the final
checkpoint and, for a trial, its MLflow run (nested under a search run, as in the tune
stage, in a temporary store). Measured side by side in one script:

- `ray.init` (a local Ray);
- a Ray Train run (TorchTrainer.fit);
- Tune trials three ways: a 1-worker TorchTrainer per trial (how trials first ran), the
  loop in the trial's own process with a new process per trial, and the same with Tune
  reusing the process of the trial before (the tune stage now).

A trial's cost is measured in a search, as the tune stage pays it: one experiment of one
trial and one of ``--trials`` trials run one after another; the difference of their costs
divided by the extra trials is the cost of one more trial, the rest is the experiment's
(Tune's start and end, paid once per search).
Run after `make run`:
    .venv/bin/python bench/overhead.py [--epochs 3] [--trials 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from resgan.config import replace
from resgan.data import images_per_epoch
from resgan.machine import describe
from resgan.training.job import with_choice
from resgan.stage import monitor_ref, read_json, read_params

TRIAL_WAYS = (  # label, direct, reuse_actors
    ("a 1-worker TorchTrainer per trial (the first tune stage)", False, False),
    ("the loop in the trial's own process, a new process per trial", True, False),
    ("the loop in the trial's own process, the process reused (the tune stage)", True, True),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run and per trial")
    ap.add_argument("--trials", type=int, default=4, help="trials of the longer experiment (>= 2)")
    ap.add_argument("--repeats", type=int, default=2, help="Ray Train runs")
    ap.add_argument("--prepared", default="outputs/prepare")
    args = ap.parse_args()
    if args.trials < 2:
        ap.error("--trials must be at least 2")
    cfg = read_params()
    cfg = with_choice(cfg)
    e = args.epochs
    cfg = replace(cfg, train={"epochs": e, "checkpoint_every": e, "sample_every": e, "num_workers": 1})
    data = f"{args.prepared}/train.npz"
    per_epoch = images_per_epoch(read_json(f"{args.prepared}/metrics.json")["stats_samples"],
                                 cfg.train.batch_size)
    ref = monitor_ref(args.prepared, cfg.eval)
    store = tempfile.TemporaryDirectory(prefix="bench-overhead-mlflow-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store.name}/mlflow.db"
    from resgan import tracking

    parent = tracking.start_run("bench-overhead", "search")

    import ray

    t0 = time.perf_counter()
    from resgan.training.ray_train import make_trainer
    from resgan.runtime.cluster import init_ray

    init_ray()
    t_init = time.perf_counter() - t0
    from ray import tune

    from resgan.tuning import run_trials

    storage = str(Path(".ray_results").resolve())
    train_cost = []
    for i in range(args.repeats):
        trainer = make_trainer(cfg, data_path=data, fid_ref=ref, name=f"bench-overhead-{time.time():.0f}-{i}",
                               storage=storage, num_workers=1, use_gpu=False)
        t0 = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - t0
        train_cost.append(wall - sum(per_epoch / v for v in result.metrics_dataframe["images_per_s"]))

    def experiment(trials: int, direct: bool, reuse: bool) -> float:
        """Wall time of a search of ``trials`` trials, one at a time, minus their epochs."""
        t0 = time.perf_counter()
        rows = run_trials(cfg, {"seed": tune.grid_search([cfg.train.seed + k for k in range(trials)])},
                          num_samples=1, epochs=e, scheduler=None, workers=1, max_concurrent=1,
                          seed=0, data_path=data, fid_ref=ref, use_gpu=False, parent_run_id=parent,
                          direct=direct, reuse_actors=reuse, name=f"bench-trials-{time.time():.0f}")
        wall = time.perf_counter() - t0
        # each trial's epochs by the loop's clock: its mean speed over the epochs after the
        # first stands in for the first one too (a slight over-estimate of the epoch time)
        return wall - sum(e * per_epoch / r.images_per_s for r in rows)

    trial_rows = []
    for label, direct, reuse in TRIAL_WAYS:
        one, many = experiment(1, direct, reuse), experiment(args.trials, direct, reuse)
        per_trial = (many - one) / (args.trials - 1)
        trial_rows.append((label, per_trial, one - per_trial, one, many))
    ray.shutdown()
    store.cleanup()
    print(f"\n{describe()}; depth {cfg.model.depth}, {cfg.model.channels} channels, "
          f"{cfg.data.resolution}x{cfg.data.resolution}, 1 worker, {e} epochs per run or trial\n")
    print("| fixed cost | seconds |")
    print("| --- | ---: |")
    print(f"| `ray.init` (start a local Ray) | {t_init:.1f} |")
    print(f"| a Ray Train run (TorchTrainer.fit), beyond its epochs | {statistics.fmean(train_cost):.1f} "
          f"(runs: {', '.join(f'{c:.1f}' for c in train_cost)}) |")
    print(f"\n| a Tune trial runs | per trial | per search | search of 1 trial | search of {args.trials} trials |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, per_trial, per_search, one, many in trial_rows:
        print(f"| {label} | **{per_trial:.1f}** | {per_search:.1f} | {one:.1f} | {many:.1f} |")
    base = trial_rows[0][1]
    print("\nper trial against a TorchTrainer trial: "
          + ", ".join(f"{r[1] / base:.2f}x" for r in trial_rows[1:]))


if __name__ == "__main__":
    main()
