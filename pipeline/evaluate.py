"""evaluate: FID of the EMA generator against the cached real statistics, with its noise.

Reads params: eval.*. Writes metrics (fid = the mean over eval.repeats sample seeds, fid_std
their spread, fid_floor (what a generator sampling the training images exactly scores at the
floor's sample count), the ratio to it at that count with its standard error, the held-out
images' own FID and the ratio to it (fid_over_heldout); kid, kid_std,
precision and recall from the same features, means over the seeds) for
`dvc metrics show`, the full score with its scoring protocol (score.json, read by register),
a sample grid, and logs them to the train run in MLflow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resgan.stage import read_json, read_params, run, write_json
from resgan import tracking
from resgan.metrics.scoring import Scorer
from resgan.nets import sample
from resgan.training import checkpoint as ckpt_io
from resgan.metrics.scoring import fid_name


def main() -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--trained", default="outputs/train", help="train's output folder")
    ap.add_argument("--out", default="outputs/eval", help="output folder")
    args = ap.parse_args()
    e = read_params().eval
    G = ckpt_io.generator_from(ckpt_io.load(f"{args.trained}/generator.pt"))
    scorer = Scorer.from_eval(args.prepared, e)
    score = scorer.score(G)
    prep = read_json(f"{args.prepared}/metrics.json")
    # FID is biased by the sample count: compare with the floor at the floor's count.
    at_floor = scorer.with_samples(prep["floor_samples"]).score(G, fid_only=True)
    # The ratio's resolution: the standard errors of its mean over the sample seeds and of
    # the floor's mean over its draws.
    floor, floor_se = prep["fid_floor"], prep.get("fid_floor_se", 0.0)
    ratio = at_floor.fid / floor
    ratio_se = ratio * ((at_floor.fid_se / at_floor.fid) ** 2 + (floor_se / floor) ** 2) ** 0.5
    heldout = prep.get("fid_floor_heldout")
    metrics = {"fid": score.fid, "fid_std": score.fid_std, "kid": score.kid,
               "kid_std": score.kid_std, "precision": score.precision, "recall": score.recall,
               "fid_floor": floor, "fid_floor_se": floor_se, "fid_floor_heldout": heldout,
               "fid_over_heldout": None if heldout is None else at_floor.fid / heldout,
               "features": e.features, "num_samples": e.num_samples, "repeats": e.repeats,
               "floor_samples": prep["floor_samples"], "fid_at_floor_samples": at_floor.fid,
               "fid_at_floor_samples_std": at_floor.fid_std,
               "fid_over_floor": ratio, "fid_over_floor_se": ratio_se,
               "protocol": score.protocol.id}
    out = Path(args.out)
    write_json(out / "metrics.json", metrics)
    write_json(out / "score.json", score.as_dict())
    from torchvision.utils import save_image

    save_image(sample(G, 64, seed=e.seed), out / "samples.png", nrow=8, normalize=True,
               value_range=(-1, 1))
    run_id = (Path(args.trained) / "run_id.txt").read_text().strip()
    c = tracking.client()
    # The extractor and the sample count are part of every recorded FID's name.
    name = fid_name(e.features, e.num_samples)
    c.log_metric(run_id, name, score.fid)
    c.log_metric(run_id, name.replace("fid_", "fid_std_", 1), score.fid_std)
    for metric in ("kid", "kid_std", "precision", "recall"):  # kid_classifier_n1000, ...
        c.log_metric(run_id, name.replace("fid_", f"{metric}_", 1), getattr(score, metric))
    c.log_metric(run_id, fid_name(e.features, prep["floor_samples"]), at_floor.fid)
    c.log_metric(run_id, "floor_" + fid_name(e.features, prep["floor_samples"]), prep["fid_floor"])
    for k, v in score.protocol.tags().items():
        c.set_tag(run_id, k, v)
    c.log_artifact(run_id, str(out / "samples.png"), artifact_path="eval")
    held = "" if heldout is None else f"; the held-out images score {heldout:.3f}"
    print(f"evaluate: FID {score.fid:.3f} ± {score.fid_std:.3f} over {e.repeats} sample seeds "
          f"({e.features} features, {e.num_samples} samples); KID {score.kid:.4f} ± "
          f"{score.kid_std:.4f}, precision {score.precision:.3f}, recall {score.recall:.3f}; "
          f"at {prep['floor_samples']} "
          f"samples {at_floor.fid:.3f} ± {at_floor.fid_std:.3f} vs the floor {floor:.3f} (a "
          f"generator sampling the training images exactly): {ratio:.2f}x ± {ratio_se:.2f} "
          f"(standard error){held}; protocol {score.protocol.id}")
    return (f"FID {score.fid:.3f} ± {score.fid_std:.3f} ({e.features}, {e.num_samples} samples), "
            f"{ratio:.2f}x ± {ratio_se:.2f} the floor at {prep['floor_samples']}; "
            f"KID {score.kid:.4g}, precision {score.precision:.3f}, recall {score.recall:.3f}")


if __name__ == "__main__":
    run(main)
