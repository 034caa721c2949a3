"""The facts of a run, read from its ledger rows: the best chain, wins, failures, spend and anomalies.

Nothing here formats or writes: `summarize` builds one `Summary` that the sections (and through them
the Markdown and HTML renderers) read.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field

from agentgolf.agent.judge.acceptance import noise_floor
from agentgolf.agent.judge.deltas import Score, Scores
from agentgolf.agent.judge.fidelity import Agreement, by_category, pairs
from agentgolf.agent.judge.screening import lane
from agentgolf.agent.results import morning
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment, Ledger, Run, lineage
from agentgolf.experiments.status import (
    FAILURE_CAUSES,
    NOT_CHARGED,
    NOT_FAILURES,
    SCORED_KINDS,
    UNDECIDED,
    Kind,
    RowStatus,
)
from agentgolf.sandbox.budget import Budget

JUMP_NOISE_MULTIPLE = 5.0  # a gain this many noise floors wide deserves a second look
JUMP_DEFAULT_BPB = 0.05  # ...or this large when the run has no noise floor
DEFAULT_MISMATCH_BPB = Budget().metric_tolerance_bpb
SECONDS_PER_HOUR = 3600.0


class Spend(BaseModel):
    device_hours: float = 0.0  # sandbox wall seconds x GPUs held (x1 on CPU): what --gpu-hours caps
    gpu_hours: float = 0.0  # training seconds x GPUs, for experiments that ran on GPUs
    cpu_hours: float = 0.0  # training seconds of experiments that ran on CPU
    wall_hours: float = 0.0  # sandbox wall time, training + scoring + overheads
    tokens: int = 0  # LLM tokens spent proposing
    usd: float = 0.0  # LLM dollars spent proposing


class Anomaly(BaseModel):
    kind: str  # metric_mismatch | suspicious_jump | unsandboxed | self_reported
    exp_id: int
    detail: str


class CategoryStats(BaseModel):
    category: str
    proposals: int = 0
    ran: int = 0  # proposals that charged the idea: not rejected, interrupted, infra failures
    wins: int = 0
    inconclusive: int = 0
    dead_ends: int = 0
    failed: int = 0

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.ran if self.ran else None


class Utilization(BaseModel):
    """How busy the run kept its slots (`slot_utilization`)."""

    overall: float  # busy slot-seconds / (slots x window)
    slots: dict[int, float]  # slot index -> its share of the window
    window_seconds: float  # from the first launch to the last result

    def line(self) -> str:
        """`slot utilization: 97% (slot 0 98%, slot 1 96%)`"""
        each = ", ".join(f"slot {i} {share:.0%}" for i, share in sorted(self.slots.items()))
        return f"slot utilization: {self.overall:.0%} ({each})"


class Summary(BaseModel):
    run: Run
    statuses: dict[str, int]
    scored: int  # baseline + proposal rows: the x axis of the plot
    chain: list[Experiment]  # the baseline to the last promotion (the run's best branch)
    confirmed: list[Experiment]
    reruns: dict[int, list[Experiment]] = Field(default_factory=dict)  # original id -> its re-runs
    retests: dict[int, Experiment] = Field(default_factory=dict)  # a win carried forward -> its re-test
    inconclusive: list[Experiment]
    dead_ends: list[Experiment]
    failures: dict[str, list[Experiment]]  # cause -> experiments, in FAILURE_CAUSES order
    spend: Spend
    anomalies: list[Anomaly]
    categories: list[CategoryStats]
    noise_bpb: float | None  # seed-to-seed std of the run's full-budget rung, None when unknown
    jump_threshold_bpb: float  # of the full-budget rung
    scores: dict[int, Score] = Field(default_factory=dict)  # baseline and proposal rows: mean, runs, Δ
    rung_noise: dict[str, float | None] = Field(default_factory=dict)  # each rung's own noise floor
    jump_thresholds: dict[str, float] = Field(default_factory=dict)  # each rung's suspicious-jump threshold
    utilization: Utilization | None = None  # None until an experiment has finished
    morning: str = ""  # the best against the baseline in fresh paired rounds at the run's end (morning.py)
    screening: dict[str, Agreement] = Field(default_factory=dict)  # fidelity ladder: category -> agreement


def pick_run(ledger: Ledger, run_id: str | None) -> Run:
    """The run named `run_id`, or the latest one."""
    if run_id:
        return ledger.get_run(run_id)
    run = ledger.latest_run()
    if run is None:
        raise AgentgolfError("the ledger has no runs yet; start one with `agentgolf run --budget N`")
    return run


def best(experiments: list[Experiment]) -> Experiment | None:
    """The run's best: its last promotion (the last kept row), the row its `best` branch and summary name."""
    kept = [e for e in experiments if e.kept and e.kind in SCORED_KINDS]
    return max(kept, key=lambda e: e.id) if kept else None


def best_chain(experiments: list[Experiment]) -> list[Experiment]:
    """Kept experiments from the baseline to the last promotion, following parent links."""
    tip = best(experiments)
    if tip is None:
        return []
    by_id = {e.id: e for e in experiments}
    return lineage(tip, by_id.get)


def summarize(run: Run, experiments: list[Experiment]) -> Summary:
    proposals = [e for e in experiments if e.kind == Kind.proposal]
    failures: dict[str, list[Experiment]] = {}
    for e in experiments:
        if e.status not in NOT_FAILURES:
            failures.setdefault(e.status, []).append(e)
    order = list(FAILURE_CAUSES)
    failures = dict(sorted(failures.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
    reruns: dict[int, list[Experiment]] = {}
    for e in experiments:
        if e.replay_of is not None:  # replay, confirm and calibration rows
            reruns.setdefault(e.replay_of, []).append(e)
    index = Scores(experiments)
    scores = {e.id: index.score(e) for e in experiments if e.kind in SCORED_KINDS}
    rung_noise = {rung: run_noise(run, experiments, rung) for rung in sorted({e.rung for e in experiments})}
    jumps = {
        rung: JUMP_NOISE_MULTIPLE * noise if noise else JUMP_DEFAULT_BPB for rung, noise in rung_noise.items()
    }
    noise = rung_noise.get("", run_noise(run, experiments))
    sent = {e.screen_of for e in experiments if e.screen_of is not None}  # screened ideas run at full budget
    return Summary(
        run=run,
        statuses=dict(Counter(e.status for e in experiments).most_common()),
        scored=sum(e.kind in SCORED_KINDS for e in experiments),
        chain=best_chain(experiments),
        confirmed=[e for e in proposals if e.kept],
        reruns=reruns,
        retests={e.retest_of: e for e in experiments if e.retest_of is not None},
        inconclusive=[e for e in proposals if e.status in (RowStatus.inconclusive, RowStatus.confirming)],
        dead_ends=[e for e in proposals if e.status == RowStatus.ok and not e.kept and e.id not in sent],
        failures=failures,
        spend=spend_of(experiments),
        anomalies=find_anomalies(run, experiments, jumps, scores),
        categories=category_stats(proposals),
        noise_bpb=noise,
        jump_threshold_bpb=JUMP_NOISE_MULTIPLE * noise if noise else JUMP_DEFAULT_BPB,
        scores=scores,
        rung_noise=rung_noise,
        jump_thresholds=jumps,
        utilization=slot_utilization(experiments, int(run.settings.get("slots") or 0)),
        morning=morning.said(run.settings),
        screening=by_category(pairs(experiments)) if any(e.rung for e in experiments) else {},
    )


def slot_utilization(experiments: list[Experiment], slots: int = 0) -> Utilization | None:
    """The share of the run's wall time in which each slot held an experiment (training and scoring it).

    The window runs from the first launch of the run to the last result, both read from the rows: each
    row records the slot it ran on and when it started (`slot`, `started_at`, written at launch; a retry
    after an infra error keeps the first start) and when its result came (`finished_at`). A slot is busy
    from an experiment's start to its result, so the time between a result and the next launch (waiting
    for a proposal, the scheduler's poll) is idle. Computed from the ledger alone, it reads the same after
    a resume, where the time the loop was down counts as idle and a row re-run in place counts from its
    new start. `slots`: how many the run had (the run's settings), so that a slot that never ran anything
    shows as 0%; rows not yet finished are left out. None before any experiment has finished.
    """
    spans = [
        (e.slot, e.started_at, e.finished_at)
        for e in experiments
        if e.slot is not None and e.started_at is not None and e.finished_at is not None
    ]
    if not spans:
        return None
    start, end = min(s for _, s, _ in spans), max(f for _, _, f in spans)
    window = end - start
    if window <= 0:
        return None
    busy = dict.fromkeys(range(max(slots, 1 + max(i for i, _, _ in spans))), 0.0)
    for i, began, ended in spans:
        busy[i] += max(0.0, ended - began)
    shares = {i: min(1.0, b / window) for i, b in busy.items()}
    return Utilization(overall=sum(shares.values()) / len(shares), slots=shares, window_seconds=window)


def run_noise(run: Run, experiments: list[Experiment], rung: str = "") -> float | None:
    """The seed noise of one rung ("" is the full budget): `noise_bpb` from the run settings when set (the
    full budget's), else the noise floor pooled over that rung's rows only; None when unknown. A screen's
    short runs and the full budget's long ones are never pooled: their noise differs by a large factor."""
    if run.settings.get("noise_bpb") and not rung:
        return float(run.settings["noise_bpb"])
    return noise_floor(lane(experiments, rung)).sigma or None


def spend_of(experiments: list[Experiment]) -> Spend:
    spend = Spend()
    for e in experiments:
        gpus = len(e.manifest.get("gpus") or []) or int(e.manifest.get("slurm_gpus") or 0)
        hours = (e.train_seconds or 0.0) / SECONDS_PER_HOUR
        if gpus:
            spend.gpu_hours += hours * gpus
        else:
            spend.cpu_hours += hours
        spend.wall_hours += (e.wall_seconds or 0.0) / SECONDS_PER_HOUR
        spend.device_hours += (e.gpu_seconds or 0.0) / SECONDS_PER_HOUR
        spend.tokens += e.tokens
        spend.usd += e.usd
    return spend


def find_anomalies(
    run: Run,
    experiments: list[Experiment],
    jump_bpb: float | dict[str, float],
    scores: dict[int, Score] | None = None,
) -> list[Anomaly]:
    """Things a person should look at before believing the numbers. A suspicious jump is a Δ vs parent
    (`deltas`) beyond the threshold of the row's own rung (`jump_bpb`: one figure, or one per rung)."""
    tolerance = float(run.settings.get("metric_tolerance_bpb", DEFAULT_MISMATCH_BPB))
    if scores is None:
        index = Scores(experiments)
        scores = {e.id: index.score(e) for e in experiments if e.kind in SCORED_KINDS}
    found = []
    for e in experiments:
        if e.self_val_bpb is not None and e.val_bpb is not None:
            gap = e.self_val_bpb - e.val_bpb
            if abs(gap) > tolerance or e.status == RowStatus.metric_mismatch:
                side = "better" if gap < 0 else "worse"
                found.append(
                    Anomaly(
                        kind="metric_mismatch",
                        exp_id=e.id,
                        detail=f"trainer says {e.self_val_bpb:.4f}, harness {e.val_bpb:.4f} "
                        f"({abs(gap):.4f} {side} than the harness)",
                    )
                )
        elif e.status == RowStatus.metric_mismatch:
            found.append(
                Anomaly(kind="metric_mismatch", exp_id=e.id, detail=e.reason or "status metric_mismatch")
            )
        delta = scores[e.id].delta if e.id in scores else None
        jump = jump_bpb.get(e.rung, JUMP_DEFAULT_BPB) if isinstance(jump_bpb, dict) else jump_bpb
        if e.kind == Kind.proposal and delta is not None and -delta > jump:
            found.append(
                Anomaly(
                    kind="suspicious_jump",
                    exp_id=e.id,
                    detail=f"improved by {-delta:.4f} bpb in one step (threshold {jump:.4f}"
                    + (f" on rung {e.rung}" if e.rung else "")
                    + "): "
                    "check the eval and the data the trainer reads",
                )
            )
        if e.isolation == "none":
            found.append(
                Anomaly(kind="unsandboxed", exp_id=e.id, detail="ran with isolation 'none': no sandbox")
            )
        if e.trust == "self_reported" and e.val_bpb is not None:
            found.append(
                Anomaly(kind="self_reported", exp_id=e.id, detail="score is the trainer's own claim")
            )
    return found


def category_stats(proposals: list[Experiment]) -> list[CategoryStats]:
    """Per idea: a screened idea that ran at the full budget counts once, with its full run's outcome."""
    stats: dict[str, CategoryStats] = {}
    full_of = {e.screen_of: e for e in proposals if e.screen_of is not None}
    for idea in proposals:
        if idea.screen_of is not None:
            continue
        e = full_of.get(idea.id, idea)
        if e.status in UNDECIDED:
            continue
        s = stats.setdefault(e.category or "(none)", CategoryStats(category=e.category or "(none)"))
        s.proposals += 1
        if e.status in NOT_CHARGED:
            continue
        s.ran += 1
        if e.kept:
            s.wins += 1
        elif e.status == RowStatus.inconclusive:
            s.inconclusive += 1
        elif e.status == RowStatus.ok:
            s.dead_ends += 1
        else:
            s.failed += 1
    return sorted(stats.values(), key=lambda s: (-(s.win_rate or 0.0), -s.ran, s.category))
