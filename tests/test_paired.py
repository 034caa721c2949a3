"""The paired judge: rounds of a candidate and a control of its parent, the pooled noise of the differences,
and the loop that launches them (who runs with whom, with which seed, on which slot).

The statistics are pure functions over ledger rows, tested on rows built here. The loop tests run real
trainings (the CPU preset on the tiny dataset) in real git repositories with the real ledger; the only
stand-in is a control that fails, said where it is used.
"""

from __future__ import annotations

import itertools
import math
import threading
from pathlib import Path

import pytest
from rich.console import Console

from agentgolf.agent.controller import pipeline
from agentgolf.agent.controller.loop import Loop, RunCaps
from agentgolf.agent.controller.run_status import run_status
from agentgolf.agent.judge import paired
from agentgolf.agent.judge.acceptance import AcceptanceConfig, describe_evidence
from agentgolf.agent.report.report import write_report
from agentgolf.experiments.ledger import Experiment, Ledger
from agentgolf.sandbox.result import SandboxResult, Status
from tests.test_hill_climb import Scripted, _steps, _workspace

CFG = AcceptanceConfig(noise_seeds=3, max_runs=4)


def _row(i: int, kind: str, bpb: float | None, seed: int, **kw) -> Experiment:
    return Experiment(
        id=i, kind=kind, status=kw.pop("status", "ok"), val_bpb=bpb, seed=seed, created_at=0.0, **kw
    )


def _candidate(rows: list[Experiment], cand_id: int, diffs: list[float], init: str = "") -> None:
    """A proposal (id cand_id) on the baseline (id 1) with one round per difference, controls at 3.0."""
    next_id = cand_id + 1
    for k, d in enumerate(diffs):
        run_id = cand_id if k == 0 else next_id
        if k:
            next_id += 1
        kind = "proposal" if k == 0 else "confirm"
        extra = {"parent_id": 1} if k == 0 else {"replay_of": cand_id}
        rows.append(_row(run_id, kind, 3.0 + d, 100 + k, init_hash=init or "a", **extra))
        rows.append(_row(next_id, "control", 3.0, 100 + k, replay_of=1, paired_with=[run_id], init_hash="a"))
        next_id += 1


def test_pairs_are_the_candidates_complete_rounds_only():
    rows = [_row(1, "baseline", 3.0, 1)]
    _candidate(rows, 10, [-0.02, -0.03])
    rows.append(_row(50, "confirm", 2.9, 102, replay_of=10))  # its control failed: not a round
    rows.append(_row(51, "control", None, 102, replay_of=1, paired_with=[50], status="crash"))
    found = paired.pairs(rows, rows[1])
    assert [round(p.d, 6) for p in found] == [-0.02, -0.03] and all(p.same_init for p in found)
    assert [(p.candidate, p.seed) for p in found] == [(10, 100), (12, 101)]


def test_sigma_d_is_pooled_over_the_other_candidates_on_the_seeds_prior():
    seeds = [3.00, 3.02, 2.98]
    rows = [_row(1, "baseline", 3.0, 1)]
    _candidate(rows, 10, [-0.05, -0.01])  # the candidate judged: left out of its own noise
    _candidate(rows, 20, [0.01, 0.03, 0.02])
    noise, pool = paired.noise(rows, rows[1], seeds, CFG)
    prior = 2 * 0.0004 * 2  # twice the seeds' variance (0.0004) on their 2 dof
    other = (0.01 - 0.02) ** 2 + 0 + (0.03 - 0.02) ** 2  # candidate 20 around its own mean, 2 dof
    assert (noise.dof, pool) == (4, "same_init")
    assert noise.sigma == pytest.approx(math.sqrt((prior + other) / 4))
    judged_20, _ = paired.noise(rows, next(e for e in rows if e.id == 20), seeds, CFG)
    assert judged_20.dof == 2 + 1  # candidate 10's one dof in, its own out


def test_a_candidate_with_new_initial_weights_has_its_own_pool():
    seeds = [3.00, 3.02, 2.98]
    rows = [_row(1, "baseline", 3.0, 1)]
    _candidate(rows, 10, [-0.05, -0.01], init="b")  # another init at the same seed: noise does not cancel
    _candidate(rows, 20, [0.01, 0.03, 0.02])
    _candidate(rows, 30, [0.2, -0.2], init="c")
    noise, pool = paired.noise(rows, rows[1], seeds, CFG)
    assert pool == "new_init" and noise.dof == 2 + 1  # the prior and candidate 30, never candidate 20
    noise20, pool20 = paired.noise(rows, next(e for e in rows if e.id == 20), seeds, CFG)
    assert pool20 == "same_init" and noise20.dof == 2  # the prior only


def test_a_known_sigma_is_root_two_times_larger_for_a_difference():
    rows = [_row(1, "baseline", 3.0, 1)]
    _candidate(rows, 10, [-0.05])
    noise, _ = paired.noise(rows, rows[1], [], AcceptanceConfig(noise_seeds=1, known_sigma_bpb=0.01))
    assert noise.sigma == pytest.approx(0.01 * math.sqrt(2)) and math.isinf(noise.dof)


def test_each_pair_says_whether_its_runs_trained_side_by_side():
    """Two SLURM jobs submitted at the same moment may start apart: the round's evidence says which, from
    when each really ran (launch plus the job's queue wait, to its end)."""
    rows = [_row(1, "baseline", 3.0, 1)]
    _candidate(rows, 10, [-0.05, -0.06])
    times = {
        10: (0.0, 100.0, {}), 11: (0.0, 100.0, {}),  # side by side
        12: (200.0, 300.0, {}), 13: (200.0, 400.0, {"slurm_queue_wait_s": 150.0}),  # one after the other
    }  # fmt: skip
    rows = [
        e.model_copy(update={"started_at": t[0], "finished_at": t[1], "manifest": t[2]})
        if (t := times.get(e.id))
        else e
        for e in rows
    ]
    assert [p.together for p in paired.pairs(rows, rows[1])] == [True, False]
    verdict = paired.decide(rows, rows[1], [3.000, 3.001, 2.999], CFG)
    line = describe_evidence(verdict.record())
    assert "after 2/4 pairs (candidate - control: -0.0500, -0.0600; 1 ran back to back" in line, line


def test_the_verdict_records_its_pairs_and_needs_a_noise_estimate():
    rows = [_row(1, "baseline", 3.0, 1)]
    _candidate(rows, 10, [-0.05, -0.06])
    verdict = paired.decide(rows, rows[1], [3.000, 3.001, 2.999], CFG)
    ev = verdict.evidence
    assert verdict.decision == "promote" and ev.design == "paired" and ev.runs == 2
    assert ev.samples == pytest.approx([-0.05, -0.06]) and ev.parent_samples == []
    assert [p["control"] for p in ev.pairs] == [11, 13] and "2 pairs" in verdict.reason
    assert ev.p_value <= ev.promote_below
    assert paired.decide(rows, rows[1], [3.0], CFG) is None  # no noise estimate: no verdict at all
    with pytest.raises(ValueError, match="noise_seeds must be at least 2"):
        AcceptanceConfig(noise_seeds=1)


def test_an_undecided_candidate_whose_pairs_all_favour_it_is_carried():
    """Inconclusive at the cap with every difference below zero: carried onto a new best (verdicts.py)
    rather than dropped; one pair against it, and it is not."""
    rows = [_row(1, "baseline", 3.0, 1)]
    _candidate(rows, 10, [-0.004, -0.001, -0.003, -0.002])
    cfg = AcceptanceConfig(noise_seeds=3, max_runs=4)
    verdict = paired.decide(rows, rows[1], [3.00, 3.02, 2.98], cfg)
    assert verdict.decision == "inconclusive" and paired.all_favour(verdict)
    rows = [_row(1, "baseline", 3.0, 1)]
    _candidate(rows, 10, [-0.004, 0.001, -0.003, -0.002])
    verdict = paired.decide(rows, rows[1], [3.00, 3.02, 2.98], cfg)
    assert verdict.decision == "inconclusive" and not paired.all_favour(verdict)


class Machine:
    """The real local executor with `n` slots; a stand-in failure for the controls in `fail` (a control that
    crashes, as a lost GPU would make it: the one thing this machine cannot produce on demand)."""

    def __init__(self, real, n: int, fail: set[int] = frozenset()):
        self.real, self.n, self.fail = real, n, set(fail)

    def slots(self, gpus, per_experiment):
        return [None] * self.n

    def run(self, trainer: Path, run_dir: Path, seed, env, slot, budget):
        if int(run_dir.name) in self.fail:
            return SandboxResult(status=Status.crash, reason="stand-in: the control crashed")
        return self.real.run(trainer, run_dir, seed, env, slot, budget)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _loop(
    tmp_path: Path, tiny_dataset, slots: int, experiments: int, fail=frozenset(), morning=0, **acceptance
):
    """A run whose scripted proposals train more steps (sure wins: each is confirmed, then promoted)."""
    cfg = AcceptanceConfig(**{"noise_seeds": 1, "known_sigma_bpb": 1e-6, "max_runs": 2, **acceptance})
    ws = _workspace(tmp_path / "ws", tiny_dataset, cfg)
    ws.config.scheduler.morning_rounds = morning
    loop = Loop(ws, ws.ledger(), ws.config.budget, console=Console(file=open(tmp_path / "out.txt", "w")))
    loop.lab.executor = Machine(loop.lab.executor, slots, fail)
    script = [(f"{n} steps", lambda tree, n=n: _steps(tree, n)) for n in (12, 9, 10)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agentgolf.agent.controller.loop.make_proposer", lambda name, ws: Scripted(script))
        summary = loop.run(RunCaps(experiments=experiments), "scripted")
    return loop.ledger.experiments(run_id=summary.run_id), summary


def _rounds(rows: list[Experiment]) -> list[tuple[Experiment, Experiment]]:
    by_id = {e.id: e for e in rows}
    return [(by_id[c.paired_with[0]], c) for c in rows if c.kind == "control"]


@pytest.mark.slow
def test_two_slots_run_each_round_at_once_and_alternate_the_candidates_slot(tmp_path, tiny_dataset):
    rows, _ = _loop(tmp_path, tiny_dataset, 2, 2)
    found = _rounds(rows)
    assert len(found) == 2, [(e.id, e.kind, e.status, e.reason) for e in rows]
    for k, (run, ctrl) in enumerate(found):
        assert (
            ctrl.seed == run.seed and ctrl.commit_sha == rows[0].commit_sha and ctrl.replay_of == rows[0].id
        )
        assert {run.slot, ctrl.slot} == {0, 1} and run.slot == k % 2  # the candidate's slot alternates
        # Launched together: each started before the other finished (the rows' started_at are written one
        # launch after the other, so how far apart they are is the machine's load, not the scheduler's).
        assert run.started_at < ctrl.finished_at and ctrl.started_at < run.finished_at
    assert found[0][0].seed != found[1][0].seed  # successive rounds: distinct seeds


@pytest.mark.slow
def test_four_slots_run_one_control_for_the_candidates_of_a_round(tmp_path, tiny_dataset):
    """Three proposals of the baseline are ready at once on four slots: one round, one control of the
    baseline serving all three, every run launched together with the same seed."""
    real, together = pipeline.prepare_proposal, threading.Barrier(3, timeout=120)
    real_ready, all_done = pipeline.Pipeline.ready, threading.Event()
    calls = itertools.count(1)

    def prepare_together(*args, **kwargs):
        first_three = next(calls) <= 3
        prepared = real(*args, **kwargs)
        if first_three:
            together.wait()  # all three are ready before the scheduler sees the first
        return prepared

    def ready_together(self):
        # Past the barrier, a thread may not be through its future's set_result when the scheduler wakes on
        # the first: none is offered until the first three futures are all done, so it sees three ready.
        if not all_done.is_set():
            if not all(f.done() for f in self.futures[:3]):
                return None
            all_done.set()
        return real_ready(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "prepare_proposal", prepare_together)
        patch.setattr(pipeline.Pipeline, "ready", ready_together)
        rows, summary = _loop(tmp_path, tiny_dataset, 4, 4, confirm=False)  # the baseline and three
    first = [e for e in rows if e.kind == "proposal"]
    (ctrl,) = [
        c
        for c in rows
        if c.kind == "control" and c.paired_with and set(c.paired_with) <= {e.id for e in first}
    ]
    assert sorted(ctrl.paired_with) == [e.id for e in first], [(c.id, c.paired_with) for c in rows]
    runs = [*first, ctrl]
    assert {e.slot for e in runs} == {0, 1, 2, 3} and len({e.seed for e in runs}) == 1
    # Launched together, in one round: every run started before any of them finished.
    assert max(e.started_at for e in runs) < min(e.finished_at for e in runs)
    assert ctrl.replay_of == rows[0].id and ctrl.commit_sha == rows[0].commit_sha
    for e in first:  # each candidate is judged on its pair with the shared control
        assert e.decision.get("design") == "paired", (e.id, e.reason)
        assert [p["control"] for p in e.decision["pairs"]][:1] == [ctrl.id]
    assert summary.experiments == 4


@pytest.mark.slow
def test_a_failed_control_voids_its_round_which_runs_again_uncharged(tmp_path, tiny_dataset):
    rows, summary = _loop(
        tmp_path, tiny_dataset, 1, 2, fail={3}, confirm=False
    )  # #2 proposal, #3 its control
    kinds = [(e.id, e.kind, e.status) for e in rows]
    assert kinds[:3] == [(1, "baseline", "ok"), (2, "proposal", "ok"), (3, "control", "crash")], kinds
    (again,) = [e for e in rows if e.kind == "confirm"]
    assert again.replay_of == 2 and again.seed == rows[1].seed and "its control failed" in again.title
    ((run, ctrl),) = [(r, c) for r, c in _rounds(rows) if c.status == "ok"]
    assert run.id == again.id and ctrl.seed == again.seed
    proposal = rows[1]
    assert proposal.decision["design"] == "paired" and [
        p["candidate"] for p in proposal.decision["pairs"]
    ] == [again.id]
    assert summary.experiments == 2  # the round again is not a new idea


@pytest.mark.slow
def test_the_morning_number_is_measured_when_the_run_ends(tmp_path, tiny_dataset):
    """The best chain's tip beside the baseline in fresh paired rounds, its gain with a 95% interval, kept on
    the run; the rounds are GPU hours, not ideas."""
    rows, summary = _loop(tmp_path, tiny_dataset, 1, 2, morning=2, confirm=False)
    best = next(e for e in rows if e.kept and e.kind == "proposal")
    tips = [e for e in rows if e.kind == "replay"]
    assert len(tips) == 2 and all(t.replay_of == best.id and t.commit_sha == best.commit_sha for t in tips)
    for tip in tips:
        (ctrl,) = [c for c in rows if c.kind == "control" and c.paired_with == [tip.id]]
        assert (
            ctrl.replay_of == rows[0].id
            and ctrl.seed == tip.seed
            and tip.seed not in (best.seed, rows[0].seed)
        )
    assert tips[0].seed != tips[1].seed
    state = tmp_path / "ws" / ".agentgolf"
    ledger = Ledger(state / "ledger.db")
    found = ledger.get_run(summary.run_id).settings["morning"]
    diffs = [
        t.val_bpb - c.val_bpb for t in tips for c in rows if c.kind == "control" and c.paired_with == [t.id]
    ]
    assert found["diffs"] == pytest.approx(diffs) and found["rounds"] == 2 and found["promotions"] == 1
    assert (
        found["gain_bpb"] == pytest.approx(-sum(diffs) / 2)
        and found["low"] < found["gain_bpb"] < found["high"]
    )
    assert found["gain_bpb"] > 0  # twice the steps: a real gain, confirmed on seeds no decision used
    said = (tmp_path / "out.txt").read_text()
    assert "morning number: best #" in said
    assert "false promotions expected among the 1 candidate(s) judged: at most 0.01" in said
    assert summary.experiments == 2
    line = run_status(state, ledger, summary.run_id).morning  # status and the report say it too
    assert line.startswith(f"morning number: best #{best.id} beats the baseline by +") and "95% CI" in line
    assert line in write_report(ledger, summary.run_id, tmp_path / "reports").markdown.read_text()
