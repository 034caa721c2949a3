"""The acceptance rule on synthetic results with known noise, and the t distribution it relies on."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from agentgolf import challenge
from agentgolf.agent import acceptance
from agentgolf.agent.acceptance import AcceptanceConfig, judge
from agentgolf.agent.stats import student_t_sf
from agentgolf.experiments.ledger import Experiment


@pytest.mark.parametrize(
    ("t", "dof", "p"),
    [
        (31.42, 2, 0.00051),
        (9.06, 2, 0.006),
        (0.0, 5, 0.5),
        (1.812461, 10, 0.05),
        (2.763769, 28, 0.005),
        (-1.812461, 10, 0.95),
    ],
)
def test_t_tail_matches_tables(t, dof, p):
    assert student_t_sf(t, dof) == pytest.approx(p, rel=0.02, abs=1e-5)


def test_decisions_follow_the_rule():
    cfg = AcceptanceConfig(noise_k=1.0, confirm=True, confirm_seeds=1, min_delta_bpb=0.003, alpha=0.01)
    parent = [1.500, 1.502, 1.498]
    sigma = statistics.stdev(parent)
    assert sigma == pytest.approx(0.002)
    assert judge([1.501], parent, sigma, 2, cfg).decision == "dead_end"
    assert judge([1.4985], parent, sigma, 2, cfg).decision == "inconclusive"  # -0.0015 < 1 sigma
    assert judge([1.490], parent, sigma, 2, cfg).decision == "confirm"
    promoted = judge([1.470, 1.471], parent, sigma, 2, cfg)
    assert promoted.decision == "promote" and promoted.p_value < 0.01
    weak = judge([1.494, 1.495], parent, sigma, 2, cfg)  # beats parent but not by 0.003 + noise
    assert weak.decision == "inconclusive" and weak.p_value > 0.01


def test_false_promotion_rate_is_controlled_under_known_noise():
    """Candidates with no real gain, noise sigma=0.002: almost none may be promoted."""
    rng = random.Random(7)
    cfg = AcceptanceConfig(noise_k=1.0, confirm=True, confirm_seeds=1, min_delta_bpb=0.0, alpha=0.01)
    sigma, promoted, real_promoted = 0.002, 0, 0
    for _ in range(2000):
        parent = [rng.gauss(1.5, sigma) for _ in range(3)]
        measured = statistics.stdev(parent)
        null = [rng.gauss(1.5, sigma) for _ in range(2)]
        if judge(null, parent, measured, 2, cfg).decision == "promote":
            promoted += 1
        good = [rng.gauss(1.5 - 0.02, sigma) for _ in range(2)]  # a real 10-sigma gain
        if judge(good, parent, measured, 2, cfg).decision == "promote":
            real_promoted += 1
    assert promoted / 2000 < 0.02
    assert real_promoted / 2000 > 0.9


def test_deterministic_runs_without_calibration_compare_plainly():
    cfg = AcceptanceConfig(noise_seeds=1, confirm=False, min_delta_bpb=0.0)
    assert judge([1.49], [1.50], 0.0, 1, cfg).decision == "promote"
    assert judge([1.50], [1.50], 0.0, 1, cfg).decision == "dead_end"


# --- the acceptance functions over hand-made ledger rows: no training, no ledger file ---------------------


def _row(id: int, kind: str, bpb: float | None, status: str = "ok", **kw) -> Experiment:
    return Experiment(id=id, kind=kind, status=status, val_bpb=bpb, created_at=0.0, **kw)


def _rows() -> list[Experiment]:
    return [
        _row(1, "baseline", 1.500, val_loss=1.500 * math.log(2) / 0.5),  # 0.5 tokens per byte
        _row(2, "calibration", 1.502, replay_of=1),
        _row(3, "calibration", 1.498, replay_of=1),
        _row(4, "calibration", None, status="crash", replay_of=1),  # a failed seed measures nothing
        _row(5, "proposal", 1.480, parent_id=1),
        _row(6, "confirm", 1.482, replay_of=5, parent_id=1),
        _row(7, "replay", 1.470, replay_of=5),  # a user's replay is not a confirmation
        _row(8, "proposal", 1.490, status="crash", parent_id=1),
    ]


def test_samples_are_the_row_and_its_confirmations_or_seeds():
    rows = _rows()
    assert acceptance.samples(rows, rows[0]) == [1.500, 1.502, 1.498]
    assert acceptance.samples(rows, rows[4]) == [1.480, 1.482]
    assert acceptance.samples(rows, rows[7]) == []


def test_noise_floor_pools_the_baseline_seeds_with_their_degrees_of_freedom():
    noise = acceptance.noise_floor(_rows())
    assert noise.sigma == pytest.approx(0.002) and noise.dof == 2
    lone = acceptance.noise_floor(_rows()[:1], fallback_sigma=0.01)
    assert lone.sigma == 0.01 and lone.dof == 1


def test_margin_is_the_record_margin_at_the_runs_own_tokens_per_byte():
    rows = _rows()
    derived = acceptance.margin_bpb(rows, AcceptanceConfig())
    assert derived == pytest.approx(0.005 * 0.5 / math.log(2))  # not sp1024's 0.0029
    assert acceptance.margin_bpb(rows, AcceptanceConfig(min_delta_bpb=0.001)) == 0.001
    assert acceptance.margin_bpb([], AcceptanceConfig()) == pytest.approx(challenge.margin_bpb())
    assert challenge.margin_bpb() == pytest.approx(0.00295, abs=1e-5)


def test_decide_uses_every_measurement_of_both_sides():
    rows = _rows()
    cfg = AcceptanceConfig(noise_k=1.0, confirm=True, confirm_seeds=1, min_delta_bpb=0.0, alpha=0.01)
    verdict = acceptance.decide(rows, rows[4], rows[0], cfg)
    # (1.480, 1.482) against (1.500, 1.502, 1.498), sigma 0.002 with 2 dof: t = 0.019 / 0.001826 = 10.4
    assert verdict.decision == "promote" and verdict.p_value == pytest.approx(student_t_sf(10.4, 2), rel=0.02)
    unconfirmed = acceptance.decide(rows[:5], rows[4], rows[0], cfg)
    assert unconfirmed.decision == "confirm"


def test_replay_reproduction_rule():
    cfg, noise = AcceptanceConfig(replay_noise_k=2.0), acceptance.Noise(sigma=0.001, dof=2)
    assert acceptance.reproduction(1.5, 1.5, noise, cfg) == "reproduced exactly"
    assert acceptance.reproduction(1.5, 1.5015, noise, cfg).startswith("reproduced within noise")
    assert acceptance.reproduction(1.5, 1.503, noise, cfg).startswith("DOES NOT REPRODUCE")
    assert acceptance.reproduction(1.5, 1.5001, acceptance.Noise(sigma=0.0, dof=1), cfg).startswith(
        "DOES NOT"
    )
