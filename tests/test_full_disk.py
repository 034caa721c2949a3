"""A candidate that fills the disk under its run folder is charged for it (`violation`), never handed a free
retry: each phase's cap on its host folders is the space free at its start less the harness's reserve, so it
meets its own limit first, and a harness log write that still fails behind it is its doing. A log write that
fails with no candidate writes behind it stays the machine's fault (`infra_error`).

Real sandboxes (bubblewrap) on a real small filesystem: a 256 MiB tmpfs mounted for each test, holding the run
folder (as root; skipped, with the reason, where it cannot be mounted). Each attack has an honest control that
passes on the same filesystem.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentgolf.sandbox.classify import classify_phase
from agentgolf.sandbox.isolation import process
from agentgolf.sandbox.isolation.bwrap import find_bwrap
from agentgolf.sandbox.isolation.limits import DISK_RESERVE_BYTES, Limits, empty_folders, harness_disk_reserve
from agentgolf.sandbox.isolation.process import SandboxedProcess
from agentgolf.sandbox.phase import PhaseOutcome, PhaseSpec
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.runner import run_sandboxed
from tests.sandbox_support import TEST_BUDGET, TOY, TRAINERS, data_spec

DISK_MIB = 256  # the small filesystem: room for the toy and its scoring, and a reserve of 64 MiB
ATTACK_ROUNDS = 3  # the attack is charged every time, not only when the watcher happens to look first

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


@pytest.fixture
def small_disk(tmp_path):
    """A fresh 256 MiB tmpfs: a disk that a candidate can fill in a moment."""
    if os.getuid() != 0:
        pytest.skip("mounting a small filesystem (tmpfs) needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(path: Path, leave: int = 0) -> None:
    """Write `path` until the filesystem has `leave` bytes free or refuses: the machine filling its disk."""
    chunk = b"\0" * 2**20
    with open(path, "wb", buffering=0) as f:
        while True:
            room = _free(path.parent) - leave
            if room <= 0:
                return
            try:
                f.write(chunk[:room])
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                return


def test_the_reserve_covers_the_harness_writes_of_a_default_budget():
    """Three logs and two artifact copies at the default budget's limits fit in the 64 MiB floor."""
    from agentgolf.sandbox.budget import Budget

    b = Budget()
    assert 3 * b.log_bytes + 2 * b.size_bytes < DISK_RESERVE_BYTES
    assert harness_disk_reserve(b.log_bytes, b.size_bytes) == DISK_RESERVE_BYTES
    assert harness_disk_reserve(64 * 2**20, b.size_bytes) > 3 * 64 * 2**20  # larger logs, larger reserve


def test_a_log_error_is_the_machines_only_without_candidate_writes_behind_it():
    """Stand-in outcomes (built by hand, not by the kernel; the sandboxed checks are below): the same failed
    log write is infra_error alone, violation beside a passed disk cap, and the reason gives the cap's figure."""
    common = {"returncode": 0, "ready": True, "timed_out": False, "wall_seconds": 1.0}
    error = "[Errno 28] No space left on device"
    alone = PhaseOutcome(**common, log_error=error)
    status, reason = classify_phase(alone, "", name="training", limit_seconds=30, max_processes=8)
    assert status is Status.infra_error and "could not write the log" in reason
    behind = PhaseOutcome(
        **common,
        log_error=error,
        written_bytes=200 * 2**20,
        disk_limit_bytes=190 * 2**20,
        disk_limit_from_free=True,
        disk_free_bytes=254 * 2**20,
        disk_reserve_bytes=64 * 2**20,
    )
    status, reason = classify_phase(behind, "", name="training", limit_seconds=30, max_processes=8)
    assert status is Status.violation and status.charges_idea, reason
    assert "more than its disk limit of 190.0 MiB (199,229,440 bytes) there" in reason
    assert "the 254.0 MiB (266,338,304 bytes) free on that disk at its start" in reason
    assert (
        "less 64.0 MiB (67,108,864 bytes) kept for the harness" in reason
        and "log write then failed" in reason
    )


def test_what_passed_the_cap_is_given_back_links_left_alone(tmp_path):
    """empty_folders: everything under the folder goes, a folder the candidate locked included; a link to
    outside is removed, never followed; the folder itself stays."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("harness")
    folder = tmp_path / "train"
    (folder / "deep" / "locked").mkdir(parents=True)
    (folder / "deep" / "locked" / "big.bin").write_bytes(b"x" * 100_000)
    (folder / "deep" / "locked").chmod(0)
    (folder / "link").symlink_to(outside)
    (folder / "file").write_bytes(b"y")
    empty_folders([folder])
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert (outside / "keep.txt").read_text() == "harness"


@needs_bwrap
def test_filling_the_run_folders_disk_is_a_violation_every_time(data, small_disk):
    """A trainer that writes one file in its run folder until the disk is full (its disk_bytes, 16 GiB, is far
    above the disk): charged violation each round, with the free-space figure in the reason; what it wrote is
    given back, so the honest toy then passes on the same filesystem."""
    budget = TEST_BUDGET
    for i in range(ATTACK_ROUNDS):
        run = small_disk / f"attack{i}"
        t0 = time.monotonic()
        result = run_sandboxed(TRAINERS / "fill_tmpfs.py", run, data, budget, env={"FILL_DIR": "."})
        assert result.status is Status.violation and result.status.charges_idea, (i, result.reason)
        assert (
            "free on that disk at its start less 64.0 MiB (67,108,864 bytes) kept for the harness"
            in result.reason
        )
        assert "never stopped" not in (run / "train.log").read_text()
        assert time.monotonic() - t0 < budget.train_kill_seconds  # stopped by the cap, not the clock
        assert (run / "result.json").is_file()  # the harness could still write its result
        assert _free(small_disk) > DISK_RESERVE_BYTES  # and the disk was given back
    control = run_sandboxed(TOY, small_disk / "honest", data, budget)
    assert control.status is Status.ok, control.reason


@needs_bwrap
def test_a_disk_filled_before_the_watcher_looks_is_still_the_candidates(data, small_disk, monkeypatch):
    """The watcher made too slow to look in time: the trainer fills the disk, the harness's log write meets it
    (a real ENOSPC), and the phase is still charged violation, not infra_error, with the failure named."""
    monkeypatch.setattr(process, "WATCH_SECONDS", 30.0)
    run = small_disk / "run"
    result = run_sandboxed(TRAINERS / "fill_tmpfs.py", run, data, TEST_BUDGET, env={"FILL_DIR": "."})
    assert result.status is Status.violation, result.reason
    assert "log write then failed" in result.reason and "No space left on device" in result.reason
    assert "free on that disk at its start" in result.reason


@needs_bwrap
@pytest.mark.parametrize("hold", ["fd", "map"])
def test_a_file_deleted_while_held_counts_against_the_disk(data, small_disk, hold):
    """No folder lists a file deleted while open (or while mapped, its descriptor closed), yet it fills the
    disk: counted through /proc/<pid>/fd and /proc/<pid>/map_files, charged."""
    env = {"HOLD": hold}
    result = run_sandboxed(TRAINERS / "fill_deleted.py", small_disk / "run", data, TEST_BUDGET, env=env)
    assert result.status is Status.violation and result.status.charges_idea, result.reason
    assert "free on that disk at its start" in result.reason
    assert _free(small_disk) > DISK_RESERVE_BYTES  # what held it died with it


@needs_bwrap
def test_the_honest_trainer_passes_on_a_small_disk(data, small_disk):
    """The control: the toy trains, writes its artifact and is scored, on the same 256 MiB filesystem."""
    run = small_disk / "run"
    result = run_sandboxed(TOY, run, data, TEST_BUDGET)
    assert result.status is Status.ok, result.reason
    assert result.val_bpb is not None and (run / "train" / "final_model.int8.ptz").is_file()


@needs_bwrap
def test_a_phase_is_not_started_on_a_disk_already_full(data, small_disk):
    """The machine's disk is full before the trainer runs (less than the reserve plus the phase's least room
    is free): infra_error, retried, the candidate never started."""
    _fill(small_disk / "machine.bin", leave=DISK_RESERVE_BYTES)
    run = small_disk / "run"
    result = run_sandboxed(TOY, run, data, TEST_BUDGET)
    assert result.status is Status.infra_error and not result.status.charges_idea, result.reason
    assert "the run folder's disk is full" in result.reason
    assert not (run / "train.log").exists()


@needs_bwrap
def test_a_log_write_error_with_no_candidate_writes_stays_infra_error(small_disk):
    """The real thing, no stand-in: the phase starts, the machine (this test, outside the phase's folders)
    fills the disk, the candidate prints, the harness's log write fails with ENOSPC; the candidate wrote
    nothing, so the failure is the machine's."""
    train = small_disk / "run" / "train"
    train.mkdir(parents=True)
    inside = Path("/sandbox/train")
    waits_then_prints = "import sys; sys.stdin.readline(); sys.stderr.write('x' * 2**20); sys.stderr.flush()"
    spec = PhaseSpec(
        argv=[sys.executable, "-c", waits_then_prints],
        cwd=inside,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        rw_binds=[(train, inside)],
        limits=Limits(wall_seconds=30, max_file_bytes=2**30, max_processes=16, disk_bytes=2**30),
        log_path=small_disk / "run" / "train.log",
        log_bytes=4 * 2**20,
        protocol=True,
        disk_paths=[train],
    )
    proc = SandboxedProcess(spec, "bwrap")
    proc.start()
    try:
        deadline = time.monotonic() + 20
        while not proc.capture.saw_ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.capture.saw_ready
        _fill(small_disk / "machine.bin")
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    except BaseException:
        proc.abort()
        raise
    finally:
        outcome = proc.wait()
    assert outcome.log_error and "No space left on device" in outcome.log_error, outcome
    assert outcome.written_bytes is None
    status, reason = classify_phase(outcome, "", name="training", limit_seconds=30, max_processes=16)
    assert status is Status.infra_error and not status.charges_idea, reason
    assert "could not write the log" in reason
