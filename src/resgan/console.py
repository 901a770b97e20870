"""What a stage shows on the terminal, and the log file that gets everything else.

A stage (``resgan.stage.run``) opens a ``Console``: the terminal then gets one line when
the stage starts (naming its log file), progress bars over trials and epochs, the notes a
person must see (resumed runs, fallbacks), resgan's own warnings, errors, and one line when
the stage ends, with its wall time and headline figure. Everything else the process and its
children write (Ray's and Tune's output, each worker's lines, MLflow's messages, C++ logs on
file descriptor 2) goes to ``outputs/logs/<stage>.log``: file descriptors 1 and 2 point
there, and the terminal is reached through copies of them.

``RESGAN_VERBOSE=1`` leaves the descriptors alone: everything is printed as it comes, with
no log file and no progress bars.
"""

from __future__ import annotations

import faulthandler
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

VERBOSE_ENV = "RESGAN_VERBOSE"
LOG_DIR = "outputs/logs"

# The training loop's per-epoch line (epoch_line); Ray prefixes the lines of its workers
# with "(name pid=…)" and colour codes.
EPOCH_RE = re.compile(r"\bepoch (\d+)/(\d+): (.*)$")


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    """The line the training loop prints after each epoch (on rank 0); Console follows it."""
    return f"epoch {epoch}/{epochs}: " + " ".join(
        f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch")


def parse_epoch_line(line: str) -> tuple[int, int, dict[str, float]] | None:
    """(epoch, epochs, metrics) of a line ``epoch_line`` wrote, or None for any other line."""
    m = EPOCH_RE.search(line)
    if not m:
        return None
    metrics = {}
    for item in m.group(3).split():
        key, _, value = item.partition("=")
        try:
            metrics[key] = float(value)
        except ValueError:
            pass
    return int(m.group(1)), int(m.group(2)), metrics


_SHARED = "sharing this machine's {cores} cores with other trainings: {threads} torch thread(s) from now on"
_ALONE = "this machine's cores no longer shared: {threads} torch thread(s) again"


def share_line(cores: int, threads: int, *, shared: bool) -> str:
    """The line a training prints when its share of the cores changes
    (resgan.runtime.cpu_share); the console follows it (``parse_share_line``)."""
    return (_SHARED if shared else _ALONE).format(cores=cores, threads=threads)


def _pattern(template: str) -> re.Pattern[str]:
    """A regex of ``template``'s lines, anywhere in a line (Ray prefixes its workers' lines);
    the thread count captured."""
    text = re.escape(template).replace(re.escape("{cores}"), r"\d+")
    return re.compile(text.replace(re.escape("{threads}"), r"(\d+)") + r"\s*$")


_SHARE_PATTERNS = ((_pattern(_SHARED), True), (_pattern(_ALONE), False))


def parse_share_line(line: str) -> tuple[int, bool] | None:
    """(threads, shared) of a line ``share_line`` wrote (anywhere in ``line``: Ray prefixes
    its workers' lines), or None for any other line."""
    for pattern, shared in _SHARE_PATTERNS:
        if m := pattern.search(line):
            return int(m.group(1)), shared
    return None


_active: Console | None = None


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def say(message: str) -> None:
    """A line a person must see: on the terminal and in the log (a plain print outside a stage)."""
    if _active is not None:
        _active.say(message)
    else:
        print(message, flush=True)


def log_file() -> Path | None:
    """The log file of the stage running in this process (None outside a stage or when verbose)."""
    return None if _active is None else _active.log_path


def follow_epochs(total: int, initial: int = 0) -> None:
    """A bar over the training loop's epochs, driven by its per-epoch lines (see Console)."""
    if _active is not None:
        _active.follow_epochs(total, initial)


def progress(total: int, desc: str | None, unit: str, initial: int = 0) -> tqdm:
    """A progress bar on the stage's terminal, named ``desc`` (default: the stage); a
    disabled one outside a stage or when verbose."""
    if _active is None or _active.log_path is None:
        return tqdm(total=total, disable=True)
    return _active.bar(total, desc or _active.stage, unit, initial)


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


class _Watch:
    """sys.stdout while a stage runs: writes go to the log; complete lines are also shown to
    the console (which follows the training loop's epoch lines for its bar)."""

    def __init__(self, stream: TextIO, console: Console):
        self._stream, self._console, self._partial = stream, console, ""

    def write(self, s: str) -> int:
        n = self._stream.write(s)
        if "\n" in s:
            *lines, self._partial = (self._partial + s).split("\n")
            for line in lines:
                self._console.saw(line)
        else:
            self._partial += s
        return n

    def __getattr__(self, name: str) -> Any:  # flush, fileno, buffer, encoding, ...
        return getattr(self._stream, name)


class Console:
    def __init__(self, stage: str, log_dir: str | Path = LOG_DIR):
        self.stage = stage
        self.log_path: Path | None = None if verbose() else Path(log_dir) / f"{stage}.log"
        self.out: TextIO = sys.stdout  # the terminal
        self.err: TextIO = sys.stderr
        self.t0 = time.monotonic()
        self._epochs: tqdm | None = None
        self._shared = ""  # the training's share of the cores, while shared
        self._bars: list[tqdm] = []

    # -- set-up -------------------------------------------------------------------------
    def open(self) -> Console:
        """Point descriptors 1 and 2 at the log; a log that cannot be opened ends the stage in
        one line (exit 1) before any work."""
        global _active
        if self.log_path is not None:
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.log_path,
                             os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            except OSError as exc:
                print(f"error: {self.log_path}: cannot write the stage's log "
                      f"({exc.strerror or exc}); free or fix that folder, or set "
                      f"{VERBOSE_ENV}=1 to run without a log", file=sys.stderr, flush=True)
                sys.exit(1)
            sys.stdout.flush()
            sys.stderr.flush()
            self.out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
            self.err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
            os.dup2(fd, 1)  # this process, Ray's processes started from it, C++ logs
            os.dup2(fd, 2)
            os.close(fd)
            sys.stdout.reconfigure(line_buffering=True)
            sys.stdout = _Watch(sys.stdout, self)
            warnings.showwarning = self._warning
            # The log keeps every worker's lines (Ray folds similar lines of different
            # workers into one "[repeated Nx]" line for a terminal). Read when Ray is imported.
            os.environ.setdefault("RAY_DEDUP_LOGS", "0")
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in a file
            self.say(f"{self.stage}: started; full log in {self.log_path}")
        # A native crash (segfault, abort) prints Python's stack on the terminal, not only
        # in the log (whose file may be what failed).
        faulthandler.enable(file=self.err, all_threads=True)
        _active = self
        return self

    # -- output ---------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        """Best effort: a log that cannot be written (a full disk) loses the line, never the
        terminal's copy."""
        if self.log_path is not None:
            try:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):  # ValueError: the stream was closed
                pass

    def say(self, message: str) -> None:
        """A line on the terminal (and in the log)."""
        if self.log_path is None:
            print(message, flush=True)
            return
        tqdm.write(message, file=self.out)
        self._log(message)

    def error(self, message: str) -> None:
        """An error on the terminal's stderr (and in the log)."""
        self._close_bars()
        print(message, file=self.err, flush=True)  # the terminal first: the log may be broken
        self._log(message)

    def failed(self, exc: BaseException) -> None:
        """An unexpected error: its traceback on the terminal and in the log."""
        text = "".join(traceback.format_exception(exc)).rstrip()
        self.error(text if self.log_path is None else f"{text}\n{self.stage}: failed after "
                   f"{_duration(time.monotonic() - self.t0)}; full log in {self.log_path}")

    def done(self, headline: str | None) -> None:
        self._close_bars()
        line = f"{self.stage}: done in {_duration(time.monotonic() - self.t0)}"
        self.say(f"{line}: {headline}" if headline else line)

    def _warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        if "resgan" in Path(filename).parts:  # ours: meant for the person running the stage
            tqdm.write(text, file=self.err)
        self._log(text)

    # -- progress -------------------------------------------------------------------------
    def bar(self, total: int, desc: str, unit: str, initial: int = 0) -> tqdm:
        tty = self.out.isatty()
        b = tqdm(total=total, desc=desc, unit=unit, initial=initial, file=self.out,
                 dynamic_ncols=tty, mininterval=0.5 if tty else 30, miniters=0, leave=True,
                 bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} {unit}s "
                            "[{elapsed}<{remaining}]{postfix}")
        self._bars.append(b)
        return b

    def follow_epochs(self, total: int, initial: int = 0, desc: str = "epochs") -> None:
        """Drive a bar from the training loop's epoch lines (printed by rank 0, wherever it
        runs: Ray forwards them to this process's stdout)."""
        if self.log_path is not None:
            if self._epochs is not None:  # the previous training's bar ends here
                self._epochs.close()
                self._bars.remove(self._epochs)
            self._epochs = self.bar(total, desc, "epoch", initial)

    def saw(self, line: str) -> None:
        if self._epochs is None:
            return
        share = parse_share_line(line)
        if share:  # shown next to the FID while other trainings share the cores
            threads, shared = share
            self._shared = f"{threads} thread(s), cores shared" if shared else ""
        parsed = parse_epoch_line(line)
        if parsed:
            epoch, _, metrics = parsed
            b = self._epochs
            postfix = [f"FID {metrics['fid']:.3g}"] if "fid" in metrics else []
            if self._shared:
                postfix.append(self._shared)
            if postfix:
                b.set_postfix_str(", ".join(postfix), refresh=False)
            b.update(max(0, min(epoch, b.total) - b.n))  # (redraws at most every mininterval)

    def _close_bars(self) -> None:
        for b in self._bars:
            b.close()
        self._bars.clear()
        self._epochs = None
