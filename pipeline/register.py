"""register: log the generator to MLflow, register a version, gate the champion alias.

Reads params: register.*. Writes the decision as a DVC metrics file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import read_json, read_params, run, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trained", default="outputs/train", help="train's output folder")
    ap.add_argument("--evaluated", default="outputs/eval", help="evaluate's output folder")
    ap.add_argument("--out", default="outputs/register", help="output folder")
    args = ap.parse_args()
    cfg = read_params()
    from resgan.registry import git_commit, register  # after validation: imports MLflow

    decision = register(
        f"{args.trained}/generator.pt",
        run_id=(Path(args.trained) / "run_id.txt").read_text().strip(),
        model_name=cfg.register.model_name,
        evaluation=read_json(f"{args.evaluated}/metrics.json"), commit=git_commit())
    write_json(f"{args.out}/decision.json", decision.as_dict())
    verdict = "promoted to @champion" if decision.promoted else "not promoted"
    print(f"register: {cfg.register.model_name} version {decision.version} {verdict} "
          f"({decision.reason})")


if __name__ == "__main__":
    run(main)
