"""Benchmark (c): ASHA early stopping against running every trial to the end.

The tune stage's search (params.yaml `tune`: the same sampled points, the same seed) run
twice side by side: with ASHA, as the pipeline does, and with every trial run to
tune.epochs. Prints the best monitoring FID each reached, the trial-epochs spent and the
wall time. Run after `make run`:  .venv/bin/python bench/asha.py
"""

from __future__ import annotations

import argparse
import time

from resgan.stage import monitor_ref, read_params  # noqa: E402

from resgan.machine import describe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="outputs/prepare")
    args = ap.parse_args()
    cfg = read_params()
    t = cfg.tune
    from resgan.runtime.cluster import init_ray
    from resgan.tuning import best_trial, run_search, run_trials, search_space

    init_ray()
    data, ref = f"{args.prepared}/train.npz", monitor_ref(args.prepared, cfg.eval)
    results = {}
    for label in ("ASHA (the tune stage)", "every trial to the end"):
        t0 = time.perf_counter()
        if label.startswith("ASHA"):
            rows = run_search(cfg, data_path=data, fid_ref=ref, use_gpu=False, parent_run_id=None,
                              name=f"bench-asha-{time.time():.0f}")
        else:
            rows = run_trials(cfg, search_space(cfg), num_samples=t.num_samples, epochs=t.epochs,
                              scheduler=None, workers=t.workers_per_trial,
                              max_concurrent=t.max_concurrent, seed=t.seed, data_path=data,
                              fid_ref=ref, use_gpu=False, parent_run_id=None,
                              name=f"bench-fifo-{time.time():.0f}")
        results[label] = (rows, time.perf_counter() - t0)
    print(f"\n{describe()}; {t.num_samples} trials, up to {t.epochs} epochs, grace {t.grace_period}, "
          f"reduction {t.reduction_factor}, {t.max_concurrent} at once\n")
    print("| search | best FID (monitor) | best point | trial-epochs | wall time |")
    print("| --- | ---: | --- | ---: | ---: |")
    base = None
    for label, (rows, wall) in results.items():
        b = best_trial(rows)
        spent = sum(r.epochs for r in rows)
        base = base or (spent, wall)
        point = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in b.point.items())
        print(f"| {label} | {b.fid:.2f} | {point} | {spent} ({spent / base[0]:.2f}×) | "
              f"{wall:.0f} s ({wall / base[1]:.2f}×) |")
    same = [r.point for r in results["ASHA (the tune stage)"][0]]
    other = [r.point for r in results["every trial to the end"][0]]
    print(f"\nsame sampled points in both: {sorted(map(str, same)) == sorted(map(str, other))}")


if __name__ == "__main__":
    main()
