"""The champion as a REST service: `mlflow models serve` on loopback, a real HTTP request.

docs/operations.md ("Serving the champion") documents the same request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from resgan import tracking
from resgan.nets import Generator
from resgan.registry import ALIAS, log_generator
from resgan.training import checkpoint as ckpt_io

pytestmark = pytest.mark.e2e

MODEL = "resgan-serve-test"
STARTUP_S = 300  # measured: 15-30 s on 2 idle cores; over 120 s with Ray runs beside it


def _champion(tmp_path: Path) -> Path:
    """A tiny generator file, logged as the registry logs G_ema (pt2) and made champion.
    (The champion gate itself is tested in test_registry.py; this is what serving sees.)"""
    torch.manual_seed(0)
    G = Generator(z_dim=16, channels=8, depth=1)
    path = tmp_path / "g.pt"
    ckpt_io.export_generator({"G_kwargs": G.kwargs, "G_ema": G.state_dict(), "epoch": 1,
                              "config": {}}, path)
    run_id = tracking.start_run("test", "served")
    uri = log_generator(path, run_id)
    c = tracking.client()
    c.create_registered_model(MODEL)
    model_id = uri.removeprefix("models:/") if uri.startswith("models:/m-") else None
    mv = c.create_model_version(MODEL, source=uri, run_id=run_id, model_id=model_id)
    c.set_registered_model_alias(MODEL, ALIAS, mv.version)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status


def _post(url: str, body: dict, timeout: float = 60.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200
        return json.loads(r.read())


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and everything it started (uvicorn and its workers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass


def test_champion_answers_rest_request(mlflow_store, tmp_path):
    t0 = time.monotonic()
    gen = _champion(tmp_path)  # about 20 s: log_model infers pip requirements in a subprocess
    print(f"champion registered in {time.monotonic() - t0:.1f} s")

    bin_dir = Path(sys.executable).parent  # the venv's bin/: mlflow starts `uvicorn` by name
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group, stopped whole
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited ({proc.returncode}) before answering "
                            f"/ping:\n{log.read_text()[-3000:]}")
            try:
                if _get(f"{base}/ping") == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() - t0 < STARTUP_S, (
                f"mlflow models serve did not answer /ping on {base} within {STARTUP_S} s:\n"
                f"{log.read_text()[-3000:]}")
            time.sleep(0.5)
        print(f"server ready in {time.monotonic() - t0:.1f} s")

        state = ckpt_io.load(gen)
        G = ckpt_io.generator_from(state)
        z = torch.randn(5, G.z_dim, generator=torch.Generator().manual_seed(1))
        # the request: a batch of latents, one row of z_dim floats per image
        resp = _post(f"{base}/invocations", {"inputs": z.tolist()})
        images = np.asarray(resp["predictions"], dtype=np.float32)

        k = state["G_kwargs"]
        assert images.shape == (5, k["img_channels"], k["resolution"], k["resolution"])
        assert images.min() >= -1.0 and images.max() <= 1.0
        with torch.no_grad():
            expected = G(z).numpy()
        np.testing.assert_allclose(images, expected, atol=1e-5)
        assert images.std() > 0

        # a latent of the wrong size: a 400 that names the expected shape (the signature)
        with pytest.raises(urllib.error.HTTPError) as err:
            _post(f"{base}/invocations", {"inputs": [[0.1, 0.2]]})
        assert err.value.code == 400
        assert f"(-1, {G.z_dim})" in err.value.read().decode()
    finally:
        _stop(proc)
