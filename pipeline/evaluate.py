"""evaluate: FID of the EMA generator against the cached real statistics.

Reads params: eval.*. Writes metrics (fid, fid_floor, extractor, sample counts) for
`dvc metrics show`, a sample grid, and logs both to the train run in MLflow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import eval_extractor, read_json, read_params, run, stats_path, write_json
from resgan import tracking
from resgan.metrics.fid import fid_of_generator, load_stats
from resgan.nets import sample
from resgan.training import checkpoint as ckpt_io
from resgan.training.loop import fid_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--trained", default="outputs/train", help="train's output folder")
    ap.add_argument("--out", default="outputs/eval", help="output folder")
    args = ap.parse_args()
    e = read_params().eval
    G = ckpt_io.generator_from(ckpt_io.load(f"{args.trained}/generator.pt"))
    extractor = eval_extractor(args.prepared, e)
    ref = load_stats(stats_path(args.prepared, e.features))
    fid = fid_of_generator(G, extractor, ref, e.num_samples, seed=e.seed, batch_size=e.batch_size)
    prep = read_json(f"{args.prepared}/metrics.json")
    # FID is biased by the sample count: compare with the floor at the floor's count.
    fid_at_floor_n = fid_of_generator(G, extractor, ref, prep["floor_samples"], seed=e.seed,
                                      batch_size=e.batch_size)
    metrics = {"fid": fid, "fid_floor": prep["fid_floor"], "features": e.features,
               "num_samples": e.num_samples, "floor_samples": prep["floor_samples"],
               "fid_at_floor_samples": fid_at_floor_n,
               "fid_over_floor": fid_at_floor_n / prep["fid_floor"]}
    out = Path(args.out)
    write_json(out / "metrics.json", metrics)
    from torchvision.utils import save_image

    save_image(sample(G, 64, seed=e.seed), out / "samples.png", nrow=8, normalize=True,
               value_range=(-1, 1))
    run_id = (Path(args.trained) / "run_id.txt").read_text().strip()
    c = tracking.client()
    # The extractor and the sample count are part of every recorded FID's name.
    c.log_metric(run_id, fid_name(e.features, e.num_samples), fid)
    c.log_metric(run_id, fid_name(e.features, prep["floor_samples"]), fid_at_floor_n)
    c.log_metric(run_id, "floor_" + fid_name(e.features, prep["floor_samples"]), prep["fid_floor"])
    c.log_artifact(run_id, str(out / "samples.png"), artifact_path="eval")
    print(f"evaluate: FID {fid:.3f} ({e.features} features, {e.num_samples} samples); "
          f"at {prep['floor_samples']} samples {fid_at_floor_n:.3f} vs the floor "
          f"{prep['fid_floor']:.3f} ({prep['floor_samples']} held-out images)")


if __name__ == "__main__":
    run(main)
