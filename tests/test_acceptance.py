"""The acceptance rule on hand-made results with known noise, and the distributions it relies on."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from agentgolf import challenge
from agentgolf.agent.judge import acceptance
from agentgolf.agent.judge.acceptance import AcceptanceConfig, judge
from agentgolf.agent.judge.stats import efficacy_boundary, normal_sf, student_t_sf, t_isf
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


def test_the_sequential_boundary_matches_pococks_tables_and_the_t_quantiles():
    """Pocock's constants (one-sided 0.025, equally spaced looks, no futility) and, for one look, the
    t distribution's own quantiles: the integration and its average over an estimated sigma are exact."""
    no_stop = (-math.inf,) * 5
    assert efficacy_boundary((1.0, 2.0), no_stop[:2], 0.025) == pytest.approx(2.178, abs=1e-3)
    assert efficacy_boundary((1.0, 2.0, 3.0, 4.0, 5.0), no_stop, 0.025) == pytest.approx(2.413, abs=1e-3)
    for dof in (2.0, 5.0, 30.0):
        assert efficacy_boundary((1.0,), (-math.inf,), 0.01, 0, dof) == pytest.approx(
            t_isf(0.01, dof), rel=1e-4
        )
    # Stops for futility spend none of alpha: the boundary comes down; an estimated sigma pushes it up.
    info = (1.0, 2.0, 3.0)
    assert efficacy_boundary(info, (0.5, 1.0, 0.0), 0.01) < efficacy_boundary(info, (-math.inf,) * 3, 0.01)
    assert efficacy_boundary(info, (0.5, 1.0, 0.0), 0.01, 0, 8.0) > efficacy_boundary(
        info, (0.5, 1.0, 0.0), 0.01
    )


def test_decisions_follow_the_rule():
    cfg = AcceptanceConfig(max_runs=4)
    parent = [1.500, 1.502, 1.498, 1.501, 1.499, 1.500, 1.503, 1.497, 1.500, 1.500]
    sigma = statistics.stdev(parent)  # 0.00183 with 9 dof
    assert judge([1.501], parent, sigma, 9, cfg).decision == "dead_end"
    assert judge([1.4995], parent, sigma, 9, cfg).decision == "inconclusive"  # 0.3 sigma: likely no gain
    first = judge([1.490], parent, sigma, 9, cfg)
    assert first.decision == "confirm" and "run 2/4" in first.reason  # a promotion needs a second run
    promoted = judge([1.490, 1.491], parent, sigma, 9, cfg)
    assert promoted.decision == "promote" and promoted.p_value < cfg.alpha
    e = promoted.evidence
    assert (e.runs, e.max_runs, e.noise, e.dof, e.samples) == (2, 4, "pooled", 9, [1.490, 1.491])
    assert e.p_value <= e.promote_below < cfg.alpha < e.drop_above  # promoted below a level under alpha
    assert e.statistic == pytest.approx(0.0095 / (sigma * math.sqrt(1 / 2 + 1 / 10)), rel=1e-9)


def test_the_runs_are_capped():
    """A candidate that keeps looking a little better is measured at most max_runs times."""
    cfg, parent, sigma = AcceptanceConfig(max_runs=3), [1.500] * 2 + [1.502, 1.498], 0.002
    hovering = [1.4975, 1.4978]
    assert judge(hovering, parent, sigma, 3, cfg).decision == "confirm"
    capped = judge([*hovering, 1.4976], parent, sigma, 3, cfg)
    assert capped.decision == "inconclusive" and "undecided after 3 runs" in capped.reason
    assert judge([*hovering, 1.4976, 1.4975], parent, sigma, 3, cfg).decision == "inconclusive"
    assert AcceptanceConfig(confirm=False).runs_cap == 1


def test_a_known_sigma_is_tested_as_known():
    """A user's sigma is a z-test with infinite degrees of freedom: it promotes where one measured
    degree of freedom could not (issue 12: a 0.02 gain measured twice at sigma 0.001)."""
    cfg = AcceptanceConfig(known_sigma_bpb=0.001)
    old_config = {"fallback_sigma_bpb": 0.001, "noise_k": 1.0, "confirm_seeds": 1}  # a workspace's old keys
    assert AcceptanceConfig.model_validate(old_config).known_sigma_bpb == 0.001
    assert cfg.fallback_sigma_bpb == 0.001
    verdict = judge([1.48, 1.481], [1.50], 0.001, math.inf, cfg)
    z = 0.0195 / (0.001 * math.sqrt(1 / 2 + 1))
    assert verdict.decision == "promote" and verdict.p_value == pytest.approx(normal_sf(z))
    assert (verdict.evidence.noise, verdict.evidence.dof) == ("known", None)
    assert judge([1.48, 1.481], [1.50], 0.001, 1, cfg).decision != "promote"  # the same as a 1-dof estimate
    rows = [_row(1, "baseline", 1.5), _row(2, "calibration", 1.6, replay_of=1)]  # a measured sigma, ignored
    assert acceptance.noise_floor(rows, known_sigma=0.001) == acceptance.Noise(
        sigma=0.001, dof=math.inf, source="known"
    )


def _sequential(rng: random.Random, gain_sigma: float, cfg: AcceptanceConfig) -> tuple[str, int]:
    """One candidate measured until the rule decides, against a baseline with noise_seeds seeds."""
    sigma = 0.002
    rows = [_row(1, "baseline", rng.gauss(1.5, sigma))]
    rows += [
        _row(i, "calibration", rng.gauss(1.5, sigma), replay_of=1) for i in range(2, cfg.noise_seeds + 1)
    ]
    exp = _row(100, "proposal", rng.gauss(1.5 - gain_sigma * sigma, sigma), parent_id=1)
    rows.append(exp)
    while (verdict := acceptance.decide(rows, exp, rows[0], cfg)).decision == "confirm":
        exp.status = "confirming"
        rows.append(
            _row(len(rows) + 100, "confirm", rng.gauss(1.5 - gain_sigma * sigma, sigma), replay_of=100)
        )
    return verdict.decision, len(acceptance.samples(rows, exp))


def test_null_candidates_are_rarely_promoted_and_large_gains_are():
    rng, cfg = random.Random(7), AcceptanceConfig()
    null = [_sequential(rng, 0.0, cfg) for _ in range(400)]
    large = [_sequential(rng, 4.0, cfg) for _ in range(100)]
    assert sum(d == "promote" for d, _ in null) <= 12  # alpha = 1%: 4 expected
    assert sum(d == "promote" for d, _ in large) >= 95
    assert max(n for _, n in null + large) <= cfg.max_runs
    assert statistics.fmean(n for _, n in null) < 2.0  # nulls are dropped early


def test_without_a_noise_estimate_nothing_is_promoted_on_a_plain_comparison():
    """The audit's D1: a plain comparison promoted 41% of no-gain changes. Now a run needs 2 noise seeds or a
    known sigma, and a verdict without any noise estimate never promotes."""
    with pytest.raises(ValueError, match="noise_seeds must be at least 2"):
        AcceptanceConfig(noise_seeds=1)
    cfg = AcceptanceConfig(noise_seeds=1, known_sigma_bpb=0.001, confirm=False)
    verdict = judge([1.49, 1.491], [1.50], 0.0, 0, cfg)
    assert verdict.decision == "inconclusive" and "no noise estimate" in verdict.reason
    assert judge([1.49], [1.50], 0.001, math.inf, cfg).decision == "promote"  # the same gain, a known sigma


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


def test_noise_floor_pools_every_repeated_measurement_with_its_degrees_of_freedom():
    rows = _rows()
    noise = acceptance.noise_floor(rows)
    # baseline seeds (1.500, 1.502, 1.498): SS 8e-6 on 2 dof; proposal + confirmation (1.480, 1.482): 2e-6 on 1
    assert noise.dof == 3 and noise.sigma == pytest.approx(math.sqrt(10e-6 / 3)) and noise.source == "pooled"
    judged = acceptance.noise_floor(rows, leave_out=5)  # the candidate under test is left out of its own test
    assert judged.dof == 2 and judged.sigma == pytest.approx(0.002)
    assert acceptance.noise_floor(rows[:1]) == acceptance.Noise(sigma=0.0, dof=0, source="none")


def test_a_step_needs_no_margin_unless_in_record_mode():
    rows = _rows()
    assert acceptance.margin_bpb(rows, AcceptanceConfig()) == 0.0
    derived = acceptance.margin_bpb(rows, AcceptanceConfig(record_mode=True))
    assert derived == pytest.approx(
        0.005 * 0.5 / math.log(2)
    )  # at the run's own tokens per byte, not sp1024's
    assert acceptance.margin_bpb(rows, AcceptanceConfig(min_delta_bpb=0.001)) == 0.001
    assert acceptance.margin_bpb([], AcceptanceConfig(record_mode=True)) == pytest.approx(
        challenge.margin_bpb()
    )
    assert challenge.margin_bpb() == pytest.approx(0.00295, abs=1e-5)
    # In record mode a gain inside the margin is not promoted however many runs show it.
    parent, sigma = [1.500, 1.502, 1.498, 1.501, 1.499], 0.0016
    step = judge([1.4975, 1.4976], parent, sigma, 20, AcceptanceConfig(), margin=0.0)
    record = judge([1.4975, 1.4976], parent, sigma, 20, AcceptanceConfig(record_mode=True), margin=derived)
    assert step.decision in ("confirm", "promote") and record.decision == "inconclusive"


def test_decide_uses_every_measurement_of_both_sides():
    rows = _rows()
    cfg = AcceptanceConfig()
    verdict = acceptance.decide(rows, rows[4], rows[0], cfg)
    # (1.480, 1.482) against (1.500, 1.502, 1.498); sigma 0.002 from the baseline's seeds, 2 dof
    t = 0.019 / (0.002 * math.sqrt(1 / 2 + 1 / 3))
    assert verdict.p_value == pytest.approx(student_t_sf(t, 2), rel=1e-6)
    assert verdict.evidence.samples == [1.480, 1.482] and verdict.evidence.parent_samples == [
        1.5,
        1.502,
        1.498,
    ]
    assert verdict.evidence.dof == 2
    # t = 10.4 crosses the boundary, which is t = 8.4 on 2 dof (2.7 were sigma known)
    assert verdict.decision == "promote"
    assert acceptance.boundaries(3, 2, cfg)[0] == pytest.approx(8.41, abs=0.01)
    assert acceptance.decide(rows[:5], rows[4], rows[0], cfg).decision == "confirm"  # one run: a confirmation
    recorded = verdict.record()
    assert recorded["decision"] == "promote" and recorded["rule"] == acceptance.RULE
    line = acceptance.describe_evidence(recorded)
    assert "promoted after 2/8 runs (1.4800, 1.4820) vs 3 parent runs" in line and "pooled, 2 dof" in line


def test_replay_reproduction_rule():
    cfg, noise = AcceptanceConfig(replay_noise_k=2.0), acceptance.Noise(sigma=0.001, dof=2)
    assert acceptance.reproduction(1.5, 1.5, noise, cfg) == "reproduced exactly"
    assert acceptance.reproduction(1.5, 1.5015, noise, cfg).startswith("reproduced within noise")
    assert acceptance.reproduction(1.5, 1.503, noise, cfg).startswith("DOES NOT REPRODUCE")
    assert acceptance.reproduction(1.5, 1.5001, acceptance.Noise(sigma=0.0, dof=1), cfg).startswith(
        "DOES NOT"
    )
