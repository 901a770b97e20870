"""Benchmark (p): is any training step slower than at another revision? Two code trees side by side.

A refactor must not make training slower. This checks out ``--base`` (any git revision) as a
temporary worktree and runs benchmark (a) (``bench/throughput.py --stage-only``: the plain
loop, then the train stage's path, then the plain loop again) with each tree's own code, in
alternation (base, this tree; this tree, base; ...), on the same data and the same fixed
configuration: params.yaml with tune's chosen values written into a temporary params file,
so both revisions read one configuration. It prints, per round and as a median, this tree's
images/s over the base's for the plain loop and for the train stage's path.

Run after `make run` (it needs outputs/prepare and, where params.yaml searches, tune's choice):
    .venv/bin/python bench/revisions.py --base <revision> [--epochs 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML

from resgan.machine import describe
from resgan.stage import read_params
from resgan.training.job import with_choice

ROOT = Path(__file__).resolve().parents[1]


def measure(tree: Path, work: Path, prepared: Path, epochs: int) -> dict[str, float]:
    """Benchmark (a) --stage-only, one round, with ``tree``'s code: images/s of the plain loop
    (mean of the runs before and after) and of the train stage's path."""
    out = work / "result.json"
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "RESGAN_CPU_SHARE": "off"}
    subprocess.run([sys.executable, str(tree / "bench" / "throughput.py"), "--stage-only",
                    "--rounds", "1", "--epochs", str(epochs), "--prepared", str(prepared),
                    "--json", str(out)], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    r = json.loads(out.read_text())
    return {"plain": statistics.fmean(p[0] for p in r["plain"]), "stage": r["local_mode"][0][0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the git revision to compare with (e.g. a tag or commit)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two trees (default: %(default)s)")
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    cfg = with_choice(read_params())  # one fixed configuration for both revisions
    prepared = Path(a.prepared).resolve()
    if not (prepared / "train.npz").exists():
        raise SystemExit(f"{prepared}/train.npz not found: run `dvc repro prepare` first")
    with tempfile.TemporaryDirectory(prefix="resgan-revisions-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(base),
                        a.base], check=True)
        try:
            work = tmp / "work"
            work.mkdir()
            YAML(typ="safe").dump(cfg.model_dump(mode="json"), work / "params.yaml")
            rows = []
            for i in range(a.rounds):
                order = [("base", base), ("head", ROOT)][:: 1 if i % 2 == 0 else -1]
                got = {name: measure(tree, work, prepared, a.epochs) for name, tree in order}
                rows.append({"order": [n for n, _ in order], **got,
                             "plain_ratio": got["head"]["plain"] / got["base"]["plain"],
                             "stage_ratio": got["head"]["stage"] / got["base"]["stage"]})
                print(f"round {i + 1} ({' then '.join(rows[-1]['order'])}): plain loop "
                      f"{got['base']['plain']:.0f} -> {got['head']['plain']:.0f} images/s "
                      f"({rows[-1]['plain_ratio']:.3f}x), train stage's path {got['base']['stage']:.0f} "
                      f"-> {got['head']['stage']:.0f} ({rows[-1]['stage_ratio']:.3f}x)", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    med = {k: statistics.median(r[k] for r in rows) for k in ("plain_ratio", "stage_ratio")}
    print(f"\n{describe()}; {cfg.data.dataset} {cfg.data.resolution}x{cfg.data.resolution}, depth "
          f"{cfg.model.depth}, {cfg.model.channels} channels, batch {cfg.train.batch_size}, {a.epochs} "
          f"epochs per run: this tree over {a.base}: plain loop {med['plain_ratio']:.3f}x, train stage's "
          f"path {med['stage_ratio']:.3f}x (medians of {a.rounds} rounds)")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": describe(), "base": a.base, "rounds": rows,
                                            "median": med}, indent=2))


if __name__ == "__main__":
    main()
