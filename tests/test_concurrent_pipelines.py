"""Two `dvc repro` of the whole pipeline at once on one machine, each with its own local Ray,
sharing one ray.storage_path.

Before each pipeline's processes had their own Ray address in RAY_ADDRESS, Ray Train's
placement-group cleaner (an actor) auto-detected the cluster, found "multiple active Ray
instances" and died; the placement groups of trials that ASHA stopped were never removed
and the remaining trials waited for CPUs forever.
"""

import os
import signal
import subprocess
import time

import pytest

from test_e2e import _make_repo, _set_param, _store

pytestmark = pytest.mark.e2e

# Both pipelines together: 10.5 min measured on 2 cores that other jobs kept busy (load 10-25);
# a regression ends with the clear wait error after 240 s instead.
DEADLINE_S = 1200


def test_two_pipelines_at_once_both_finish(tmp_path):
    """Two copies with the same config and code, sharing ray.storage_path (docs/operations.md
    cluster set-up): each runs its own tune and train; neither adopts the other's live run."""
    repos = [_make_repo(tmp_path / name) for name in ("a", "b")]
    shared = tmp_path / "shared-ray-storage"
    procs = []
    for work, env in repos:
        _set_param((work, env), "ray", "storage_path", str(shared))
        # 3 trials, 2 at a time: the third needs the CPUs the first two held (their
        # placement groups leaked when the cleaner failed, whether ASHA stopped them or not).
        _set_param((work, env), "tune", "num_samples", 3)
        # A regression ends in a clear one-line error rather than a hang until the deadline.
        env = {**env, "RESGAN_WORKER_WAIT_S": "240", "RESGAN_TRIAL_WAIT_S": "240"}
        procs.append(subprocess.Popen(
            ["dvc", "repro"], cwd=work, env=env, start_new_session=True, text=True,
            stdout=open(work / "repro.log", "w"), stderr=subprocess.STDOUT))
    t0 = time.monotonic()
    try:
        for p in procs:
            p.wait(timeout=max(1.0, DEADLINE_S - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    # what each printed, then its stages' full logs (resgan.console)
    logs = ["\n".join(f.read_text() for f in [work / "repro.log", *sorted(work.glob("outputs/logs/*.log"))])
            for work, _ in repos]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"rc {p.returncode} after {time.monotonic() - t0:.0f} s:\n" \
                                  + log[-4000:]
        assert "multiple active Ray instances" not in log
        assert "resuming the interrupted run" not in log  # the other's live run is not adopted
    records = sorted(p.name for p in shared.glob("*.resgan.json"))
    assert len([r for r in records if r.startswith("tune-")]) == 2, records  # a run each
    assert len([r for r in records if r.startswith("train-")]) == 2, records
    for work, env in repos:
        champ = _store((work, env)).get_model_version_by_alias("resgan", "champion")
        assert champ.run_id == (work / "outputs/train/run_id.txt").read_text().strip()
