"""The command line's entry points: `python -m resgan` and `resgan --version`."""

import subprocess
import sys
from importlib.metadata import version

import pytest

import resgan


def _run(*args):
    return subprocess.run([sys.executable, "-m", "resgan", *args], capture_output=True, text=True,
                          timeout=120)


def test_version_names_resgan_and_its_libraries_on_one_line():
    out = _run("--version")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    assert version("resgan") == resgan.__version__  # pyproject.toml reads it from the package
    assert lines[0].startswith(f"resgan {resgan.__version__} (torch {version('torch')}, "
                               f"ray {version('ray')}, mlflow {version('mlflow')}, ")


@pytest.mark.parametrize("args", [["--help"], ["sample", "--help"], ["promote", "--help"]])
def test_python_dash_m_is_the_resgan_command(args):
    out = _run(*args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: resgan")


def test_no_command_is_a_usage_error():
    out = _run()
    assert out.returncode == 2
    assert "the following arguments are required" in out.stderr
