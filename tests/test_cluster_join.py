"""The scale-out commands of docs/operations.md against a real head: `ray start --head` with token
authentication, joined through RAY_ADDRESS.

The head runs with its own HOME (its token in <home>/.ray/auth_token), its own temp dir and
a free loopback port, and is stopped by killing its own processes (found by that temp
dir), so other Ray instances on the machine are left alone."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(temp_dir: str) -> None:
    """Kill the processes of the head started with ``temp_dir`` (and their children)."""
    mine = [p for p in psutil.process_iter(["cmdline"])
            if p.pid != os.getpid() and any(temp_dir in a for a in (p.info["cmdline"] or []))]
    procs = {c for p in mine for c in [p, *p.children(recursive=True)]}
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(procs), timeout=30)


@pytest.fixture(scope="module")
def head():
    """A head node as docs/operations.md starts one: a token, then `ray start --head`."""
    root = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths have a limit
    home, temp = Path(root) / "home", str(Path(root) / "ray")
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    port = _free_port()
    subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True, timeout=60)
    started = subprocess.run(
        [BIN / "ray", "start", "--head", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard", "false", "--temp-dir", temp, "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        assert "Token authentication is enabled" in started.stdout + started.stderr
        yield {"address": f"127.0.0.1:{port}", "home": home, "env": env}
    finally:
        _stop(temp)
        shutil.rmtree(root, ignore_errors=True)


JOIN = ("from resgan.stage import run\n"
        "from resgan.runtime.cluster import init_ray\n"
        "import os, ray\n"
        "def main():\n"
        "    init_ray()\n"
        "    return f\"joined {ray.cluster_resources().get('CPU')} {os.environ.get('RAY_AUTH_MODE')}\"\n"
        "run(main, 'join')\n")  # a stage's console: its headline on the terminal


def test_a_driver_joins_the_head_with_its_token(head, tmp_path):
    """RAY_AUTH_MODE unset and the token in ~/.ray/auth_token: Ray alone would refuse."""
    env = {**head["env"], "RAY_ADDRESS": head["address"]}
    out = subprocess.run([sys.executable, "-c", JOIN], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "joined 2.0 token" in out.stdout


@pytest.mark.parametrize("token, expected", [
    ("0" * 32, "refused the token from RAY_AUTH_TOKEN: give the head's token"),  # not the head's
    (None, "uses token authentication and this driver has no token: give the head's token"),
])
def test_a_refused_driver_ends_in_one_clear_line_at_once(head, tmp_path, token, expected):
    """Asked first (Ray alone retries for about a minute, then prints a traceback)."""
    env = {**head["env"], "HOME": str(tmp_path), "RAY_ADDRESS": head["address"]}
    if token:
        env["RAY_AUTH_TOKEN"] = token
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", JOIN], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the Ray cluster at "), out.stderr[-2000:]
    assert expected in last
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 5
    assert time.monotonic() - t0 < 45  # interpreter and imports included; not Ray's minute


def _jobs(head) -> int:
    """How many jobs (drivers) the head has seen, counted by one more driver."""
    code = ("from resgan.runtime.cluster import init_ray\nimport ray._private.state as state\n"
            "init_ray()\nprint('jobs', len(state.jobs()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**head["env"], "RAY_ADDRESS": head["address"]})
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split("jobs")[-1])


@pytest.mark.e2e
def test_tiny_pipeline_runs_on_the_head(head, tmp_path):
    """`RAY_ADDRESS=<head> dvc repro`: tune and train run on the head; the champion is registered."""
    from test_e2e import _dvc, _make_repo, _ran, _store

    work, env = _make_repo(tmp_path / "repo")
    env = {**env, "HOME": str(head["home"]), "RAY_ADDRESS": head["address"]}
    env.pop("RAY_AUTH_MODE", None)
    before = _jobs(head)
    out = _dvc((work, env), "repro")
    assert _ran(out) == ["prepare", "tune", "train", "evaluate", "register"]
    champ = _store((work, env)).get_model_version_by_alias("resgan", "champion")
    assert champ.run_id == (work / "outputs/train/run_id.txt").read_text().strip()
    # tune and train were jobs of that head (the count's own driver is one more)
    assert _jobs(head) - before >= 3
