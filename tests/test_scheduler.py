"""The scheduler's slot bookkeeping on real runs: infra errors retried uncharged, with one slot and with several.

The machine failure is the one thing faked here: a wrapper around the real local executor raises, as a
lost node or a broken harness would, on the first try of chosen experiments. Everything else (git, the
ledger, the sandbox, the trainer) is real.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from agentgolf.agent.controller import loop as loop_module
from agentgolf.agent.controller import pipeline as pipeline_module
from agentgolf.agent.controller.loop import Loop, RunCaps
from agentgolf.agent.controller.pipeline import Pipeline
from agentgolf.agent.proposers.briefing import board
from agentgolf.agent.proposers.prepare import Prepared
from tests.tiny import make_workspace, wait_until


class FlakyMachine:
    """The real executor, except that the first `failures` tries of each experiment in `flaky` fail."""

    def __init__(self, real, slots: int, flaky: set[int], failures: int = 1):
        self.real, self.n_slots, self.flaky, self.failures = real, slots, flaky, failures
        self.tries: dict[int, int] = {}

    def slots(self, gpus, per_experiment):
        return [None] * self.n_slots

    def run(self, trainer: Path, run_dir: Path, seed, env, slot, budget):
        exp_id = int(run_dir.name)
        self.tries[exp_id] = self.tries.get(exp_id, 0) + 1
        if exp_id in self.flaky and self.tries[exp_id] <= self.failures:
            raise OSError("node lost")
        return self.real.run(trainer, run_dir, seed, env, slot, budget)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _run(tmp_path: Path, tiny_dataset, machine_args: dict, experiments: int):
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    loop = Loop(ws, ws.ledger(), ws.config.budget, console=Console(file=open(tmp_path / "out.txt", "w")))
    machine = FlakyMachine(loop.lab.executor, **machine_args)
    loop.lab.executor = machine
    summary = loop.run(RunCaps(experiments=experiments), "playbook")
    return loop.ledger.experiments(run_id=summary.run_id), machine, summary


@pytest.mark.slow
@pytest.mark.parametrize("slots", [1, 2])
def test_an_infra_error_is_retried_without_charging_the_idea(tmp_path, tiny_dataset, slots):
    rows, machine, summary = _run(tmp_path, tiny_dataset, {"slots": slots, "flaky": {1, 2}}, experiments=3)
    assert [e.kind for e in rows if e.kind != "control"] == ["baseline", "proposal", "proposal"]
    assert all(e.status in ("ok", "inconclusive") for e in rows), [(e.id, e.status, e.reason) for e in rows]
    assert {k: n for k, n in machine.tries.items() if n > 1} == {
        1: 2,
        2: 2,
    }  # each flaky one once more, in place
    assert set(machine.tries) == {e.id for e in rows}  # every other row (the controls too) ran once
    said = (tmp_path / "out.txt").read_text()
    assert said.count("infra error (harness error: node lost); retrying without charging the idea") == 2
    assert summary.stop_reason == "budget spent" and summary.experiments == 3


@pytest.mark.slow
def test_an_experiment_that_keeps_failing_is_recorded_as_infra_error_and_the_run_goes_on(
    tmp_path, tiny_dataset
):
    rows, machine, summary = _run(
        tmp_path, tiny_dataset, {"slots": 1, "flaky": {2}, "failures": 9}, experiments=3
    )
    assert machine.tries[2] == 3  # the first try and the 2 retries of the default SchedulerConfig
    assert rows[1].status == "infra_error" and "node lost" in rows[1].reason
    ideas = [e for e in rows if e.kind != "control"]  # each proposal's round has a control (test_paired.py)
    assert [e.kind for e in ideas] == ["baseline", "proposal", "proposal"] and ideas[2].status in (
        "ok",
        "inconclusive",
    )


@pytest.mark.slow
def test_a_verdict_cut_off_by_a_kill_is_made_on_resume(tmp_path, tiny_dataset):
    """The state a kill -9 leaves between writing a result and writing its decision: resume decides it."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    console = Console(file=open(tmp_path / "out.txt", "w"))
    summary = Loop(ws, ws.ledger(), ws.config.budget, console=console).run(RunCaps(experiments=2), "playbook")
    ledger = ws.ledger()
    decided = [e for e in ledger.experiments(run_id=summary.run_id) if e.kind == "proposal"][-1]
    assert decided.kind == "proposal" and decided.decision, decided
    ledger.update(decided.id, status="ok", kept=False, reason="", decision={})  # the result, no verdict
    Loop(ws, ledger, ws.config.budget, console=console).run(
        RunCaps(experiments=2), "playbook", resume=summary.run_id
    )
    again = ledger.get(decided.id)
    assert again.decision and again.reason == decided.reason and again.kept == decided.kept
    assert (
        len(ledger.experiments(run_id=summary.run_id)) == 3
    )  # decided again, not trained again (nor its control)


def test_a_cpu_machine_has_as_many_slots_as_configured_each_with_its_share_of_the_cores(
    tiny_dataset, monkeypatch
):
    from agentgolf.agent.controller.executor import LocalConfig, LocalExecutor
    from agentgolf.sandbox.result import DataSpec

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    data = DataSpec(train_files=[], val_files=[], tokenizer=Path("t.model"), vocab_size=256)
    assert LocalExecutor(data).slots(None, None) == [None]
    two = LocalExecutor(data, LocalConfig(cpu_slots=2))
    assert two.slots(None, None) == [None, None] and two.threads() == 4
    assert two.slots([0, 1], 1) == [[0], [1]]  # GPUs: the slots are GPU groups, cpu_slots does not apply
    assert LocalExecutor(data, LocalConfig(cpu_slots=16)).threads() == 1
    seen = {}
    monkeypatch.setattr(  # only what the executor hands the sandbox is looked at here, not the sandbox
        "agentgolf.agent.controller.executor.run_sandboxed", lambda *a, env, **k: seen.update(env)
    )
    two.run(Path("t.py"), Path("run"), 1, {"PRESET": "cpu"}, None, None)
    assert seen == {"PRESET": "cpu", "OMP_NUM_THREADS": "4"}
    two.run(Path("t.py"), Path("run"), 1, {"OMP_NUM_THREADS": "1"}, None, None)
    assert seen["OMP_NUM_THREADS"] == "1"  # the user's setting wins


@pytest.mark.slow
@pytest.mark.parametrize("failures", [1, 99])
def test_a_preparation_that_raises_is_dropped_and_the_run_goes_on(
    tmp_path, tiny_dataset, monkeypatch, failures
):
    """Not a ProposalError: git or the disk failing in a preparation. It used to stop the whole run; now
    that proposal is dropped, uncharged, and the next one prepared. One that fails every time stops the run
    after the infra retries, instead of asking again forever."""
    real = loop_module.make_proposer
    calls: list[int] = []

    def make_proposer(name, ws):
        propose = real(name, ws)

        def flaky(ctx, tree):
            calls.append(1)
            if len(calls) <= failures:
                raise OSError("No space left on device")
            return propose(ctx, tree)

        return flaky

    monkeypatch.setattr(loop_module, "make_proposer", make_proposer)
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    loop = Loop(ws, ws.ledger(), ws.config.budget, console=Console(file=open(tmp_path / "out.txt", "w")))
    summary = loop.run(RunCaps(experiments=2), "playbook")
    said = (tmp_path / "out.txt").read_text()
    assert "preparation failed (OSError: No space left on device); dropped" in said
    rows = loop.ledger.experiments(run_id=summary.run_id)
    assert board.others(ws.root, "", rows) == []  # the dropped ones left the board
    if failures == 1:
        assert summary.stop_reason == "budget spent" and summary.experiments == 2 and not summary.failed
        assert len(calls) == 2 and [e.kind for e in rows if e.kind != "control"] == ["baseline", "proposal"]
    else:  # the first try and the default SchedulerConfig's 2 infra retries
        assert len(calls) == 3 and summary.failed and [e.kind for e in rows] == ["baseline"]
        assert summary.stop_reason.startswith("3 proposal preparations in a row failed: "), summary


class HeldPreparations:
    """Stands in for prepare_proposal: each call waits for `go`, then submits as a real one would."""

    def __init__(self) -> None:
        self.go, self.names = threading.Event(), []

    def __call__(self, lab, parent, history, propose, name: str) -> Prepared:
        self.names.append(name)
        assert self.go.wait(30)
        board.submitted(lab.ws.root, name, f"idea {name}", "", name)
        return Prepared(parent_id=parent.id)


def _pipeline(root: Path, workers: int) -> Pipeline:
    return Pipeline(SimpleNamespace(ws=SimpleNamespace(root=root)), propose=None, workers=workers)


def test_a_closed_pipeline_leaves_no_board_entries(tmp_path, monkeypatch):
    """A run ends with one preparation running and one queued: the queued one is cancelled before it starts,
    so prepare_proposal's cleanup never closes its entry, and the running one submits for a slot that never
    comes. Left on the board, a later loop in this process listed both and counted them as in flight."""
    prepare = HeldPreparations()
    monkeypatch.setattr(pipeline_module, "prepare_proposal", prepare)
    pipeline = _pipeline(tmp_path, workers=1)
    try:
        pipeline.fill(SimpleNamespace(id=1), 2, lambda: [])
        wait_until(lambda: prepare.names, 10, every=0.01)
        pipeline.close()
        assert [e.name for e in board.others(tmp_path, "", [])] == prepare.names  # the running one only
    finally:
        prepare.go.set()
    wait_until(lambda: not board.others(tmp_path, "", []), 10, every=0.01)
    assert board.others(tmp_path, "", []) == []


def test_two_pipelines_in_one_process_name_their_preparations_apart(tmp_path, monkeypatch):
    """A closed pipeline's preparation may still run when the next run's starts: the same name meant the
    same worktree path, and the new one's worktree add deleted the other's tree."""
    prepare = HeldPreparations()
    monkeypatch.setattr(pipeline_module, "prepare_proposal", prepare)
    pipelines = [_pipeline(tmp_path, workers=1) for _ in range(2)]
    try:
        for pipeline in pipelines:
            pipeline.fill(SimpleNamespace(id=1), 1, lambda: [])
        wait_until(lambda: len(prepare.names) >= 2, 10, every=0.01)
    finally:
        prepare.go.set()
        for pipeline in pipelines:
            pipeline.close()
    assert len(prepare.names) == 2 and len(set(prepare.names)) == 2, prepare.names
