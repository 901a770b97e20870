"""register: log the generator to MLflow, register a version, gate the champion alias.

Reads params: register.*, eval.* (the gate scores the champion and the candidate again on
fresh sample seeds under evaluate's protocol). Writes the decision (the test, both models'
per-seed means and SDs on those seeds, the p-value, the protocol) as a DVC metrics file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resgan.stage import read_json, read_params, run, write_json
from resgan import tracking
from resgan.metrics.scoring import Scorer


# evaluate's figures against the two references, recorded on every version
REFERENCE_TAGS = ("fid_over_copier", "fid_over_copier_se", "copier_band_lo", "copier_band_hi",
                  "fid_over_novel", "fid_over_novel_se", "novel_band_lo", "novel_band_hi")


def main() -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--trained", default="outputs/train", help="train's output folder")
    ap.add_argument("--evaluated", default="outputs/eval", help="evaluate's output folder")
    ap.add_argument("--out", default="outputs/register", help="output folder")
    args = ap.parse_args()
    cfg = read_params()
    from resgan.registry import register  # after validation: imports MLflow

    score = read_json(f"{args.evaluated}/score.json")
    metrics = {**read_json(f"{args.evaluated}/details.json"),
               **read_json(f"{args.evaluated}/metrics.json")}

    scorers: list[Scorer] = []

    def rescore(G, seeds: range) -> list[float]:
        """Per-seed FIDs of G on ``seeds`` under evaluate's protocol (the same extractor,
        reference, sample count and scoring code)."""
        if not scorers:
            scorers.append(Scorer.from_eval(args.prepared, cfg.eval))
            if scorers[0].protocol.id != score["protocol_id"]:
                raise RuntimeError("eval params changed since evaluate ran: run `dvc repro`")
        print(f"register: scoring a generator on fresh seeds {seeds.start}-{seeds.stop - 1}",
              flush=True)
        return list(scorers[0].with_seeds(seeds).score(G, fid_only=True).per_seed)

    r = cfg.register
    decision = register(
        f"{args.trained}/generator.pt",
        run_id=(Path(args.trained) / "run_id.txt").read_text().strip(),
        model_name=r.model_name, score=score, commit=tracking.git_commit(),
        alpha=r.alpha, min_improvement=r.min_improvement, rescore=rescore,
        lock_timeout_s=r.lock_timeout_s,
        extra_tags={**{k: repr(float(metrics[k])) for k in REFERENCE_TAGS},
                    **{k: v for k, v in tracking.provenance_tags().items()
                       if k.startswith("resgan.dvc")}})  # git_commit is tagged by register
    write_json(f"{args.out}/decision.json", decision.as_dict())
    verdict = "promoted to @champion" if decision.promoted else "not promoted"
    return f"{r.model_name} version {decision.version} {verdict} ({decision.reason})"


if __name__ == "__main__":
    run(main)
