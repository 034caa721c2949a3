"""Read what a trainer says about itself in its log: its final score and how many steps it ran.

These numbers are the trainer's claims. In normal mode they are only compared with the harness's own
score (a better claim than the truth is a metric_mismatch); in self-reported mode they are the score.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel

from agentgolf.errors import AgentgolfError

FLOAT = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf)"

# The official script's final line: `final_int8_zlib_roundtrip_exact val_loss:F val_bpb:F`.
OFFICIAL_PATTERN = (
    rf"^final_int8_zlib_roundtrip_exact val_loss:(?P<val_loss>{FLOAT}) val_bpb:(?P<val_bpb>{FLOAT})"
)
# Record scripts name their final metric differently (final_int6_sliding_window_exact, legal_ttt_exact,
# quantized_ttt_phased ...): any `<name>[_exact] ... val_bpb[:=] F` line that is not a periodic
# `step:S/N` or `S/N` validation line.
GENERIC_PATTERN = (
    rf"^(?P<name>(?!step:)(?!\d+/\d+)\S+?)(?:_exact)? "
    rf"(?:.*?val_loss[:=]\s*(?P<val_loss>{FLOAT}))?.*?val_bpb[:=]\s*(?P<val_bpb>{FLOAT})"
)
DEFAULT_PATTERNS = [OFFICIAL_PATTERN, GENERIC_PATTERN]

STEP_PATTERNS = [
    re.compile(r"stopping_early: (?:wallclock|cpu_clock)_cap .*?step:\s*(\d+)"),
    re.compile(r"^step:(\d+)/\d+", re.MULTILINE),
    re.compile(r"^(\d+)/\d+ (?:train_loss|val_loss)", re.MULTILINE),
]


INIT_HASH = re.compile(r"^init_hash:([0-9a-fA-F]{8,64})\s*$", re.MULTILINE)
STEP_AVG = re.compile(r"step_avg:\s*(" + FLOAT + r")\s*ms")


def parse_init_hash(log_text: str) -> str:
    """The hash of its initial weights a trainer logged (`init_hash:<hex>`), or ''."""
    found = INIT_HASH.findall(log_text)
    return found[0].lower() if found else ""


def parse_step_ms(log_text: str) -> float | None:
    """The last mean step time the log mentions (`step_avg:<ms>ms`), if finite."""
    found = [float(x) for x in STEP_AVG.findall(log_text)]
    return found[-1] if found and math.isfinite(found[-1]) else None


class MetricPatternError(AgentgolfError, ValueError):
    """A metric pattern is not a valid regex or lacks the named group val_bpb."""


class SelfReport(BaseModel):
    val_bpb: float
    val_loss: float | None = None
    line: str


def compile_patterns(patterns: list[str] | None) -> list[re.Pattern[str]]:
    """Patterns are tried in order and the first that matches anywhere wins (its last match)."""
    compiled = []
    for text in patterns if patterns is not None else DEFAULT_PATTERNS:
        try:
            pattern = re.compile(text, re.MULTILINE)
        except re.error as e:
            raise MetricPatternError(f"metric pattern {text!r} is not a valid regex: {e}") from None
        if "val_bpb" not in pattern.groupindex:
            raise MetricPatternError(f"metric pattern {text!r} needs a named group (?P<val_bpb>...)")
        compiled.append(pattern)
    return compiled


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return math.nan


def parse_self_report(log_text: str, patterns: list[re.Pattern[str]]) -> SelfReport | None:
    for pattern in patterns:
        matches = list(pattern.finditer(log_text))
        if not matches:
            continue
        m = matches[-1]
        loss = m.groupdict().get("val_loss")
        return SelfReport(val_bpb=_float(m.group("val_bpb")), val_loss=_float(loss), line=m.group(0).strip())
    return None


def parse_steps(log_text: str) -> int | None:
    """The last training step the log mentions (the wallclock stop line if present)."""
    for pattern in STEP_PATTERNS:
        found = pattern.findall(log_text)
        if found:
            return int(found[-1])
    return None


# A training line: `step:S/N train_loss:L train_time:Tms [step_avg:Ams]` (the official script's shape).
TRAIN_LINE = re.compile(
    rf"^step:(?P<step>\d+)/(?P<total>\d+) train_loss:(?P<loss>{FLOAT})"
    rf"(?: train_time:(?P<ms>{FLOAT})ms)?(?: step_avg:(?P<avg>{FLOAT})ms)?",
    re.MULTILINE,
)


class CurvePoint(BaseModel):
    """One logged training step: what the dashboards, the report's curves and the live view draw."""

    step: int
    total_steps: int
    train_loss: float
    seconds: float | None = None  # training time so far, as the trainer measured it
    step_ms: float | None = None  # its mean step time so far


def parse_train_curve(log_text: str) -> list[CurvePoint]:
    """Every `step:S/N train_loss:L ...` line of a log, in order; a line cut off mid-write is skipped."""
    points = []
    for m in TRAIN_LINE.finditer(log_text):
        ms, avg = _float(m.group("ms")), _float(m.group("avg"))
        points.append(
            CurvePoint(
                step=int(m.group("step")),
                total_steps=int(m.group("total")),
                train_loss=_float(m.group("loss")),
                seconds=ms / 1000 if ms is not None else None,
                step_ms=avg,
            )
        )
    return points
