"""Trainings on one machine share its cores: lock-step OpenMP threads must not oversubscribe."""

from __future__ import annotations

import subprocess
import sys

import torch

from resgan.runtime.cpu_share import CpuShare


def test_requests_that_fit_keep_their_threads_others_split_the_cores(tmp_path):
    with CpuShare(2, root=tmp_path, cores=4) as a:
        assert a.threads() == 2  # alone
        with CpuShare(2, root=tmp_path, cores=4) as b:
            assert a.threads() == b.threads() == 2  # 2 + 2 fit in 4 cores
            with CpuShare(4, root=tmp_path, cores=4) as c:  # 8 asked of 4 cores
                assert (a.threads(), b.threads(), c.threads()) == (1, 1, 2)
        assert a.threads() == 2  # the others gave their leases back
    assert list(tmp_path.iterdir()) == []


def test_two_whole_machine_requests_get_half_each_at_least_one(tmp_path):
    a, b = CpuShare(2, root=tmp_path, cores=2), CpuShare(2, root=tmp_path, cores=2)
    assert a.threads() == b.threads() == 1
    c = CpuShare(2, root=tmp_path, cores=2)
    assert c.threads() == 1  # 2 * 2 // 6 = 0: never below one thread
    for s in (a, b, c):
        s.release()


def test_a_dead_process_lease_is_ignored_and_removed(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / f"{gone.pid}-0").write_text("2")  # a training that was killed
    with CpuShare(2, root=tmp_path, cores=2) as a:
        assert a.threads() == 2
    assert list(tmp_path.iterdir()) == []


def test_off_switch_and_threads_given_back(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    other = CpuShare(8, root=tmp_path, cores=2)
    with CpuShare(2, root=tmp_path, cores=2) as a:
        assert a.apply() == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2  # its request again once released
    torch.set_num_threads(before)
    monkeypatch.setenv("RESGAN_CPU_SHARE", "off")
    with CpuShare(2, root=tmp_path, cores=2) as b:
        assert b.threads() == 2
    other.release()


def test_the_console_reads_the_line_a_change_of_share_prints(tmp_path, capsys):
    from resgan.console import parse_share_line, share_line

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    other = CpuShare(2, root=tmp_path, cores=2)
    with CpuShare(2, root=tmp_path, cores=2) as a:
        a.apply(say=True)
        out = capsys.readouterr().out
        assert parse_share_line(out) == (1, True)
        assert parse_share_line(f"(RayTrainWorker pid=123) {out}") == (1, True)  # Ray's prefix
        other.release()
        a.apply(say=True)  # alone again
        assert parse_share_line(capsys.readouterr().out) == (2, False)
        a.apply(say=True)
        assert capsys.readouterr().out == ""  # no change, no line
    for cores, threads, shared in ((2, 1, True), (64, 17, True), (8, 8, False)):
        assert parse_share_line(share_line(cores, threads, shared=shared)) == (threads, shared)
    for other_line in ("epoch 3/10: loss_d=1.2", "sharing this machine's 2 cores with other "
                       "trainings: x torch thread(s) from now on", ""):
        assert parse_share_line(other_line) is None
    torch.set_num_threads(before)
