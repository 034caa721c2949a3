"""Simulated nights for bench/acceptance_power.py: the loop's own decision code on in-memory ledger rows.

Every training scores

    val_bpb = true_bpb + drift(t) + sigma * (sqrt(f) * z(seed) + sqrt(1 - f) * e)

- t counts the night's trainings; the two trainings of one paired round share their t.
- drift(t): none; linear, -D sigma per NIGHT_TRAININGS (scores improve, as the CPU runs saw); or a step of
  -D sigma at a time drawn uniformly from the first NIGHT_TRAININGS.
- z(seed) is drawn once per night and seed: the part of the noise the seed fixes (the init; the data
  order is the same for every run already). Two commits trained with one seed share it. e is fresh.

A night: the baseline and its calibration seeds (`noise_seeds` trainings), then candidates one after
another, each measured until its design decides. A promotion becomes the next parent, lucky runs and all.
- "current": `acceptance.decide` against the parent's runs (the baseline's calibration seeds, or the runs
  that promoted it), with the loop's seeds (every proposal 1337, its k-th confirmation 1337 + 1000k).
- "paired": each round trains the candidate and a control of its parent with one seed (a new seed each
  round, `confirmation_seed`), on 2 slots at one time. The verdict is `paired.judge` on the candidate's
  `paired.pairs`; sigma_d is pooled as `paired.noise` pools it, incrementally (the candidates before this one
  have finished, so it is fixed while one is judged). On the night's checked rows every verdict is also
  asked of `paired.decide` over the whole ledger and must agree.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field

from agentgolf.agent.judge import acceptance, paired
from agentgolf.agent.judge.acceptance import ROW_STATUS, AcceptanceConfig
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus

SEED0 = 1337  # the workspace's seed: the baseline's and every proposal's first run
TRUE_PARENT_BPB = 1.2
NIGHT_TRAININGS = 150  # a drift of D sigma "over a night" builds up over this many trainings
DRIFTS = {
    "none": ("none", 0.0),
    "linear2": ("linear", 2.0),
    "linear6": ("linear", 6.0),
    "step2": ("step", 2.0),
}
DESIGNS = ("current", "paired")


def drift_label(name: str) -> str:
    kind, size = DRIFTS[name]
    return kind if kind == "none" else f"{kind} {size:g}σ"


class World:
    """One night's noise: its drift path and its seeds' shared part."""

    def __init__(self, rng: random.Random, sigma: float, drift: str, f: float):
        self.rng, self.sigma, self.f = rng, sigma, f
        self.kind, self.size = DRIFTS[drift]
        self.step_at = rng.uniform(0, NIGHT_TRAININGS)
        self.seed_z: dict[int, float] = {}

    def drift(self, t: float) -> float:
        if self.kind == "linear":
            return -self.size * self.sigma * t / NIGHT_TRAININGS
        if self.kind == "step" and t >= self.step_at:
            return -self.size * self.sigma
        return 0.0

    def measure(self, true_bpb: float, t: float, seed: int) -> float:
        z = self.seed_z.setdefault(seed, self.rng.gauss(0.0, 1.0))
        e = self.rng.gauss(0.0, 1.0)
        return true_bpb + self.drift(t) + self.sigma * (math.sqrt(self.f) * z + math.sqrt(1 - self.f) * e)


class DiffPool:
    """sigma_d as `paired.noise` pools it: 2x the calibration variance on n - 1 dof, plus every finished
    candidate's paired differences around their own mean (n_i - 1 dof). One pool: no init changes here."""

    def __init__(self, calibration: list[float], cfg: AcceptanceConfig):
        self.known = cfg.known_sigma_bpb
        n = len(calibration)
        self.squares = 2 * statistics.variance(calibration) * (n - 1) if n >= 2 else 0.0
        self.dof = max(n - 1, 0)

    def add(self, diffs: list[float]) -> None:
        if len(diffs) >= 2:
            mean = statistics.fmean(diffs)
            self.squares += sum((d - mean) ** 2 for d in diffs)
            self.dof += len(diffs) - 1

    def noise(self) -> tuple[float, float]:
        if self.known > 0:
            return math.sqrt(2) * self.known, math.inf
        return math.sqrt(self.squares / self.dof), self.dof


class Night:
    """One night's ledger rows, in memory, and its clock (trainings so far)."""

    def __init__(self, world: World, cfg: AcceptanceConfig, check: bool = False):
        self.world, self.cfg, self.check = world, cfg, check
        self.rows: list[Experiment] = []
        self.clock = 0
        self.base = self.parent = self.add(Kind.baseline, TRUE_PARENT_BPB, SEED0)
        self.base.kept = True
        for i in range(1, cfg.noise_seeds):
            self.add(Kind.calibration, TRUE_PARENT_BPB, SEED0 + i, replay_of=self.base.id)
        self.parent_true = TRUE_PARENT_BPB
        self.calibration = acceptance.samples(self.rows, self.base)
        self.pool = DiffPool(self.calibration, cfg)
        self.margin = acceptance.margin_bpb(self.rows, cfg)

    def add(self, kind: Kind, true_bpb: float, seed: int, tick: int = 1, **links) -> Experiment:
        """A scored row, trained at the clock's time; the clock then moves on by `tick` trainings."""
        row = Experiment(
            id=len(self.rows) + 1,
            kind=kind,
            status=RowStatus.ok,
            val_bpb=self.world.measure(true_bpb, self.clock, seed),
            seed=seed,
            created_at=float(self.clock),
            **links,
        )
        self.rows.append(row)
        self.clock += tick
        return row

    def current(self, true_bpb: float) -> tuple[Experiment, float]:
        """Today's design: the candidate's runs against its parent's; returns (its row, trainings)."""
        parent, cfg = self.parent, self.cfg
        exp = self.add(Kind.proposal, true_bpb, SEED0, parent_id=parent.id)
        runs = 1
        while True:
            verdict = acceptance.decide(self.rows, exp, parent, cfg)
            exp.status, exp.kept = ROW_STATUS[verdict.decision], verdict.decision == "promote"
            if verdict.decision != "confirm":
                return exp, runs
            seed = acceptance.confirmation_seed(exp, runs, SEED0, cfg)
            self.add(Kind.confirm, true_bpb, seed, replay_of=exp.id, parent_id=parent.id)
            runs += 1

    def paired(self, true_bpb: float) -> tuple[Experiment, float]:
        """The paired design on 2 slots: a round is the candidate and a control of its parent, one seed, one
        time; returns (its row, trainings)."""
        parent, cfg = self.parent, self.cfg
        sigma_d, dof = self.pool.noise()
        exp, mine = None, []
        while True:
            if exp is None:
                seed = SEED0
                run = exp = self.add(Kind.proposal, true_bpb, seed, tick=0, parent_id=parent.id)
            else:
                seed = acceptance.confirmation_seed(exp, len(mine) // 2, SEED0, cfg)
                run = self.add(Kind.confirm, true_bpb, seed, tick=0, replay_of=exp.id, parent_id=parent.id)
            link = {"replay_of": parent.id, "paired_with": [run.id]}
            mine += [run, self.add(Kind.control, self.parent_true, seed, tick=2, **link)]
            found = paired.pairs(mine, exp)
            verdict = paired.judge(found, sigma_d, dof, cfg, self.margin, paired.pool_of(found))
            if self.check:
                whole = paired.decide(self.rows, exp, self.calibration, cfg)
                assert whole is not None and whole.decision == verdict.decision, (whole, verdict)
            exp.status, exp.kept = ROW_STATUS[verdict.decision], verdict.decision == "promote"
            if verdict.decision != "confirm":
                self.pool.add([p.d for p in found])
                return exp, float(len(mine))

    def candidate(self, design: str, gain_sigma: float) -> tuple[bool, float]:
        """Judge one candidate `gain_sigma` seed-noise sigmas better than the current parent."""
        true_bpb = self.parent_true - gain_sigma * self.world.sigma
        exp, trainings = getattr(self, design)(true_bpb)
        if exp.kept:
            self.parent, self.parent_true = exp, true_bpb
        return exp.kept, trainings


@dataclass
class Cell:
    """Many nights of one design, drift, seed share and true gain: per-night counts."""

    promoted: list[int] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    trainings: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Rates per candidate with a clustered standard error (nights are the clusters)."""
        nights, total = len(self.promoted), sum(self.candidates)
        rate = sum(self.promoted) / total
        spread = sum((p - rate * n) ** 2 for p, n in zip(self.promoted, self.candidates, strict=True))
        se = math.sqrt(spread * nights / max(nights - 1, 1)) / total
        any_share = sum(p > 0 for p in self.promoted) / nights
        return {
            "nights": nights,
            "promoted": rate,
            "promoted_se": se,
            "per_night": sum(self.promoted) / nights,
            "nights_with_any": any_share,
            "nights_with_any_se": math.sqrt(any_share * (1 - any_share) / nights),
            "most_in_a_night": max(self.promoted),
            "trainings_per_candidate": sum(self.trainings) / total,
        }


def run_cell(
    design: str,
    drift: str,
    f: float,
    gain_sigma: float,
    cfg: AcceptanceConfig,
    nights: int,
    per_night: int,
    sigma: float,
    seed: int,
) -> dict[str, float]:
    """`nights` nights of `per_night` candidates of one true gain; the first night is checked (paired)."""
    rng = random.Random(f"{seed}/{design}/{drift}/{f}/{gain_sigma}")
    cell = Cell()
    for i in range(nights):
        night = Night(World(rng, sigma, drift, f), cfg, check=i == 0)
        results = [night.candidate(design, gain_sigma) for _ in range(per_night)]
        cell.promoted.append(sum(p for p, _ in results))
        cell.candidates.append(per_night)
        cell.trainings.append(sum(t for _, t in results))
    return cell.summary()
