"""The scheduler's slot bookkeeping on real runs: infra errors retried uncharged, with one slot and with several.

The machine failure is the one thing faked here: a wrapper around the real local executor raises, as a
lost node or a broken harness would, on the first try of chosen experiments. Everything else (git, the
ledger, the sandbox, the trainer) is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from agentgolf.agent.controller.loop import Loop, RunCaps
from tests.tiny import make_workspace


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
