"""Trainers that attack the sandbox, one attack each: each must end with the right status, nothing leaked.

These run the real sandbox (bubblewrap at /usr/bin/bwrap) on real subprocesses; budgets are seconds.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from agentgolf.sandbox.isolation.bwrap import find_bwrap
from agentgolf.sandbox.isolation.limits import process_limit_enforced
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.runner import run_sandboxed
from tests.sandbox_support import TEST_BUDGET, TOY, TRAINERS, compose, data_spec, processes_with

pytestmark = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")

SHORT = TEST_BUDGET.model_copy(update={"train_seconds": 1.0, "train_grace_seconds": 1.0})
KILL_SLACK_S = 3.0  # from a phase's kill deadline to its top process reaped (the phase's own wall_seconds)
# run_sandboxed as a whole adds its set-up and tear-down (sandbox files, cgroups, the log, kills), which a loaded
# machine stretches: only a hang is caught from outside; the limits themselves are read from the phase timings.
OUTER_SLACK_S = 30.0


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


@pytest.fixture(scope="module")
def honest_bpb(data, tmp_path_factory) -> float:
    result = run_sandboxed(TOY, tmp_path_factory.mktemp("honest"), data, TEST_BUDGET)
    assert result.status is Status.ok, result.reason
    return result.val_bpb


def _tag() -> str:
    return f"agentgolf-test-{uuid.uuid4().hex}"


def test_cannot_find_validation_shards(data, tiny_dataset, tmp_path):
    repo_file = Path(__file__).resolve().parents[1] / "sandbox" / "runner.py"
    probes = [*map(str, data.val_files), str(data.tokenizer), *map(str, data.train_files), str(repo_file)]
    probes += [str(p) for p in Path.home().iterdir() if p.is_file()][:5]
    result = run_sandboxed(
        compose("read_val.py", tmp_path),
        tmp_path / "run",
        data,
        TEST_BUDGET,
        env={"PROBE_PATHS": os.pathsep.join(probes)},
    )
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "HITS=0" in log_text, [ln for ln in log_text.splitlines() if ln.startswith("HIT ")]
    assert result.status is Status.ok, (
        result.reason
    )  # the search itself is not punished, it just finds nothing


def test_fake_score_without_artifact_is_crash(data, tmp_path):
    result = run_sandboxed(TRAINERS / "fake_score.py", tmp_path, data, TEST_BUDGET)
    assert result.status is Status.crash and "no artifact" in result.reason
    assert result.val_bpb is None and result.self_val_bpb == 0.005


def test_fake_score_with_artifact_is_metric_mismatch(data, tmp_path, honest_bpb):
    result = run_sandboxed(compose("fake_score_artifact.py", tmp_path), tmp_path / "run", data, TEST_BUDGET)
    assert result.status is Status.metric_mismatch, result.reason
    assert result.self_val_bpb == 0.005
    assert result.val_bpb == pytest.approx(honest_bpb, rel=1e-12)  # the ledger gets the harness's score


@pytest.mark.parametrize("attack", ["sleep_forever.py", "raise_time_limit.py"])
def test_time_limit_holds(data, tmp_path, attack):
    tag = _tag()
    t0 = time.monotonic()
    result = run_sandboxed(TRAINERS / attack, tmp_path, data, SHORT, env={"TAG": tag})
    elapsed = time.monotonic() - t0
    assert result.status is Status.timeout, result.reason
    assert "2 s wall-clock limit" in result.reason
    # killed at its deadline: the training phase's own wall clock, from its start to its top process reaped
    assert SHORT.train_kill_seconds <= result.train_seconds < SHORT.train_kill_seconds + KILL_SLACK_S
    assert elapsed < SHORT.train_kill_seconds + OUTER_SLACK_S  # and run_sandboxed returned, not hung
    assert processes_with(tag) == []


@pytest.mark.parametrize(
    "isolation,clear_env",
    [("bwrap", "1"), ("none", "0"), pytest.param("none", "1", id="none-clear-env-needs-cgroup")],
)
def test_no_background_process_survives(data, tmp_path, isolation, clear_env):
    if isolation == "none" and clear_env == "1" and not (os.getuid() == 0 and process_limit_enforced()):
        pytest.skip("an env-less setsid daemon is only caught by a pids cgroup, which we cannot create here")
    tag = _tag()
    result = run_sandboxed(
        TRAINERS / "daemon.py",
        tmp_path,
        data,
        TEST_BUDGET,
        isolation=isolation,
        env={"DAEMON_TAG": tag, "DAEMON_CLEAR_ENV": clear_env},
    )
    assert result.status is Status.crash and "no artifact" in result.reason
    assert "daemon started" in (tmp_path / "train.log").read_text()
    assert processes_with(tag) == []


def test_cannot_write_outside_its_run_folder(data, tmp_path):
    ledger = tmp_path / "workspace" / "ledger.sqlite"
    ledger.parent.mkdir()
    ledger.write_bytes(b"ledger contents")
    before = ledger.stat().st_mtime_ns
    pwn = f".agentgolf-pwned-{uuid.uuid4().hex}"
    env = {"LEDGER_PATH": str(ledger), "HOST_HOME": str(Path.home()), "PWN_NAME": pwn}
    try:
        result = run_sandboxed(
            compose("write_outside.py", tmp_path), tmp_path / "run", data, TEST_BUDGET, env=env
        )
        assert ledger.read_bytes() == b"ledger contents" and ledger.stat().st_mtime_ns == before
        assert not (Path.home() / pwn).exists()
        assert "could not write" in (tmp_path / "run" / "train.log").read_text()
        assert result.status is Status.ok, result.reason
    finally:
        (Path.home() / pwn).unlink(missing_ok=True)


def test_no_network(data, tmp_path):
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            received.append(conn.recv(100) or b"<connected>")
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        env = {"LEAK_PORT": str(server.getsockname()[1])}
        result = run_sandboxed(compose("network.py", tmp_path), tmp_path / "run", data, TEST_BUDGET, env=env)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert received == []
    assert "could not connect" in (tmp_path / "run" / "train.log").read_text()
    assert result.status is Status.ok, result.reason


def test_nan_model_is_nan(data, tmp_path):
    result = run_sandboxed(compose("nan_model.py", tmp_path), tmp_path / "run", data, TEST_BUDGET)
    assert result.status is Status.nan and "non-finite" in result.reason
    assert result.val_bpb is None


def test_oversized_artifact_is_over_size(data, tmp_path):
    budget = TEST_BUDGET.model_copy(update={"size_bytes": 200_000})
    result = run_sandboxed(
        compose("oversized.py", tmp_path), tmp_path / "run", data, budget, env={"PAD_BYTES": "300000"}
    )
    assert result.status is Status.over_size and "200,000 byte limit" in result.reason
    assert result.artifact_bytes > 200_000 and result.val_bpb is None
    assert not (tmp_path / "run" / "score.log").exists()


@pytest.mark.skipif(
    not process_limit_enforced(), reason="no enforceable process limit here (root, no pids cgroup)"
)
def test_fork_bomb_hits_the_process_limit(data, tmp_path):
    tag = _tag()
    budget = TEST_BUDGET.model_copy(update={"max_processes": 32, "train_seconds": 10.0})
    t0 = time.monotonic()
    result = run_sandboxed(TRAINERS / "fork_bomb.py", tmp_path, data, budget, env={"TAG": tag})
    elapsed = time.monotonic() - t0
    assert result.status is Status.violation and "process limit (max_processes=32)" in result.reason
    assert result.train_seconds < budget.train_seconds  # stopped by the limit, not by the clock
    assert elapsed < budget.train_seconds + OUTER_SLACK_S  # and run_sandboxed returned, not hung
    assert processes_with(tag) == []
    t1 = time.monotonic()
    subprocess.run(["true"], check=True)
    assert time.monotonic() - t1 < 5.0  # the machine is responsive (a surviving bomb would starve it)


def test_a_tampered_nll_path_is_caught_in_the_same_call(data, tmp_path):
    """The cheap in-process check: NLL 0 from a patched log_softmax disagrees with the same call's logits.
    (Forgeries that keep the two consistent are for the fresh-process check: tests/test_verified_scoring.py.)"""
    result = run_sandboxed(compose("tamper_scoring.py", tmp_path), tmp_path / "run", data, TEST_BUDGET)
    assert result.status is Status.violation and "the NLL is not the model's own" in result.reason


def test_editing_its_own_file_changes_nothing(data, tmp_path, honest_bpb):
    trainer = compose("self_edit.py", tmp_path)
    result = run_sandboxed(trainer, tmp_path / "run", data, TEST_BUDGET)
    assert result.status is Status.ok, result.reason
    assert "the edited file was used" in (tmp_path / "run" / "train" / "train_gpt.py").read_text()
    assert (tmp_path / "run" / "score" / "train_gpt.py").read_bytes() == trainer.read_bytes()
    assert result.code_bytes == len(trainer.read_bytes())
    assert math.isfinite(result.val_bpb) and result.val_bpb == pytest.approx(honest_bpb, rel=1e-12)


def test_prints_during_scoring_do_not_corrupt_the_protocol(data, tmp_path, honest_bpb):
    result = run_sandboxed(compose("noisy.py", tmp_path), tmp_path / "run", data, TEST_BUDGET)
    assert result.status is Status.ok, result.reason
    assert result.val_bpb == pytest.approx(honest_bpb, rel=1e-12)
    assert "raw junk on fd 1" in (tmp_path / "run" / "score.log").read_text()


@pytest.mark.parametrize("mode", ["alloc", "sigkill"])
def test_memory_exhaustion_is_oom(data, tmp_path, mode):
    budget = TEST_BUDGET.model_copy(update={"memory_bytes": 2 * 2**30})
    result = run_sandboxed(TRAINERS / "memory_hog.py", tmp_path, data, budget, env={"MODE": mode})
    assert result.status is Status.oom, result.reason
    assert ("MemoryError" if mode == "alloc" else "SIGKILL not sent by the harness") in result.reason


def test_model_that_hangs_in_scoring_is_timeout(data, tmp_path):
    budget = TEST_BUDGET.model_copy(update={"score_seconds": 3.0})
    t0 = time.monotonic()
    result = run_sandboxed(compose("slow_load.py", tmp_path), tmp_path / "run", data, budget)
    assert result.status is Status.timeout and result.reason.startswith("scoring ran past its 3 s")
    assert result.score_seconds < budget.score_seconds + KILL_SLACK_S  # the scoring phase, killed in time
    assert time.monotonic() - t0 < result.train_seconds + result.score_seconds + OUTER_SLACK_S  # not hung
