"""A baseline that starts slowly, like a cold compile on a GPU, is judged against the kill limit only, and the
allowance then follows what it measured, up as well as down, per rung of the fidelity ladder.

The real runs use the real loop, git, ledger and sandbox with a stand-in trainer (the toy bigram) that works
before it trains, as a cold compile holds a GPU run before its first step. A compile is CPU work, and these
runs keep the CPU clock of a CPU run (sandbox/cpu.py: CPU seconds over the slot's one thread), which the
load of this shared machine cannot move, so the stand-in burns CPU seconds rather than sleeping (a sleep uses
no CPU: it would not count at all). The logic under test does not depend on the clock. Numbers, scaled
down from a GPU's: the default overhead allowance is 1 s (60 s there), the grace 30 s (300 s), the cold
start 4 CPU seconds and more (100-130 s).
"""

from __future__ import annotations

import pytest

from agentgolf.agent.judge import allowance
from agentgolf.agent.judge.acceptance import AcceptanceConfig
from agentgolf.agent.judge.fidelity import FidelityConfig, Rung
from agentgolf.agent.workspace import WorkspaceConfig, save_config
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.budget import Budget, Timing
from tests.sandbox_support import MAIN_GUARD, TOY
from tests.test_hill_climb import Scripted, _edit, _loop_run
from tests.tiny import make_workspace

# A cold start before training: COLD_CPU_SECONDS of CPU work, from the env (a rung may set it), plus EXTRA in
# the code (what a proposal may change).
COLD_START = """
_toy_main = main


def main():
    cold = float(os.environ.get("COLD_CPU_SECONDS", "4")) + 0.0  # EXTRA
    t0 = time.process_time()
    while time.process_time() - t0 < cold:
        pass
    _toy_main()
"""
THREADS = "1"  # the slot's threads: the CPU clock counts CPU seconds over these
DEFAULT_OVERHEAD = 1.0  # the allowance before any measurement: less than the cold start
GRACE = 30.0  # the kill: more than the cold start, and than the slow candidates'
MARGIN = 3.0  # over the measured overhead: start-up's noise in CPU seconds, small
SLOWER = 10.0  # CPU seconds a slow candidate adds to its cold start: far past the margin
BUDGET = Budget(
    train_seconds=2.0,
    train_clock="cpu",
    train_overhead_seconds=DEFAULT_OVERHEAD,
    train_grace_seconds=GRACE,
    overhead_margin_seconds=MARGIN,
    cpu_wall_factor=10.0,  # the wall-clock kill behind the CPU one: far, as two busy cores stretch wall time
    score_seconds=120.0,
    memory_bytes=8 * 2**30,
)


def _row(
    i: int, kind: str, rung: str = "", commit: str = "base", parent: str = "base", **fields
) -> Experiment:
    return Experiment(
        id=i,
        kind=kind,
        status="ok",
        rung=rung,
        commit_sha=commit,
        parent_commit=parent,
        created_at=0.0,
        **fields,
    )


# -- the budget model and the rules, without runs --


def test_the_grace_defaults_to_the_gpu_one_when_gpus_are_used_and_a_set_one_stays():
    budget = Budget(train_seconds=600)
    assert budget.train_grace_seconds is None
    assert budget.for_gpus(True).train_kill_seconds == 600 + budget.gpu_grace_seconds == 900
    assert budget.for_gpus(False).train_kill_seconds == 600 + budget.cpu_grace_seconds == 720
    assert budget.train_kill_seconds == 720  # never given its devices: a CPU run's
    assert budget.for_gpus(True).for_gpus(False).train_grace_seconds == 300  # once set, it stays
    assert Budget(train_grace_seconds=60).for_gpus(True).train_kill_seconds == 660
    assert allowance.uses_gpus(WorkspaceConfig(gpus=[0, 1])) and not allowance.uses_gpus(WorkspaceConfig())
    slurm = WorkspaceConfig(executor="slurm")
    assert not allowance.uses_gpus(slurm)
    slurm.slurm.gpus_per_experiment = 8
    assert allowance.uses_gpus(slurm)
    # a workspace config written with the auto grace reads back as auto
    assert Budget.model_validate_json(budget.model_dump_json()).train_grace_seconds is None


def test_the_measured_allowance_goes_up_as_well_as_down_and_never_past_the_grace():
    gpu = Budget(train_seconds=60).for_gpus(True)  # the default 60 s overhead, the 300 s grace
    assert gpu.train_allowed_seconds == 120
    cold = gpu.with_measured_overhead(60 + 115)  # a cold compile: 115 s past train_seconds
    assert cold.train_allowed_seconds == 60 + 115 + 10  # up, to its measurement plus the 10 s margin
    warm = gpu.with_measured_overhead(60 + 20)
    assert warm.train_allowed_seconds == 60 + 20 + 10  # down
    slow = gpu.with_measured_overhead(60 + 400)
    assert slow.train_allowed_seconds == slow.train_kill_seconds == 360  # bounded by the grace
    assert gpu.with_measured_overhead(30) is gpu  # stopped before its clock: measured nothing
    limits = cold.model_copy(update={"load_allowance_seconds": 3.0}).limits_only()
    assert (
        limits.train_allowed_seconds == limits.train_kill_seconds == 360
        and limits.load_allowance_seconds is None
    )


def test_baseline_runs_are_judged_by_the_limits_and_set_their_rungs_allowances():
    """The baseline and its seeds (any rung) by the kill limits only; a new best's screened run, a control and
    a proposal by their rung's measurement (its latest baseline run's: the cold baseline's, then a warm
    seed's), else the full rung's, shifted to the rung's train_seconds, else the defaults."""
    full, screen = BUDGET, BUDGET.model_copy(update={"train_seconds": 1.0})
    seconds = {"": full.train_seconds, "screen": screen.train_seconds}

    def timing(phase: float, load: float) -> dict:
        return {"timing": Timing(train_phase_seconds=phase, load_seconds=load).model_dump()}

    rows = [  # in the order they finished
        _row(2, "calibration", finished_at=2.0, manifest=timing(2.0 + 9.0, 2.0)),  # a seed, warm: the latest
        _row(1, "baseline", finished_at=1.0, manifest=timing(2.0 + 20.0, 1.0)),  # cold: built the cache
        _row(3, "calibration", rung="screen", finished_at=3.0, manifest=timing(1.0 + 12.0, 1.0)),
        _row(4, "calibration", commit="best", finished_at=4.0, manifest=timing(99.0, 9.0)),  # a new best's
        _row(5, "calibration", finished_at=5.0, manifest=timing(99.0, 9.0)).model_copy(
            update={"status": "over_time"}  # a failed seed measures nothing
        ),
    ]
    found = allowance.measured(rows, lambda e: seconds[e.rung])
    assert found[""].runs == 2 and found[""].timing.train_phase_seconds == pytest.approx(9.0)
    assert found[""].timing.load_seconds == 2.0 and found["screen"].runs == 1
    cold = allowance.measured(rows[1:2], lambda e: seconds[e.rung])[""]  # before the seed came in
    candidate = _row(9, "proposal", commit="new")
    assert allowance.judged(full, candidate, {"": cold}).train_allowed_seconds == (
        2.0 + 20.0 + MARGIN  # up past the default, then down to the warm seed's below
    )
    colder = allowance.Measured(1, Timing(train_phase_seconds=40.0))
    assert allowance.judged(full, candidate, {"": colder}).train_allowed_seconds == 2.0 + GRACE  # bounded

    for kind, rung, commit in (("baseline", "", "base"), ("calibration", "screen", "base")):
        judged = allowance.judged(screen if rung else full, _row(9, kind, rung, commit), found)
        assert judged.train_overhead_seconds is None and judged.load_allowance_seconds is None
        assert judged.train_allowed_seconds == judged.train_kill_seconds
    for kind, commit in (("proposal", "new"), ("control", "base"), ("calibration", "best")):
        judged = allowance.judged(full, _row(9, kind, commit=commit), found)
        assert judged.train_allowed_seconds == 2.0 + 9.0 + MARGIN > 2.0 + DEFAULT_OVERHEAD
        assert judged.load_allowance_seconds == 2.0 * 1.5 + 5.0
    on_screen = allowance.judged(screen, _row(9, "proposal", "screen", "new"), found)
    assert on_screen.train_allowed_seconds == 1.0 + 12.0 + MARGIN  # its own rung's, not the full budget's
    no_screen = {"": found[""]}  # the screen's seed not in yet: the full budget's overhead, on its window
    assert allowance.judged(
        screen, _row(9, "proposal", "screen", "new"), no_screen
    ).train_allowed_seconds == (1.0 + 9.0 + MARGIN)
    assert allowance.judged(full, _row(9, "proposal", commit="new"), {}) == full  # nothing measured yet


# -- real runs --


def _cold_workspace(tmp_path, tiny_dataset, **config):
    """A workspace whose trainer at HEAD is the toy with a cold start, under BUDGET."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset, env={"OMP_NUM_THREADS": THREADS})
    toy = TOY.read_text()
    (ws.root / "train_gpt.py").write_text(toy[: -len(MAIN_GUARD)] + COLD_START + "\n\n" + MAIN_GUARD)
    repo = wt.open_repo(ws.root)
    repo.index.add(["train_gpt.py"])
    repo.index.commit("a trainer that starts like a cold compile", author=wt.AUTHOR, committer=wt.AUTHOR)
    ws.config.budget = BUDGET
    ws.config.acceptance = AcceptanceConfig(noise_seeds=1, known_sigma_bpb=0.001, confirm=False)
    for key, value in config.items():
        setattr(ws.config, key, value)
    save_config(ws.config_path, ws.config)
    return ws


def _more_steps(tree) -> None:
    """Like the baseline, start-up and all: a few more steps."""
    _edit(tree, "STEPS = 80", "STEPS = 90")


def _slow_start(tree) -> None:
    """Starts SLOWER CPU seconds later than the baseline: far past its measured overhead, inside the kill."""
    _edit(tree, "+ 0.0  # EXTRA", f"+ {SLOWER}  # EXTRA")


def _manifests(ws, run_id: str) -> dict[int, dict]:
    return {e.id: e.manifest for e in ws.ledger().experiments(run_id=run_id, full=True)}


def _phase(manifest: dict) -> float:
    """The training phase on its clock (CPU seconds over its threads)."""
    assert manifest["clock"]["train_clock"] == "cpu" and manifest["clock"]["threads"] == int(THREADS)
    return manifest["timing"]["train_phase_seconds"]


def _overhead(manifest: dict) -> float:
    return _phase(manifest) - manifest["budget"]["train_seconds"]


@pytest.mark.slow
def test_a_cold_starting_baseline_is_ok_and_its_measurement_sets_the_allowance(tmp_path, tiny_dataset):
    """The must-show: the baseline starts slower than the default allowance (before the fix: `over_time`, and
    the run stopped). It is `ok`; the allowance rises to its measured overhead plus the margin; a candidate
    that starts like it is `ok`, one that starts SLOWER CPU seconds later is `over_time` (not killed: that is the grace)."""
    ws = _cold_workspace(tmp_path, tiny_dataset)
    script = [("More steps", _more_steps), ("Slow start", _slow_start)]
    summary, rows, said = _loop_run(ws, tmp_path, Scripted(script), experiments=3)
    manifests = _manifests(ws, summary.run_id)
    base = rows[0]
    assert base.kind == "baseline" and base.status == "ok" and base.val_bpb is not None, base.reason
    measured = _overhead(manifests[base.id])
    assert measured > DEFAULT_OVERHEAD + 2.0  # its cold start: over the default allowance by far
    assert manifests[base.id]["train_allowed_seconds"] == BUDGET.train_seconds + GRACE  # the kill alone
    assert manifests[base.id]["budget"]["train_overhead_seconds"] is None

    (like,) = [e for e in rows if e.title == "More steps"]
    (slow,) = [e for e in rows if e.title == "Slow start"]
    allowed = BUDGET.train_seconds + measured + MARGIN
    for row in (like, slow):
        assert manifests[row.id]["budget"]["train_overhead_seconds"] == pytest.approx(measured + MARGIN)
        assert manifests[row.id]["train_allowed_seconds"] == pytest.approx(allowed)
    assert like.status == "ok" and like.val_bpb is not None, like.reason
    assert slow.status == "over_time" and "overhead allowance" in slow.reason, slow.reason
    assert allowed + 3.0 < _phase(manifests[slow.id]) < BUDGET.train_seconds + GRACE
    controls = [e for e in rows if e.kind == "control"]
    assert controls and all(c.status == "ok" for c in controls), [c.reason for c in controls]
    assert "the baseline did not produce a score" not in summary.stop_reason
    assert "the latest of 1 baseline run(s) at the full budget, plus the margin" in said


@pytest.mark.slow
def test_each_rung_of_the_ladder_is_judged_by_its_own_baseline_runs(tmp_path, tiny_dataset):
    """The screen starts slower (COLD_CPU_SECONDS=12 in its env) than the full budget's allowance: its baseline
    seed is judged by the kill only, and its measurement, not the full budget's, sets the screen's
    allowance: a screened candidate that starts like it is `ok`, one SLOWER later `over_time`."""
    screen = Rung(name="screen", train_seconds=1.0, trainer_env={"COLD_CPU_SECONDS": "12"})
    ws = _cold_workspace(tmp_path, tiny_dataset, fidelity=FidelityConfig(screen=screen))
    same_start = lambda tree: _edit(tree, "STEPS = 80", "STEPS = 80  # the same")  # noqa: E731
    script = [("Same start", same_start), ("Slow start", _slow_start)]
    summary, rows, said = _loop_run(ws, tmp_path, Scripted(script), experiments=3)
    manifests = _manifests(ws, summary.run_id)
    base = rows[0]
    (seed,) = [e for e in rows if e.kind == "calibration"]
    assert base.status == "ok" and (seed.rung, seed.status) == ("screen", "ok"), seed.reason
    full_overhead, screen_overhead = _overhead(manifests[base.id]), _overhead(manifests[seed.id])
    assert screen_overhead > full_overhead + MARGIN  # under the full budget's allowance it would fail
    assert manifests[seed.id]["train_allowed_seconds"] == screen.train_seconds + GRACE

    (same,) = [e for e in rows if e.title == "Same start"]
    (slow,) = [e for e in rows if e.title == "Slow start"]
    for row in (same, slow):
        assert row.rung == "screen"
        allowed = manifests[row.id]["train_allowed_seconds"]
        assert allowed == pytest.approx(screen.train_seconds + screen_overhead + MARGIN)
    # it is `ok` only by the screen's own measurement: past what the full budget's would allow on the screen
    assert same.status == "ok" and _phase(manifests[same.id]) > screen.train_seconds + full_overhead + MARGIN
    assert slow.status == "over_time" and "overhead allowance" in slow.reason, slow.reason
    assert "at the full budget, plus the margin" in said and "on rung screen, plus the margin" in said
