"""What a ledger row is: its kind and its status, one enum each, and the groups the loop and reports use.

A row's status is the sandbox's verdict (`sandbox.result.Status`) once it has been scored, or one of the
loop's own states before and after that. `ok` only says the harness scored it; whether it moved the
best chain is `kept` (promoted) or the row's reason (a dead end).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from agentgolf.sandbox.result import Status


class Kind(str, Enum):
    baseline = "baseline"  # the unmodified trainer at the run's base commit
    calibration = "calibration"  # the baseline again with another seed: the run's noise floor
    proposal = "proposal"  # a change a proposer made, on its own branch
    confirm = "confirm"  # a proposal again with another seed, before it is promoted
    replay = "replay"  # any row again from its recorded commit, seed and settings
    control = "control"  # a candidate's parent beside it, same seed and rung: one round of the paired judge

    __str__ = str.__str__  # f-strings print the value on every Python


class RowStatus(str, Enum):
    # the loop's own states
    running = "running"  # inserted before the sandbox starts, so a crash leaves a visible row
    rejected = "rejected"  # never reached the sandbox: the edit did not apply, does not compile, a repeat
    interrupted = "interrupted"  # the loop stopped (or was cancelled) while it was in flight
    confirming = "confirming"  # looked better; a confirmation with another seed is pending
    inconclusive = "inconclusive"  # looked better, but not beyond the noise after confirmation
    # the sandbox's verdicts (sandbox.result.Status), one member each
    ok = Status.ok.value
    crash = Status.crash.value
    oom = Status.oom.value
    nan = Status.nan.value
    timeout = Status.timeout.value
    over_time = Status.over_time.value
    over_size = Status.over_size.value
    metric_mismatch = Status.metric_mismatch.value
    violation = Status.violation.value
    infra_error = Status.infra_error.value

    __str__ = str.__str__


SCORED_KINDS = frozenset({Kind.baseline, Kind.proposal})  # new points; the rest re-measure one of them
NOISE_KINDS = frozenset({Kind.baseline, Kind.calibration})  # seeds of the unmodified trainer
CHARGED_KINDS = SCORED_KINDS  # what counts against --budget (re-measurements only cost GPU hours)
UNDECIDED = frozenset({RowStatus.running, RowStatus.confirming})


def charged(rows: Iterable) -> int:
    """Experiments that count against --budget, the one count that the scheduler stops on and that `status`
    and the live view print: the baseline and every proposal, rejected ones too (so a proposer that only
    produces rejects still ends). Calibration and confirmation seeds are extra measurements of those, a
    re-test is a proposal already counted, carried onto a newer best (retest.py), and a screened idea's
    full-budget run is the same idea measured again: they count only against the GPU-hour cap."""
    return sum(1 for e in rows if e.kind in CHARGED_KINDS and e.retest_of is None and e.screen_of is None)


NOT_FAILURES = frozenset({RowStatus.ok, RowStatus.inconclusive, *UNDECIDED})
NOT_CHARGED = frozenset({RowStatus.rejected, RowStatus.interrupted, RowStatus.infra_error})
# Failure causes in the order reports list them, with what each one means for the reader.
FAILURE_CAUSES = {
    RowStatus.crash: "the trainer exited non-zero or wrote no artifact",
    RowStatus.oom: "out of host or GPU memory",
    RowStatus.nan: "non-finite loss or logits",
    RowStatus.timeout: "a phase ran past its wall-clock limit",
    RowStatus.over_time: "trained longer than the budget allows (shown, never promoted)",
    RowStatus.over_size: "code + model bytes above the size limit",
    RowStatus.metric_mismatch: "the trainer's own score beat the harness's",
    RowStatus.violation: "broke a rule (non-causal model, forbidden access, limits)",
    RowStatus.infra_error: "the machine failed, not the idea",
    RowStatus.rejected: "never reached the sandbox (bad edit, does not compile, repeat)",
    RowStatus.interrupted: "the loop stopped while it ran",
}
