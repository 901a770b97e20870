"""The stage console (resgan.console): what reaches the terminal, what goes to the log.

Each test runs a small stage script in its own process (the console takes over file
descriptors 1 and 2), with a real child process, raw writes to descriptor 2, warnings, the
training loop's epoch lines, and in one test a real Ray runtime with a worker that prints.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from resgan.console import EPOCH_RE, epoch_line, parse_epoch_line

STAGE = textwrap.dedent("""
    import os, subprocess, sys, warnings
    from resgan import console
    from resgan.config import ConfigError
    from resgan.stage import run

    def main():
        mode = os.environ.get("DEMO_FAIL")
        if mode == "config":
            raise ConfigError("train.loss: 'foo' is not one of bce, hinge, wgan-gp")
        print("chatter on stdout")
        print("chatter on stderr", file=sys.stderr)
        os.write(2, b"[2026-11-29 00:31:33,828 E 23371 23512] core_worker.cc:2465: not a failure\\n")
        subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)
        warnings.warn_explicit("a library's warning", UserWarning, "site-packages/lib/x.py", 1)
        warnings.warn_explicit("resgan's own warning", UserWarning, "src/resgan/x.py", 1)
        console.say("demo: a note for the person")
        for _ in range(2 if mode == "twice" else 1):  # e.g. make quality trains two networks
            console.follow_epochs(3)
            for e in (1, 2, 3):
                print("(RayTrainWorker pid=1) " + console.epoch_line(e, 3, {"loss_d": 0.5, "fid": 12.5 - e}))
        if mode == "crash":
            raise RuntimeError("something broke")
        if mode == "segfault":
            import ctypes
            ctypes.string_at(0)  # a native crash
        return "headline 42"

    run(main, "demo")
""")


def _run_stage(tmp_path, script=STAGE, **env):
    (tmp_path / "stage.py").write_text(script)
    e = {**os.environ, **env}
    if "RESGAN_VERBOSE" not in env:
        e.pop("RESGAN_VERBOSE", None)
    out = subprocess.run([sys.executable, "stage.py"], cwd=tmp_path, env=e, capture_output=True,
                         timeout=300)  # bytes: text mode would turn a bar's \r into \n
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(),
                                       out.stderr.decode())


def _lines(text):
    """The lines a person sees: a progress bar's redraws (carriage returns) count once."""
    return [ln.rsplit("\r", 1)[-1] for ln in text.split("\n") if ln.strip()]


def test_terminal_gets_start_notes_bar_and_headline_and_the_log_gets_everything(tmp_path):
    out = _run_stage(tmp_path)
    assert out.returncode == 0, out.stderr
    term = _lines(out.stdout) + _lines(out.stderr)
    log_path = tmp_path / "outputs/logs/demo.log"
    assert term[0] == "demo: started; full log in outputs/logs/demo.log"
    assert "demo: a note for the person" in term
    bar = [ln for ln in term if ln.startswith("epochs:")]
    assert len(bar) == 1 and "3/3" in bar[0] and "FID 9.5" in bar[0], term
    done = [ln for ln in term if ln.startswith("demo: done in ")]
    assert len(done) == 1 and done[0].endswith(": headline 42")
    assert any("resgan's own warning" in ln for ln in term)
    assert len(term) == 5, term  # start, warning, note, bar, done: nothing else
    for hidden in ("chatter", "core_worker", "child process", "library's warning", "epoch 1/3"):
        assert hidden not in out.stdout + out.stderr
    log = log_path.read_text()
    for kept in ("chatter on stdout", "chatter on stderr", "core_worker.cc:2465", "from a child process",
                 "a library's warning", "resgan's own warning", "demo: a note for the person",
                 "epoch 3/3: loss_d=0.5 fid=9.5", "demo: started", "demo: done in"):
        assert kept in log, kept
    assert len(set(_lines(log))) == len(_lines(log))  # no line twice


def test_a_second_training_gets_a_bar_of_its_own_below_the_first(tmp_path):
    out = _run_stage(tmp_path, DEMO_FAIL="twice")
    assert out.returncode == 0, out.stderr
    bars = [ln for ln in _lines(out.stdout) + _lines(out.stderr) if ln.startswith("epochs:")]
    assert len(bars) == 2 and all("3/3" in b for b in bars), bars
    assert "\x1b[A" not in out.stdout + out.stderr  # the first bar was closed, not stacked


def test_verbose_prints_everything_and_writes_no_log(tmp_path):
    out = _run_stage(tmp_path, RESGAN_VERBOSE="1")
    assert out.returncode == 0, out.stderr
    both = out.stdout + out.stderr
    for shown in ("chatter on stdout", "chatter on stderr", "core_worker.cc", "from a child process",
                  "a library's warning", "epoch 3/3", "demo: done in"):
        assert shown in both, shown
    assert "epochs:" not in both  # no bars in verbose mode
    assert not (tmp_path / "outputs/logs").exists()


def test_a_config_error_is_one_line_on_stderr(tmp_path):
    out = _run_stage(tmp_path, DEMO_FAIL="config")
    assert out.returncode == 1
    assert _lines(out.stderr) == ["error: train.loss: 'foo' is not one of bce, hinge, wgan-gp"]
    assert "done in" not in out.stdout
    assert "error: train.loss" in (tmp_path / "outputs/logs/demo.log").read_text()


def test_a_crash_shows_its_traceback_and_names_the_log(tmp_path):
    out = _run_stage(tmp_path, DEMO_FAIL="crash")
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "RuntimeError: something broke" in out.stderr
    assert _lines(out.stderr)[-1].startswith("demo: failed after ")
    assert _lines(out.stderr)[-1].endswith("full log in outputs/logs/demo.log")
    assert "RuntimeError: something broke" in (tmp_path / "outputs/logs/demo.log").read_text()


RAY_STAGE = textwrap.dedent("""
    import ray
    from resgan.stage import run
    from resgan.runtime.cluster import init_ray

    @ray.remote(num_cpus=1)
    def shout():
        print("a line from a Ray worker")
        return 7

    def main():
        init_ray()
        return f"worker returned {ray.get(shout.remote())}"

    run(main, "raydemo")
""")


@pytest.mark.ray
@pytest.mark.parametrize("verbose", [False, True])
def test_ray_output_goes_to_the_log_once(tmp_path, verbose):
    env = {"RESGAN_VERBOSE": "1"} if verbose else {}
    env.update(RAY_ADDRESS="")  # a Ray of its own
    out = _run_stage(tmp_path, RAY_STAGE, **env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    both = out.stdout + out.stderr
    assert "raydemo: done in" in both and "worker returned 7" in both
    if verbose:
        assert both.count("a line from a Ray worker") == 1
        return
    term = _lines(both)
    assert len(term) == 2, term  # started, done
    log = (tmp_path / "outputs/logs/raydemo.log").read_text()
    assert log.count("a line from a Ray worker") == 1


def test_epoch_lines_are_what_the_console_follows():
    line = epoch_line(12, 100, {"epoch": 12, "loss_d": 1.25, "fid": 38.93})
    assert line == "epoch 12/100: loss_d=1.25 fid=38.93"
    m = EPOCH_RE.search("\x1b[36m(RayTrainWorker pid=23702)\x1b[0m " + line)
    assert m and m.group(1, 2) == ("12", "100")
    assert EPOCH_RE.search("resuming from the checkpoint of epoch 12 (step 264)") is None
    # read back as the console and bench/throughput.py read it
    assert parse_epoch_line("(RayTrainWorker pid=1) " + line) == (12, 100, {"loss_d": 1.25, "fid": 38.93})
    assert parse_epoch_line(epoch_line(3, 9, {"images_per_s": 1081.3})) == (3, 9, {"images_per_s": 1081})
    assert parse_epoch_line("resuming from the checkpoint of epoch 12 (step 264)") is None


@pytest.mark.parametrize("in_stage", [False, True])
def test_trial_bar_outside_and_inside_a_stage(tmp_path, monkeypatch, in_stage):
    """Tune's callback works with no console (tests, benches, RESGAN_VERBOSE=1): a disabled bar."""
    from types import SimpleNamespace

    from resgan import console
    from resgan.tuning import TrialProgress

    cb = TrialProgress(3)
    if in_stage:  # a console whose "terminal" is a file, descriptors left alone
        con = console.Console("tune", tmp_path / "logs")
        con.out = open(tmp_path / "terminal.txt", "w")
        monkeypatch.setattr(console, "_active", con)
    trials = [SimpleNamespace(status=s) for s in ("RUNNING", "PENDING", "PENDING")]
    cb.on_step_begin(0, trials)
    cb.on_trial_result(0, trials, trials[0], {"fid": 12.5})
    trials[0].status = "TERMINATED"
    trials[1].status = "RUNNING"
    cb.on_step_begin(1, trials)
    for t in trials:
        t.status = "TERMINATED"
    cb.on_experiment_end(trials)
    if in_stage:
        con.out.close()
        shown = (tmp_path / "terminal.txt").read_text().rsplit("\r", 1)[-1]
        assert "tune: 100%" in shown and "3/3 trials" in shown and "best FID 12.5" in shown


@pytest.mark.parametrize("script", ["quality", "ablation"])
def test_a_report_scripts_missing_input_is_one_line_on_the_terminal(tmp_path, script):
    """A missing input of `make quality` / `make ablation` names what to run first, on the
    terminal (not only in the stage's log), before any work."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    e = {k: v for k, v in os.environ.items() if k != "RESGAN_VERBOSE"}
    out = subprocess.run([sys.executable, str(repo / "pipeline" / f"{script}.py")], cwd=tmp_path,
                         env=e, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "`make run`" in errors[0], out.stderr  # what to run first


@pytest.mark.parametrize("script", ["tune", "train"])
def test_a_batch_larger_than_the_training_set_is_refused_before_work(tmp_path, script):
    """A batch above the training set's size would train epochs of no step and leave G at its
    initial weights: tune and train refuse it in one line naming both numbers."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    params = (repo / "params.yaml").read_text().replace("batch_size: 64", "batch_size: 2048", 1)
    assert "batch_size: 2048" in params
    (tmp_path / "params.yaml").write_text(params)
    (tmp_path / "outputs" / "prepare").mkdir(parents=True)
    (tmp_path / "outputs" / "prepare" / "metrics.json").write_text('{"stats_samples": 1437}')
    (tmp_path / "outputs" / "tune").mkdir()
    (tmp_path / "outputs" / "tune" / "best.json").write_text(
        '{"searched": ["depth", "lr_g", "lr_d"], "point": {"depth": 2, "lr_g": 0.0002, "lr_d": 0.0002}}')
    e = {k: v for k, v in os.environ.items() if k != "RESGAN_VERBOSE"}
    out = subprocess.run([sys.executable, str(repo / "pipeline" / f"{script}.py")], cwd=tmp_path,
                         env=e, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == ["error: train.batch_size: 2048 is larger than the training set (1,437 "
                      "images in outputs/prepare): an epoch would train on no batch; allowed "
                      "at most 1,437"], out.stderr
    assert not (tmp_path / ".ray_results").exists() and not (tmp_path / "mlruns").exists()


def test_a_native_crash_reaches_the_terminal(tmp_path):
    """A segfault (SIGSEGV in C code) prints Python's stack on the terminal, not only in the log."""
    out = _run_stage(tmp_path, DEMO_FAIL="segfault")
    assert out.returncode == -11, out.returncode
    assert "Fatal Python error: Segmentation fault" in out.stderr
    assert "stage.py" in out.stderr  # where it happened


def test_a_full_disk_under_the_log_still_reaches_the_terminal(tmp_path):
    """The log on a device that is full (/dev/full: every write fails with ENOSPC): the stage
    ends in one line on the terminal, exit 1."""
    (tmp_path / "outputs/logs").mkdir(parents=True)
    (tmp_path / "outputs/logs/demo.log").symlink_to("/dev/full")
    out = _run_stage(tmp_path)
    assert out.returncode == 1
    assert _lines(out.stderr)[-1].startswith("error: no space left on the device"), out.stderr
    assert "Traceback" not in out.stderr
    out = _run_stage(tmp_path, DEMO_FAIL="config")  # and a known error keeps its own line
    assert _lines(out.stderr) == ["error: train.loss: 'foo' is not one of bce, hinge, wgan-gp"]


def test_a_log_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs/logs").write_text("a file where the logs folder should be")
    out = _run_stage(tmp_path)
    assert out.returncode == 1
    assert _lines(out.stderr) == [
        "error: outputs/logs/demo.log: cannot write the stage's log (File exists); free or fix "
        "that folder, or set RESGAN_VERBOSE=1 to run without a log"], out.stderr
    assert "chatter" not in out.stdout  # nothing ran
