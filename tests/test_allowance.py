"""`agentgolf sandbox TRAINER` bounds training by the allowance measured on the workspace's baseline, as a run
does: real workspace, real git, real sandbox, real subprocesses. Budgets of a second or two, the tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from agentgolf.agent.judge import allowance
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.budget import Budget
from tests.sandbox_support import MAIN_GUARD, TOY
from tests.test_cli import agentgolf, one_line_error
from tests.tiny import make_workspace

MEASURING = "measuring the baseline's overhead once for this commit and machine (cached)"
# Trains 12 s past whatever clock it is given: inside the default 60 s allowance, far outside the measured one.
CLOCK_IGNORER = """
_toy_train = train


def train(model, tokens, seconds):
    t0 = time.time()
    while time.time() - t0 < seconds + 12.0:
        _toy_train(model, tokens, 0)
"""


@pytest.fixture
def workspace(tmp_path: Path, tiny_dataset) -> Path:
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    # The margin over the baseline's own overhead: wide enough for two busy cores' noise between the
    # baseline and an honest candidate, far below the clock ignorer's 12 s.
    ws.config.budget = ws.config.budget.model_copy(update={"overhead_margin_seconds": 4.0})
    ws.config_path.write_text(ws.config.model_dump_json(indent=2))
    return ws.root


def trainer(tmp_path: Path, extra: str = "") -> Path:
    """The toy trainer, with `extra` code before its __main__ guard."""
    toy = TOY.read_text()
    path = tmp_path / ("clock_ignorer.py" if extra else "toy.py")
    path.write_text(toy[: -len(MAIN_GUARD)] + extra + "\n\n" + MAIN_GUARD)
    return path


def quitter(tmp_path: Path) -> Path:
    """A candidate that exits at once: for checks of the allowance alone, with no run to wait for."""
    path = tmp_path / "quitter.py"
    path.write_text("import sys\n\nsys.exit(3)\n")
    return path


def sandbox(workspace: Path, candidate: Path, *extra: str):
    proc = agentgolf("sandbox", str(candidate), "--time-budget", "1", "--json", *extra, cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_a_trainer_that_ignores_its_clock_is_over_time_standalone(workspace, tmp_path):
    """The finding: with --time-budget 1 a clock ignorer trains 13 s and was `ok` under the default allowance.
    Now the baseline is measured once and bounds it; the workspace's honest trainer stays `ok`, from the cache."""
    cache = workspace / ".agentgolf" / "allowance.json"
    result, stderr = sandbox(workspace, trainer(tmp_path, CLOCK_IGNORER))
    assert MEASURING in stderr
    assert "measured just now on the baseline (train_gpt.py at commit" in stderr
    assert result["status"] == "over_time", result["reason"]
    assert result["train_seconds"] > 13 and "overhead allowance" in result["reason"]

    mtime = cache.stat().st_mtime_ns
    honest = tmp_path / "honest.py"
    honest.write_bytes((workspace / "train_gpt.py").read_bytes())
    result, stderr = sandbox(workspace, honest)
    assert MEASURING not in stderr and cache.stat().st_mtime_ns == mtime  # the cache, not a new baseline
    assert "measured on the baseline (train_gpt.py at commit" in stderr and f"cached in {cache}" in stderr
    assert result["status"] == "ok" and result["val_bpb"] > 0, result["reason"]


def test_the_default_allowance_is_said_plainly_and_a_stated_one_applies(workspace, tmp_path):
    """--no-measure: the clock ignorer is `ok` (the finding), and the output says why; --overhead states it."""
    result, stderr = sandbox(workspace, trainer(tmp_path, CLOCK_IGNORER), "--no-measure")
    assert result["status"] == "ok" and result["train_seconds"] > 13
    assert "training past train_seconds is only bounded by the default allowance of 60 s" in stderr
    assert MEASURING not in stderr and not (workspace / ".agentgolf" / "allowance.json").exists()

    proc = agentgolf(
        "sandbox", str(quitter(tmp_path)), "--time-budget", "1", "--overhead", "30", cwd=workspace
    )
    assert proc.returncode == 0, proc.stderr
    assert "may take 31 s (train_seconds 1 + 30 s overhead): stated (--overhead 30)" in proc.stdout
    assert "status: crash" in proc.stdout and MEASURING not in proc.stderr


def test_a_corrupt_cache_is_measured_again_and_a_new_commit_too(workspace, tmp_path):
    cache = workspace / ".agentgolf" / "allowance.json"
    cache.write_text('{"entries": {"x": 3')
    toy = quitter(tmp_path)
    result, stderr = sandbox(workspace, toy)
    assert f"warning: allowance cache {cache} is unreadable" in stderr and MEASURING in stderr
    assert "measured just now on the baseline" in stderr
    first = json.loads(cache.read_text())["entries"]
    assert len(first) == 1

    repo = git.Repo(workspace)
    with (workspace / "train_gpt.py").open("a") as f:
        f.write("\n# a new commit of the baseline\n")
    repo.index.add(["train_gpt.py"])
    sha = repo.index.commit("another baseline", author=git.Actor("t", "t@t"), committer=git.Actor("t", "t@t"))
    result, stderr = sandbox(workspace, toy)
    assert MEASURING in stderr and f"at commit {sha.hexsha[:10]}" in stderr
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 2 and {e["commit"] for e in entries.values()} == {
        *(e["commit"] for e in first.values()),
        sha.hexsha,
    }


def test_bad_allowance_arguments_are_one_line(workspace):
    one_line_error(
        agentgolf("sandbox", "t.py", "--overhead", "-5", cwd=workspace), "--overhead: must be at least 0"
    )
    one_line_error(agentgolf("sandbox", "t.py", "--overhead", "x", cwd=workspace), "--overhead: not a number")
    one_line_error(
        agentgolf("sandbox", "t.py", "--overhead", "3", "--no-measure", cwd=workspace), "not allowed with"
    )


def test_a_run_bounds_every_allowance_by_its_baselines_recorded_timing():
    """A run's allowances come from the baseline row's manifest timing (Lab.record writes it); an older row
    without one still bounds training by its training phase. The baseline itself is judged by the limits."""
    budget = Budget(train_seconds=10, train_grace_seconds=120)
    timing = {"train_phase_seconds": 14.0, "load_seconds": 2.0, "predict_seconds": 3.0, "val_tokens": 1000}
    common = {"kind": "baseline", "status": "ok", "created_at": 0.0, "train_seconds": 14.0}
    common |= {"commit_sha": "base", "parent_commit": "base"}
    candidate = Experiment(id=2, kind="proposal", status="running", created_at=0.0, commit_sha="new")
    for manifest, load in (({"timing": timing}, 2.0 * 1.5 + 5.0), ({}, None), ({"timing": {"x": "y"}}, None)):
        base = Experiment(id=1, **common, manifest=manifest)
        found = allowance.measured([base], lambda e: budget.train_seconds)
        judged = allowance.judged(budget, candidate, found)
        assert judged.train_allowed_seconds == 10 + 4 + 10  # its 4 s overhead plus the 10 s margin
        assert judged.load_allowance_seconds == load
        assert allowance.judged(budget, base, found).train_allowed_seconds == 10 + 120  # the kill alone


def test_a_row_records_the_allowance_it_was_launched_under(tmp_path, tiny_dataset):
    """A candidate launches, then a baseline seed finishes beside it and moves the allowances: the row's
    recorded allowance is the one its sandbox enforced (its manifest's budget), not the new one."""
    import time

    from agentgolf.agent.controller.lab import Lab
    from agentgolf.experiments.ledger import Run
    from agentgolf.sandbox.budget import Timing
    from agentgolf.sandbox.result import SandboxResult, Status

    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    ledger = ws.ledger()
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="0" * 40))
    lab = Lab(ws, ledger, ws.config.budget)
    head = lab.repo.head.commit.hexsha
    exp = ledger.add_experiment(
        run_id="r1", kind="proposal", status="running", title="c", seed=1, commit_sha=head, parent_commit=head
    )
    lab.prepare_run_dir(exp, None)
    launched = Budget.model_validate(ledger.get(exp.id).manifest["budget"]).train_allowed_seconds
    assert lab.launch_budget(exp).train_allowed_seconds == launched
    seconds = lab.budget.train_seconds
    lab.measured = {
        "": allowance.Measured(1, Timing(train_phase_seconds=1.0))
    }  # a seed came in: 1 s overhead
    assert lab.budget_for(exp).train_allowed_seconds != launched  # the allowance moved
    result = SandboxResult(status=Status.ok, val_bpb=2.5, train_seconds=seconds, steps=10, step_ms=1.0)
    row = lab.record(exp, result, None)
    assert row.manifest["train_allowed_seconds"] == launched
