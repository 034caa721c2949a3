"""The rules of measurement, as a proposal's prompt states them: how an idea will be judged, with the noise
the run has measured so far, the smallest gain the rule can promote at that noise, and the budget left.

A model that does not know it is judged on a 20 s screen first, with 0.05 bpb of noise, cannot tell
whether a small, sure gain is worth a slot. Every number here is read from where the judge reads it: the
settings models (`AcceptanceConfig`, `FidelityConfig`, `Budget`), the ledger's rows through the judge's
own functions (`paired.noise`, `acceptance.noise_floor`, the boundaries), and the run's recorded caps;
nothing is restated by hand, so the prompt cannot drift from the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel

from agentgolf.agent.judge import acceptance, paired, screening
from agentgolf.agent.judge.acceptance import AcceptanceConfig
from agentgolf.agent.judge.fidelity import FidelityConfig, Rung
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import CHARGED_KINDS, NOISE_KINDS, Kind, RowStatus
from agentgolf.sandbox.budget import Budget


class BudgetLeft(BaseModel):
    """The run's --budget as the scheduler counts it, and the preparations that will take from it."""

    cap: int | None  # the run's experiments cap (None: no run recorded)
    charged: int  # rows counted against it so far
    preparing: int  # preparations in flight, this one included

    @property
    def left(self) -> int | None:
        """Proposals the budget still allows after every preparation in flight (this one included)."""
        return None if self.cap is None else self.cap - self.charged - self.preparing

    def line(self) -> str:
        if self.cap is None:
            return "Budget: not recorded for this run."
        text = (
            f"Budget: {self.charged} of {self.cap} experiments charged (the baseline and every proposal, "
            f"rejected ones too); {self.preparing} proposal(s) being prepared now, yours included"
        )
        if self.left is not None and self.left <= 0:
            return text + ". This is the last proposal of the run: make it the one most likely to win."
        return text + f"; {self.left} more after these."


def charged(rows: Sequence[Experiment]) -> int:
    """What counts against --budget, as the scheduler counts it (Scheduler.charged): a re-test and a
    screened idea's full-budget run are the same idea measured again, and calibration seeds are extra runs."""
    return sum(1 for e in rows if e.kind in CHARGED_KINDS and e.retest_of is None and e.screen_of is None)


def rung_labels(fidelity: FidelityConfig, budget: Budget) -> dict[str, str]:
    """Each rung's name as a digest line says it: "screen 20 s", "full 60 s"."""
    labels = {"": f"full {budget.train_seconds:g} s"}
    if fidelity.screen is not None:
        labels[fidelity.screen.name] = f"{fidelity.screen.name} {_seconds(fidelity.screen, budget):g} s"
    return labels


def _seconds(rung: Rung, budget: Budget) -> float:
    return rung.train_seconds if rung.train_seconds is not None else budget.train_seconds


def _calibration(rows: Sequence[Experiment], rung: str) -> list[float]:
    """The baseline's scored runs on a rung: the judge's prior on the paired noise (verdicts._decide)."""
    return [
        e.val_bpb
        for e in rows
        if e.kind in NOISE_KINDS and e.rung == rung and e.status == RowStatus.ok and e.val_bpb is not None
    ]


def full_rung(rows: Sequence[Experiment], cfg: AcceptanceConfig) -> str:
    """The full budget's noise (the paired judge's σ_d, as paired.noise computes it for a new candidate)
    and the smallest mean gain that promotes at the first look allowed and at the last."""
    probe = Experiment(id=-1, kind=Kind.proposal, status=RowStatus.running, created_at=0.0)
    lane = screening.lane(rows, "")
    noise, _ = paired.noise(lane, probe, _calibration(lane, ""), cfg)
    if noise.source == "none":
        return "noise not measured yet (the baseline's seeds are still running): no verdict is possible until then"
    c, _ = acceptance.paired_boundaries(noise.dof, cfg)
    margin = acceptance.margin_bpb(rows, cfg)
    first, cap = cfg.first_promotion, cfg.runs_cap
    at = {n: margin + c * noise.sigma / math.sqrt(n) for n in (first, cap)}
    dof = "known" if noise.source == "known" else f"{noise.dof:g} degrees of freedom"
    return (
        f"σ of a candidate-minus-control difference {noise.sigma:.4f} bpb ({dof}); a candidate gets "
        f"1 to {cap} paired rounds, each beside a control of its parent with the same seed; it is promoted "
        f"from round {first} on when its mean gain reaches t = {c:.2f}: at least {at[first]:.4f} bpb "
        f"better after {first} rounds, {at[cap]:.4f} after {cap}"
    )


def screen_rung(rows: Sequence[Experiment], cfg: AcceptanceConfig, rung: str) -> str:
    """The screen's noise (its own pooled seed σ, unpaired) and the smallest gain it favours."""
    lane = screening.lane(rows, rung)
    noise = acceptance.noise_floor(lane, cfg.known_sigma_bpb)
    if noise.source == "none":
        return "noise not measured yet (its baseline seeds are still running)"
    m = max(1, sum(1 for e in lane if e.kind in NOISE_KINDS and e.status == RowStatus.ok))
    c, _ = acceptance.boundaries(m, noise.dof, cfg)
    margin = acceptance.margin_bpb(rows, cfg)
    first = cfg.first_promotion
    gain = margin + c * noise.sigma * math.sqrt(1 / first + 1 / m)
    dof = "known" if noise.source == "known" else f"{noise.dof:g} degrees of freedom"
    return (
        f"σ of one run {noise.sigma:.4f} bpb ({dof}); judged unpaired against its parent's {m} screened "
        f"run(s); it favours an idea at about {gain:.4f} bpb better after {first} run(s)"
    )


def measurement_rules(
    acc: AcceptanceConfig,
    fidelity: FidelityConfig,
    budget: Budget,
    rows: Sequence[Experiment],
    left: BudgetLeft,
) -> str:
    """The rules block of a prompt (see the module docstring)."""
    labels = rung_labels(fidelity, budget)
    clock = {"cpu": "CPU seconds", "wall": "wall-clock seconds"}.get(budget.train_clock, "seconds")
    lines = []
    screen = fidelity.screen
    if screen is not None:
        lines.append(
            f"- Every new idea is measured first on the screen rung ({labels[screen.name]} of training"
            + (f", {screen.gpus_per_experiment} GPU(s) per experiment" if screen.gpus_per_experiment else "")
            + f"), against its parent's screened runs; the screen never promotes. What it favours (and, "
            f"until {fidelity.min_pairs} ideas have shown the screen agrees with the full budget at least "
            f"{fidelity.trust_agreement:.0%} of the time, its near-misses) is run again at the "
            f"{labels['']} budget, where alone an idea can be promoted."
        )
        lines.append(f"- Screen ({labels[screen.name]}): {screen_rung(rows, acc, screen.name)}.")
    else:
        lines.append(f"- Every idea runs at the full budget ({labels['']} of training).")
    lines.append(f"- Full budget ({labels['']}): {full_rung(rows, acc)}.")
    lines.append(
        f"- A change with no real gain is promoted with probability {acc.alpha:g} at most; one no better "
        "than its parent is a dead end, one that stays undecided is inconclusive. A gain smaller than the "
        "figures above is real but will not be promoted: prefer changes whose effect clears them."
    )
    lines.append(
        f"- Budgets: artifact (code + compressed model) at most {budget.size_bytes:,} bytes; training "
        f"{budget.train_seconds:g} {clock} at the full budget."
    )
    lines.append(f"- {left.line()}")
    return "\n".join(lines)
