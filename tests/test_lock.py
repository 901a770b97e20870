"""The promotion lock (resgan.registry.promotion_lock) excludes, with real processes on a
real MLflow store: a holder longer than the lease, a waiter whose clock runs a day ahead, a
SIGKILLed holder and two waiters breaking its ticket at once."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

LEASE = 2.0  # seconds (the default is 60): renewed every 0.5 s

HOLDER = textwrap.dedent("""
    import os, sys, time
    name, hold, log, skew = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    if skew:  # this process's wall clock runs ahead (the lock must not care)
        real = time.time
        time.time = lambda: real() + skew
    from resgan.registry import promotion_lock
    def note(what):
        with open(log, "a") as f:
            f.write(f"{what} {name} {time.monotonic():.3f}\\n")
    note("ready")
    with promotion_lock("m", timeout_s=120, lease_s=%r):
        note("enter")
        time.sleep(hold)
        note("exit")
""" % LEASE)


def _start(tmp_path, name: str, hold: float, skew: float = 0.0) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    return subprocess.Popen([sys.executable, str(script), name, str(hold),
                             str(tmp_path / "lock.log"), str(skew)], cwd=tmp_path,
                            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _events(tmp_path) -> list[tuple[str, str, float]]:
    path = tmp_path / "lock.log"
    if not path.exists():
        return []
    return [(w, n, float(t)) for w, n, t in (ln.split() for ln in path.read_text().splitlines())]


def _wait_for(tmp_path, what: str, name: str, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w, n, t in _events(tmp_path):
            if (w, n) == (what, name):
                return t
        time.sleep(0.1)
    raise AssertionError(f"{name} never logged {what}: {_events(tmp_path)}")


def _intervals(tmp_path) -> dict[str, tuple[float, float]]:
    ev = _events(tmp_path)
    enter = {n: t for w, n, t in ev if w == "enter"}
    exit_ = {n: t for w, n, t in ev if w == "exit"}
    return {n: (enter[n], exit_.get(n, float("inf"))) for n in enter}


def _assert_exclusive(spans: dict[str, tuple[float, float]]) -> None:
    ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
    for (a, (_, a_end)), (b, (b_start, _)) in zip(ordered, ordered[1:]):
        assert b_start >= a_end, f"{b} entered at {b_start} while {a} held until {a_end}"


def _finish(procs) -> None:
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]


def test_a_long_holder_keeps_its_lock_and_a_clock_ahead_breaks_nothing(mlflow_store, tmp_path):
    """A holds for 3.5 leases (a gate re-scoring on a CPU): its renewals keep B (whose clock
    runs a day ahead) and C out until it releases; then they take turns."""
    a = _start(tmp_path, "A", hold=3.5 * LEASE)
    a_in = _wait_for(tmp_path, "enter", "A")
    b = _start(tmp_path, "B", hold=0.5, skew=86_400.0)
    c = _start(tmp_path, "C", hold=0.5)
    _finish([a, b, c])
    spans = _intervals(tmp_path)
    assert set(spans) == {"A", "B", "C"}
    _assert_exclusive(spans)
    assert min(spans["B"][0], spans["C"][0]) >= spans["A"][1] > a_in + 3 * LEASE


def test_a_killed_holder_is_broken_after_its_lease_and_two_breakers_take_turns(
        mlflow_store, tmp_path):
    """A is SIGKILLed while holding. B and C, both waiting, both see its ticket stale and
    break it; then exactly one holds at a time, and the first gets in about one lease after
    the kill (well within the 300 s default wait)."""
    from resgan import tracking

    a = _start(tmp_path, "A", hold=600)
    _wait_for(tmp_path, "enter", "A")
    b = _start(tmp_path, "B", hold=1.0)
    c = _start(tmp_path, "C", hold=1.0)
    _wait_for(tmp_path, "ready", "B")
    _wait_for(tmp_path, "ready", "C")
    time.sleep(1.0)  # both waiting on A's ticket
    a.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    a.wait(timeout=30)
    _finish([b, c])
    spans = _intervals(tmp_path)
    assert set(spans) == {"A", "B", "C"} and spans["A"][1] == float("inf")
    del spans["A"]  # never released
    _assert_exclusive(spans)
    first = min(s for s, _ in spans.values())
    assert 0.7 * LEASE <= first - killed <= LEASE + 8, first - killed
    live = tracking.client().search_model_versions("name='m--promotion-lock'")
    assert live == []  # A's ticket broken, B's and C's released


def test_a_waiter_that_times_out_names_the_holder_and_leaves_no_ticket(mlflow_store, tmp_path):
    from resgan import tracking
    from resgan.registry import RegistryError, promotion_lock

    a = _start(tmp_path, "A", hold=4 * LEASE)
    _wait_for(tmp_path, "enter", "A")
    with pytest.raises(RegistryError, match=r"waited 2 s for the promotion lock of model 'm' "
                                            r"\(held by [^:]+:\d+:[0-9a-f]{8}, ticket 1 "):
        with promotion_lock("m", timeout_s=2, lease_s=LEASE):
            pass
    _finish([a])
    assert tracking.client().search_model_versions("name='m--promotion-lock'") == []
