"""The report's sections: a summary cut into titled bullets and tables, the shape both renderers share."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field

from agentgolf.agent.judge.acceptance import describe_evidence
from agentgolf.agent.judge.deltas import Score
from agentgolf.agent.report.curves import RECENT_OTHER_CURVES
from agentgolf.agent.report.summary import Spend, Summary
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import FAILURE_CAUSES, Kind
from agentgolf.experiments.steps import recorded_flags

MAX_IDS_SHOWN = 10
MAX_REASON_CHARS = 90


class Table(BaseModel):
    headers: list[str]
    rows: list[list[str]]


class Section(BaseModel):
    title: str
    note: str = ""
    bullets: list[str] = Field(default_factory=list)
    table: Table | None = None
    empty: str = "None."
    chart: str = ""  # the chart that goes here: PROGRESS or CURVES


PROGRESS, CURVES = "progress", "loss curves"


def build_sections(s: Summary) -> list[Section]:
    return [
        Section(title="", bullets=_headline(s)),
        Section(title="Progress", chart=PROGRESS),
        Section(
            title="Loss curves",
            chart=CURVES,
            note="Train loss by training step, from each run's train.log: the baseline's seeds (grey, and "
            "shaded: the spread of their curves, min to max, on each rung), each kept idea (in colour, "
            f"labelled with its id) and the latest {RECENT_OTHER_CURVES} other experiments (light grey). "
            "Dashed: a screen-rung run; solid: the full budget.",
        ),
        _chain_section(s),
        _wins_section(s),
        Section(
            title="Inconclusive wins",
            note="Looked better than the parent, but not beyond the noise floor or not (yet) confirmed.",
            table=_exp_table(s, s.inconclusive, status=True) if s.inconclusive else None,
        ),
        Section(
            title="Dead ends",
            note="Scored, not better than the parent.",
            table=_exp_table(s, s.dead_ends) if s.dead_ends else None,
        ),
        _decisions_section(s),
        _failures_section(s),
        _spend_section(s),
        _anomalies_section(s),
        _steps_section(s),
        _categories_section(s),
        *([_screening_section(s)] if s.screening else []),
    ]


def num(value: float | int | None, fmt: str) -> str:
    """`value` in format `fmt`, or an empty cell when there is none."""
    return "" if value is None else format(value, fmt)


def _headline(s: Summary) -> list[str]:
    run = s.run
    lines = [
        f"base commit `{run.base_commit[:10]}`, status **{run.status}** ({run.stop_reason or 'in progress'})",
        f"experiments: {s.scored} (+{sum(map(len, s.reruns.values()))} re-runs); statuses: "
        + (", ".join(f"{k} {n}" for k, n in s.statuses.items()) or "none"),
    ]
    if s.chain:
        first, last = _score(s, s.chain[0]), _score(s, s.chain[-1])
        tip = s.chain[-1]
        if first.bpb is not None and last.bpb is not None:
            lines.append(
                f"best: #{tip.id} {_title(tip)}, val_bpb **{last.bpb:.4f}** ({_runs(last.runs)}; "
                f"{last.bpb - first.bpb:+.4f} vs baseline {first.bpb:.4f}), branch `{tip.branch}`"
            )
    n_fail = sum(map(len, s.failures.values()))
    lines.append(
        f"wins: {len(s.confirmed)} confirmed, {len(s.inconclusive)} inconclusive; "
        f"{len(s.dead_ends)} dead ends; {n_fail} failures"
    )
    lines.append(f"spend: {_spend_line(s.spend)}")
    if s.utilization is not None:
        lines.append(s.utilization.line() + f" over {s.utilization.window_seconds / 60:,.1f} min")
    if s.morning:
        lines.append(f"**{s.morning}**")
    if s.anomalies:
        kinds = Counter(a.kind for a in s.anomalies)
        lines.append("**anomalies: " + ", ".join(f"{k} {n}" for k, n in kinds.items()) + "** (see below)")
    return lines


def _chain_section(s: Summary) -> Section:
    rows = []
    base = _score(s, s.chain[0]).bpb if s.chain else None
    for e in s.chain:
        score = _score(s, e)
        rows.append(
            [
                str(e.id),
                _title(e),
                e.category,
                num(score.bpb, ".4f"),
                str(score.runs),
                _delta(score) if e.kind != Kind.baseline else "",
                num(score.bpb - base, "+.4f")
                if e.kind != Kind.baseline and None not in (score.bpb, base)
                else "",
            ]
        )
    headers = ["#", "change", "category", "val_bpb", "runs", "Δ vs parent", "Δ vs baseline"]
    return Section(
        title="Best chain",
        note="From the baseline to the last promotion (the run's `best` branch). val_bpb: the mean of each "
        "row's runs (it and its confirmations; the baseline's seeds). Δ vs parent: the mean paired "
        "difference over its rounds beside a control (marked paired, with the rounds), else its mean minus "
        "its parent's mean on the same rung.",
        table=Table(headers=headers, rows=rows) if rows else None,
        empty="No experiment produced a score.",
    )


def _wins_section(s: Summary) -> Section:
    rows = []
    for e in s.confirmed:
        reruns = [r for r in s.reruns.get(e.id, []) if r.val_bpb is not None]
        score = _score(s, e)
        rows.append(
            [
                str(e.id),
                _title(e),
                e.category,
                num(score.bpb, ".4f"),
                _delta(score),
                ", ".join(f"{r.val_bpb:.4f}" for r in reruns) or "none",
            ]
        )
    table = Table(headers=["#", "change", "category", "val_bpb", "Δ vs parent", "re-runs"], rows=rows)
    return Section(
        title="Confirmed wins",
        note="Kept: accepted as better than the parent. val_bpb: the mean of its runs. Re-runs: confirmation "
        "seeds and replays of the commit.",
        table=table if rows else None,
    )


def _decisions_section(s: Summary) -> Section:
    decided = sorted(
        (e for e in s.confirmed + s.inconclusive + s.dead_ends if e.decision), key=lambda e: e.id
    )
    return Section(
        title="Decisions",
        note="Why each candidate was kept or dropped: its runs against its parent's, the noise the test used "
        "(pooled over the run's repeated measurements, or known), the statistic and its one-sided p-value "
        "against the promotion and drop levels of the sequential test.",
        bullets=[f"#{e.id} {_title(e)}: {describe_evidence(e.decision)}{_carried(s, e)}" for e in decided],
    )


def _carried(s: Summary, e: Experiment) -> str:
    """A win decided after the best moved on: where its change went (retest.py)."""
    again = s.retests.get(e.id)
    if again is not None:
        return f"; the best had moved on: rebased onto #{again.parent_id} and re-tested as #{again.id}"
    if e.decision.get("decision") == "promote" and not e.kept:
        return f"; not kept: {_clip(e.reason)}"
    return ""


def _failures_section(s: Summary) -> Section:
    rows = []
    for cause, exps in s.failures.items():
        ids = ", ".join(f"#{e.id}" for e in exps[:MAX_IDS_SHOWN]) + (
            " …" if len(exps) > MAX_IDS_SHOWN else ""
        )
        reasons = Counter(e.reason for e in exps if e.reason)
        common = _clip(reasons.most_common(1)[0][0]) if reasons else ""
        rows.append([cause, str(len(exps)), FAILURE_CAUSES.get(cause, ""), ids, common])
    table = Table(headers=["cause", "count", "meaning", "experiments", "most common reason"], rows=rows)
    return Section(title="Failures by cause", table=table if rows else None)


def _spend_section(s: Summary) -> Section:
    sp = s.spend
    rows = [
        ["device hours held (the --gpu-hours cap)", f"{sp.device_hours:.2f}"],
        ["GPU hours (training)", f"{sp.gpu_hours:.2f}"],
        ["CPU hours (training)", f"{sp.cpu_hours:.2f}"],
        ["sandbox wall hours", f"{sp.wall_hours:.2f}"],
        ["LLM tokens", f"{sp.tokens:,}"],
        ["LLM cost (USD)", f"{sp.usd:.2f}"],
    ]
    return Section(title="Spend", table=Table(headers=["what", "total"], rows=rows))


def _anomalies_section(s: Summary) -> Section:
    rows = [[a.kind, f"#{a.exp_id}", a.detail] for a in s.anomalies]
    noise = f"noise floor {s.noise_bpb:.4f} bpb" if s.noise_bpb else "no measured noise floor"
    others = "".join(
        f"; on rung {rung}: above {s.jump_thresholds[rung]:.4f} bpb"
        + (f", noise floor {sigma:.4f} bpb" if sigma else ", no measured noise floor")
        for rung, sigma in s.rung_noise.items()
        if rung
    )
    note = (
        f"Metric mismatches (trainer vs harness), suspicious jumps (a gain above {s.jump_threshold_bpb:.4f} "
        f"bpb in one step; {noise}{others}), unsandboxed runs and self-reported scores."
    )
    return Section(
        title="Anomalies",
        note=note,
        table=Table(headers=["kind", "experiment", "detail"], rows=rows) if rows else None,
    )


def _categories_section(s: Summary) -> Section:
    rows = [
        [
            c.category,
            str(c.proposals),
            str(c.ran),
            str(c.wins),
            str(c.inconclusive),
            str(c.dead_ends),
            str(c.failed),
            f"{c.win_rate:.0%}" if c.win_rate is not None else "–",
        ]
        for c in s.categories
    ]
    headers = ["category", "proposals", "ran", "wins", "inconclusive", "dead ends", "failed", "win rate"]
    return Section(
        title="Win rate by category",
        note="Win rate = confirmed wins / proposals that ran (rejected, interrupted and infra failures excluded).",
        table=Table(headers=headers, rows=rows) if rows else None,
    )


def _screening_section(s: Summary) -> Section:
    rows = [
        [
            category,
            str(a.pairs),
            f"{a.agreement:.0%}" if a.agreement is not None else "–",
            f"{a.rank_correlation:+.2f}" if a.rank_correlation is not None else "–",
        ]
        for category, a in s.screening.items()
    ]
    return Section(
        title="Screen vs full budget",
        note="Ideas measured on both rungs: how often the screen's verdict (promote or not) held at the full "
        "budget, and Spearman's rank correlation between the gains each rung measured.",
        table=Table(headers=["category", "ideas on both rungs", "agreement", "rank correlation"], rows=rows)
        if s.screening["all"].pairs
        else None,
        empty="No idea has been measured on both rungs yet.",
    )


def _exp_table(s: Summary, exps: list[Experiment], status: bool = False) -> Table:
    headers = ["#", "change", "category", "val_bpb", "Δ vs parent"] + (["status", "why"] if status else [])
    rows = []
    for e in exps:
        score = _score(s, e)
        row = [str(e.id), _title(e), e.category, num(score.bpb, ".4f"), _delta(score)]
        rows.append(row + ([e.status, _clip(e.reason)] if status else []))
    return Table(headers=headers, rows=rows)


def _score(s: Summary, e: Experiment) -> Score:
    """The row's mean and Δ vs parent (`deltas`); a row the summary did not score shows its own figures."""
    found = s.scores.get(e.id)
    return (
        found
        if found is not None
        else Score(bpb=e.val_bpb, runs=int(e.val_bpb is not None), delta=e.delta_bpb)
    )


def _delta(score: Score) -> str:
    return num(score.delta, "+.4f") + (f" (paired, {score.rounds})" if score.rounds else "")


def _runs(n: int) -> str:
    return f"mean of {n} runs" if n != 1 else "1 run"


def _spend_line(sp: Spend) -> str:
    return (
        f"{sp.gpu_hours:.2f} GPU h, {sp.cpu_hours:.2f} CPU h of training; "
        f"{sp.tokens:,} LLM tokens, ${sp.usd:.2f}"
    )


def _title(e: Experiment) -> str:
    return (e.title or "(untitled)") + (f" (re-test of #{e.retest_of})" if e.retest_of is not None else "")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _steps_section(s: Summary) -> Section:
    """The steps each scored row trained and its step time, flagged where it and its control differ."""
    scored = [*s.chain, *s.confirmed, *s.inconclusive, *s.dead_ends]
    shown = {e.id: e for e in scored if e.steps is not None}
    rows = [
        [str(e.id), _title(e), f"{e.steps:,}", num(e.step_ms, ".1f"), "; ".join(recorded_flags(e))]
        for e in sorted(shown.values(), key=lambda e: e.id)
    ]
    return Section(
        title="Training steps",
        note="The steps each run trained (its log) and its mean step time on its clock: CPU milliseconds on a "
        "CPU run, whose budget is CPU time so the machine's load cannot change its steps. Flagged: a candidate "
        "and its control whose steps differ by more than the share set (experiments/steps.py).",
        table=Table(headers=["#", "change", "steps", "ms/step", "vs its control"], rows=rows)
        if rows
        else None,
    )
