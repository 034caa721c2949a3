"""The acceptance rule on synthetic results with known noise, and the t distribution it relies on."""

from __future__ import annotations

import random

import pytest

from agentgolf.agent.acceptance import judge, noise_sigma
from agentgolf.agent.stats import student_t_sf
from agentgolf.experiments.workspace import AcceptanceConfig


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
    sigma = noise_sigma(parent, 0.0)
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
        measured = noise_sigma(parent, 0.0)
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
