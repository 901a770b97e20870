"""register: log the generator to MLflow, register a version, gate the champion alias.

Reads params: register.*, eval.* (to re-score a champion that was scored under another
protocol). Writes the decision (both scores, the margin, the protocol) as a DVC metrics file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resgan.stage import read_json, read_params, run, write_json
from resgan import tracking
from resgan.metrics.scoring import Scorer


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
    metrics = read_json(f"{args.evaluated}/metrics.json")

    def rescore(G) -> dict:
        """The champion under this candidate's protocol (the same extractor, reference,
        samples and seeds evaluate used)."""
        scorer = Scorer.from_eval(args.prepared, cfg.eval)
        if scorer.protocol.id != score["protocol_id"]:
            raise RuntimeError("eval params changed since evaluate ran: run `dvc repro`")
        print(f"register: re-scoring the champion under {scorer.protocol.describe()}", flush=True)
        return scorer.score(G).as_dict()

    r = cfg.register
    decision = register(
        f"{args.trained}/generator.pt",
        run_id=(Path(args.trained) / "run_id.txt").read_text().strip(),
        model_name=r.model_name, score=score, commit=tracking.git_commit(),
        min_improvement=r.min_improvement, rescore=rescore, lock_timeout_s=r.lock_timeout_s,
        extra_tags={"fid_floor": repr(float(metrics["fid_floor"])),
                    "fid_over_floor": repr(float(metrics["fid_over_floor"])),
                    "fid_over_floor_se": repr(float(metrics["fid_over_floor_se"])),
                    **{k: v for k, v in tracking.provenance_tags().items()
                       if k.startswith("resgan.dvc")}})  # git_commit is tagged by register
    write_json(f"{args.out}/decision.json", decision.as_dict())
    verdict = "promoted to @champion" if decision.promoted else "not promoted"
    return f"{r.model_name} version {decision.version} {verdict} ({decision.reason})"


if __name__ == "__main__":
    run(main)
