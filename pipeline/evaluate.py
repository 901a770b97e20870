"""evaluate: FID of the EMA generator against the cached real statistics, with its noise.

Reads params: eval.*. Writes the scores for `dvc metrics show` (metrics.json): ``fid`` (the mean over
eval.repeats sample seeds), ``fid_std`` (their SD) and ``fid_se`` (the standard error of the
mean); KID against the training and the held-out features, precision and recall, each the
mean over the seeds with its SD over the seeds, beside what the held-out real images score
(``precision_real``, ``recall_real``); and at prepare's held-out count, the FID over two
references: a generator that copies the training set (``fid_over_copier``) and one of new
real images (``fid_over_novel``), each with its standard error and the 5-95 % range that
reference's own ratio spans at eval.repeats seeds (``copier_band_lo/hi``,
``novel_band_lo/hi``). Also the full score with its scoring protocol (score.json, read by
register), a sample grid, and all of it logged to the train run in MLflow. The metrics file
also repeats what train trained (depth, shortcuts, loss, learning rates, images/s), and
leads with what experiments are compared by (``HEADLINE``): `dvc exp show` shows its keys
first, in this order. The bookkeeping (the references' own FIDs, SDs, sample counts, the
protocol, the MLflow run) is in details.json, an out: out of `dvc exp show`'s way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from resgan import tracking
from resgan.metrics.fid import mean_and_se, ratio_band
from resgan.metrics.scoring import EXTRA, Scorer, features_dir, fid_name
from resgan.nets import sample
from resgan.stage import read_json, read_params, run, write_json
from resgan.training import checkpoint as ckpt_io


# the columns `dvc exp show` leads with (then the rest of metrics.json, sorted)
HEADLINE = ("fid", "fid_se", "fid_over_copier", "fid_over_copier_se", "kid", "precision", "recall",
            "depth", "residual", "loss", "lr_g", "lr_d", "images_per_s")
# the rest of metrics.json: other scores and the train run in MLflow (an experiment's row
# names its run); everything else (SDs of KID and PR, the references' FIDs, the novel band,
# sample counts, the protocol) goes to details.json
SCORES = HEADLINE + ("fid_std", "fid_over_novel", "precision_real", "recall_real",
                     "copier_band_lo", "copier_band_hi", "mlflow_run_id")
TRAINED = ("depth", "residual", "loss", "lr_g", "lr_d", "images_per_s", "mlflow_run_id")  # train's


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
    n_floor = prep["floor_samples"]
    # FID is biased by the sample count: compare with the references at their count.
    at_floor = scorer.with_samples(n_floor).score(G, fid_only=True)
    metrics = {"fid": score.fid, "fid_std": score.fid_std, "fid_se": score.fid_se,
               **{k: getattr(score, k) for k in EXTRA},
               **scorer.real_baseline(),
               "features": e.features, "num_samples": e.num_samples, "repeats": e.repeats,
               "floor_samples": n_floor, "fid_at_floor_samples": at_floor.fid,
               "fid_at_floor_samples_std": at_floor.fid_std, "protocol": score.protocol.id}
    made = Path(args.trained) / "metrics.json"  # absent beside a generator file from elsewhere
    trained = read_json(made) if made.is_file() else {}
    metrics.update({k: trained[k] for k in TRAINED if k in trained})
    with np.load(features_dir(args.prepared) / "floor-draws.npz") as draws:
        for ref in ("copier", "novel"):
            metrics.update(versus_reference(ref, at_floor, draws[ref], e.repeats))
    out = Path(args.out)
    write_json(out / "metrics.json", {k: metrics[k] for k in SCORES if k in metrics}, first=HEADLINE)
    write_json(out / "details.json", {k: v for k, v in metrics.items() if k not in SCORES})
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
    for metric in EXTRA:  # kid_classifier_n1000, kid_std_classifier_n1000, ...
        c.log_metric(run_id, name.replace("fid", metric, 1), getattr(score, metric))
    c.log_metric(run_id, fid_name(e.features, n_floor), at_floor.fid)
    for ref in ("copier", "novel"):
        c.log_metric(run_id, f"{ref}_" + fid_name(e.features, n_floor), metrics[f"fid_{ref}"])
        c.log_metric(run_id, f"fid_over_{ref}", metrics[f"fid_over_{ref}"])
    for k, v in score.protocol.tags().items():
        c.set_tag(run_id, k, v)
    c.log_artifact(run_id, str(out / "samples.png"), artifact_path="eval")
    m = metrics
    print(f"evaluate: FID {score.fid:.3f} (SD {score.fid_std:.3f} over {e.repeats} sample seeds, "
          f"standard error {score.fid_se:.3f}; {e.features} features, {e.num_samples} samples); "
          f"KID {score.kid:.4g} (SD {score.kid_std:.3g}) against the training features, "
          f"{score.kid_heldout:.4g} (SD {score.kid_heldout_std:.3g}) against the held-out ones; "
          f"precision {score.precision:.3f}, recall {score.recall:.3f} (held-out real images: "
          f"{m['precision_real']:.3f}, {m['recall_real']:.3f} at {m['real_samples']}); at "
          f"{n_floor} samples FID {at_floor.fid:.3f}: {ratio_line(m, 'copier')} the FID of a "
          f"generator copying the training set (by noise alone such a generator reads "
          f"{band(m, 'copier')}), {ratio_line(m, 'novel')} that of one of new real images "
          f"({band(m, 'novel')}); protocol {score.protocol.id}")
    return (f"FID {score.fid:.3f} (SD {score.fid_std:.3f}, {e.repeats} seeds; {e.features}, "
            f"{e.num_samples} samples); at {n_floor}: {ratio_line(m, 'copier')} the copier "
            f"(its own noise {band(m, 'copier')}), {ratio_line(m, 'novel')} new real images; "
            f"precision {score.precision:.3f} (real {m['precision_real']:.3f}), "
            f"recall {score.recall:.3f} (real {m['recall_real']:.3f})")


def versus_reference(ref: str, at_floor, draws: np.ndarray, repeats: int) -> dict[str, float]:
    """The generator's FID at the reference's sample count over the reference's mean FID,
    with its standard error (the seeds' and the reference's draws'), and the range the
    reference's own ratio spans at ``repeats`` seeds (5-95 %)."""
    fid_ref, fid_ref_se = mean_and_se(draws)
    ratio = at_floor.fid / fid_ref
    ratio_se = ratio * ((at_floor.fid_se / at_floor.fid) ** 2 + (fid_ref_se / fid_ref) ** 2) ** 0.5
    lo, hi = ratio_band(draws, repeats)
    return {f"fid_{ref}": fid_ref, f"fid_{ref}_se": fid_ref_se, f"fid_over_{ref}": ratio,
            f"fid_over_{ref}_se": ratio_se, f"{ref}_band_lo": lo, f"{ref}_band_hi": hi}


def ratio_line(m: dict, ref: str) -> str:
    """``1.24x ± 0.12 (SE)``: the ratio to a reference with its standard error."""
    return f"{m[f'fid_over_{ref}']:.2f}x ± {m[f'fid_over_{ref}_se']:.2f} (SE)"


def band(m: dict, ref: str) -> str:
    """``0.78-1.26x``: the 5-95 % range of the reference's own ratio at the seed count."""
    return f"{m[f'{ref}_band_lo']:.2f}-{m[f'{ref}_band_hi']:.2f}x"


if __name__ == "__main__":
    run(main)
