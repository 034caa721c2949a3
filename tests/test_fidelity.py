"""The fidelity ladder: rung budgets, agreement, rank correlation, the send-to-full rule, the ledger's links, and
one real run that screens two ideas and runs the winner at the full budget."""

from __future__ import annotations

import json
import re

import pytest

from agentgolf.agent.judge import screening
from agentgolf.agent.judge.acceptance import AcceptanceConfig
from agentgolf.agent.judge.fidelity import (
    FidelityConfig,
    Pair,
    Rung,
    agreement,
    by_category,
    pairs,
    rung_budget,
    rung_env,
    send_to_full,
    spearman,
)
from agentgolf.agent.report.report import write_report
from agentgolf.agent.report.tables import ledger_json
from agentgolf.agent.workspace import save_config
from agentgolf.experiments.ledger import SCHEMA_VERSION, Experiment, Ledger, Run
from agentgolf.sandbox.budget import Budget
from tests.test_hill_climb import Scripted, _loop_run, _steps, _workspace
from tests.tiny import old_ledger


def _pair(category: str, screen: float, full: float, screen_won: bool, full_won: bool) -> Pair:
    return Pair(
        category=category,
        screen_delta=screen,
        full_delta=full,
        screen_promoted=screen_won,
        full_promoted=full_won,
    )


def test_a_rung_changes_only_the_training_window_and_adds_its_env():
    budget = Budget(train_seconds=600, size_bytes=16_000_000)
    screen = Rung(name="screen", train_seconds=120, trainer_env={"ITERATIONS": "50"})
    assert rung_budget(budget, screen).train_seconds == 120
    assert rung_budget(budget, screen).size_bytes == budget.size_bytes
    assert rung_budget(budget, None) == budget and rung_budget(budget, Rung()) == budget
    assert rung_env({"PRESET": "cpu", "ITERATIONS": "9"}, screen) == {"PRESET": "cpu", "ITERATIONS": "50"}


def test_spearman_matches_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # textbook case with a tie: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([1, 2], [2, 1]) is None  # too few pairs
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # no spread


def test_agreement_counts_verdicts_that_held_per_category():
    found = [
        _pair("opt", -0.02, -0.015, True, True),
        _pair("opt", -0.01, 0.004, True, False),  # a proxy win that flipped at full scale
        _pair("arch", 0.01, 0.02, False, False),
        _pair("arch", -0.005, -0.001, False, False),
    ]
    table = by_category(found)
    assert table["opt"].pairs == 2 and table["opt"].agreement == 0.5
    assert table["arch"].agreement == 1.0 and table["arch"].rank_correlation is None
    assert table["all"].pairs == 4 and table["all"].agreement == 0.75
    assert table["all"].rank_correlation == pytest.approx(
        spearman([-0.02, -0.01, 0.01, -0.005], [-0.015, 0.004, 0.02, -0.001])
    )
    assert agreement([]).agreement is None


def test_near_misses_go_to_full_until_the_screen_has_proved_itself():
    cfg = FidelityConfig(screen=Rung(), min_pairs=2, trust_agreement=0.8)
    good = [_pair("opt", -0.02, -0.02, True, True), _pair("opt", 0.01, 0.01, False, False)]
    poor = [_pair("opt", -0.02, 0.01, True, False), _pair("opt", 0.01, 0.01, False, False)]
    assert send_to_full("promote", -0.02, good, cfg)  # winners always
    assert not send_to_full("dead_end", 0.01, [], cfg)  # losers never
    assert not send_to_full("inconclusive", 0.002, [], cfg)  # undecided but worse on the screen
    assert send_to_full("inconclusive", -0.004, [], cfg)  # no evidence yet: the near-miss is measured
    assert send_to_full("inconclusive", -0.004, poor, cfg)  # the screen disagrees half the time
    assert not send_to_full("inconclusive", -0.004, good, cfg)  # the screen has earned trust


def test_pairs_link_an_ideas_rungs_through_screen_of():
    def row(i: int, rung: str, decision: str, delta: float, screen_of: int | None = None) -> Experiment:
        return Experiment(
            id=i,
            kind="proposal",
            status="ok",
            rung=rung,
            screen_of=screen_of,
            category="opt",
            decision={"decision": decision, "delta_bpb": delta},
            created_at=0.0,
        )

    rows = [
        row(1, "screen", "promote", -0.02),
        row(2, "", "dead_end", 0.01, screen_of=1),
        row(3, "screen", "dead_end", 0.03),
    ]
    (pair,) = pairs(rows)
    assert pair == Pair(
        category="opt", screen_delta=-0.02, full_delta=0.01, screen_promoted=True, full_promoted=False
    )


def test_a_change_carried_onto_a_new_best_is_screened_as_the_commit_it_now_is():
    """Its screened row measured the change on the old parent: as a new best it is screened again, and its
    two rungs' deltas (against two parents) are not counted as agreement."""
    screened = Experiment(
        id=5,
        kind="proposal",
        status="ok",
        rung="screen",
        commit_sha="old",
        parent_id=1,
        created_at=0.0,
        decision={"decision": "promote", "delta_bpb": -0.02},
    )
    carried = Experiment(
        id=7,
        kind="proposal",
        status="ok",
        rung="",
        commit_sha="rebased",
        parent_id=3,
        screen_of=5,
        kept=True,
        created_at=0.0,
        decision={"decision": "promote", "delta_bpb": -0.01},
    )
    assert screening.anchor([screened, carried], carried, "screen") == []  # screened again (next_measurement)
    assert pairs([screened, carried]) == []
    same = carried.model_copy(update={"commit_sha": "old", "parent_id": 1})
    assert (
        screening.anchor([screened, same], same, "screen") == [screened] and len(pairs([screened, same])) == 1
    )


def test_a_v4_ledger_gains_the_rung_and_the_screen_link(tmp_path):
    ledger = Ledger(old_ledger(tmp_path / "ledger.db", 4))
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 5
    assert (ledger.get(1).rung, ledger.get(1).screen_of) == ("", None)
    ledger.add_run(Run(id="r", created_at=1.0, base_commit="abc"))
    full = ledger.add_experiment(run_id="r", kind="proposal", status="running", rung="", screen_of=1)
    assert ledger.experiments()[1].screen_of == 1 and full.rung == ""


@pytest.mark.slow
def test_the_ladder_screens_then_runs_winners_at_the_full_budget(tmp_path, tiny_dataset):
    """A known sigma, one seed per rung. The screen trains with half the batch and half the time window.
    "Twelve steps" wins its screen and is run again at the full budget, where it is promoted; "Three
    steps" loses its screen and never costs a full run. The full run is not charged: 3 experiments of
    budget are the baseline and the two ideas."""
    ws = _workspace(
        tmp_path / "ws", tiny_dataset, AcceptanceConfig(noise_seeds=1, known_sigma_bpb=0.001, confirm=False)
    )
    ws.config.fidelity = FidelityConfig(
        screen=Rung(name="screen", train_seconds=300, trainer_env={"TRAIN_BATCH_TOKENS": "1024"})
    )
    save_config(ws.config_path, ws.config)
    script = [("Twelve steps", lambda tree: _steps(tree, 12)), ("Three steps", lambda tree: _steps(tree, 3))]
    summary, rows, said = _loop_run(ws, tmp_path, Scripted(script), experiments=3)

    base = rows[0]
    (seed,) = [e for e in rows if e.kind == "calibration"]
    assert (seed.rung, seed.replay_of, seed.status) == ("screen", base.id, "ok")
    (win,) = [e for e in rows if e.title == "Twelve steps" and e.rung == "screen"]
    (lose,) = [e for e in rows if e.title == "Three steps"]
    (full,) = [e for e in rows if e.screen_of is not None]
    assert win.rung == "screen" and win.decision["decision"] == "promote" and not win.kept
    assert f"measured at the full budget as experiment {full.id}" in win.reason
    assert (full.rung, full.screen_of, full.commit_sha) == ("", win.id, win.commit_sha)
    assert full.parent_id == base.id and full.kept and full.decision["decision"] == "promote", full.reason
    assert lose.rung == "screen" and lose.decision["decision"] == "dead_end"
    assert not [e for e in rows if e.screen_of == lose.id]  # a screen loser costs no full run
    assert summary.best_id == full.id
    ledger = Ledger(ws.state / "ledger.db")
    manifests = {e.id: e.manifest for e in ledger.experiments(run_id=summary.run_id, full=True)}
    for e, batch, seconds in (
        (seed, "1024", 300),
        (win, "1024", 300),
        (full, "2048", 600),
        (base, "2048", 600),
    ):
        env, budget = manifests[e.id]["env"], manifests[e.id]["budget"]
        assert (env["TRAIN_BATCH_TOKENS"], budget["train_seconds"]) == (batch, seconds), e.title
    # the screen compares with the baseline's screened seed, not with its full-budget score
    assert win.decision["parent_samples"] == [seed.val_bpb]
    assert win.delta_bpb == pytest.approx(win.val_bpb - seed.val_bpb)
    (pair,) = pairs(ledger.experiments(run_id=summary.run_id))
    assert pair.screen_promoted and pair.full_promoted
    report = write_report(ledger, summary.run_id, tmp_path / "reports").markdown.read_text()
    assert "Screen vs full budget" in report and "| all | 1 | 100% |" in report
    listed = {r["id"]: r for r in json.loads(ledger_json(ledger.experiments(run_id=summary.run_id)))}
    assert (listed[full.id]["screen_of"], listed[win.id]["rung"]) == (win.id, "screen")
    assert re.search(rf"^#{win.id} \(screen\) .*: Twelve steps", said, re.M), said  # id and rung first
