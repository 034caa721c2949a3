"""Turn a finished phase (exit code, our kill, the log) into a status from the taxonomy and a short reason.

The log is written by the candidate, so patterns found in it only ever choose between statuses that all
charge the idea (oom, violation, crash); nothing a trainer prints can make its failure an infra_error.

Nor can what it writes: a harness log write that failed is the machine's fault (infra_error) only where the
phase stayed within its disk caps. One that passed them (sandbox/isolation/process.py: disk_bytes, or the free space at
its start less the harness's reserve) filled the disk itself, and the failed write is its doing: violation.
"""

from __future__ import annotations

import re
import signal

from agentgolf.sandbox.phase import PhaseOutcome
from agentgolf.sandbox.result import Status

OOM_PATTERNS = re.compile(
    r"MemoryError|CUDA out of memory|OutOfMemoryError|std::bad_alloc|Cannot allocate memory|"
    r"CUBLAS_STATUS_ALLOC_FAILED|DefaultCPUAllocator: can't allocate memory"
)
PROCESS_LIMIT_PATTERNS = re.compile(
    r"BlockingIOError|Resource temporarily unavailable|can't start new thread|fork: retry|pthread_create failed"
)
NETWORK_PATTERNS = re.compile(
    r"Network is unreachable|Temporary failure in name resolution|Name or service not known"
)
FORBIDDEN_PATTERNS = re.compile(r"Read-only file system")
ERROR_LINE = re.compile(
    r"^\s*(?:[\w.]+(?:Error|Exception|Interrupt)|error|Error|RuntimeError|bwrap)\b.*$", re.MULTILINE
)
REASON_LINE_CHARS = 300


def last_error_line(log_text: str) -> str:
    """The most telling line of a failed run: the last exception line, else the last non-empty line."""
    errors = ERROR_LINE.findall(log_text)
    if errors:
        return errors[-1].strip()[:REASON_LINE_CHARS]
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    return lines[-1][:REASON_LINE_CHARS] if lines else ""


def classify_phase(
    phase: PhaseOutcome,
    log_text: str,
    *,
    name: str,
    limit_seconds: float,
    max_processes: int,
    quote_log: bool = True,
) -> tuple[Status, str] | None:
    """None when the phase exited 0 on its own; else (status, reason). Without `quote_log` the reason is the
    harness's own words only: the scoring log is written by the candidate's code and must not reach a prompt."""
    detail = last_error_line(log_text) if quote_log else ""
    suffix = f": {detail}" if detail else ""
    if phase.log_error and phase.written_bytes is None:  # no candidate writes behind it: the machine's disk
        return Status.infra_error, f"{name}: the harness could not write the log ({phase.log_error})"
    if not phase.ready:
        return Status.infra_error, f"{name}: the sandbox failed to start{suffix}"
    if phase.oom_killed:
        return Status.oom, (
            f"{name} used more than its memory limit of {_size(phase.memory_limit_bytes)} "
            "(phase_memory_bytes: the RAM of all its processes plus the files it wrote to /tmp and /dev/shm, "
            "which are RAM) and the kernel's OOM killer stopped it"
        )
    if phase.written_bytes is not None:
        return Status.violation, disk_reason(phase, name)
    if phase.timed_out and phase.cpu_timed_out:
        return Status.timeout, (
            f"{name} used more than its {phase.cpu_limit_seconds:g} CPU-seconds limit (the CPU clock: "
            f"{phase.cpu_seconds or 0:.1f} CPU-seconds measured, {phase.wall_seconds:.1f} s wall) and was killed"
        )
    if phase.timed_out:
        return Status.timeout, f"{name} ran past its {limit_seconds:g} s wall-clock limit and was killed"
    if phase.returncode == 0:
        return None
    if phase.limit_hit or PROCESS_LIMIT_PATTERNS.search(log_text):
        return Status.violation, f"{name} hit the process limit (max_processes={max_processes}){suffix}"
    if OOM_PATTERNS.search(log_text):
        return Status.oom, f"{name} ran out of memory{suffix}"
    if phase.signal == signal.SIGKILL and not phase.aborted:
        return (
            Status.oom,
            f"{name} was killed by SIGKILL not sent by the harness (likely the kernel OOM killer)",
        )
    if NETWORK_PATTERNS.search(log_text):
        return Status.violation, f"{name} tried to use the network, which the sandbox does not have{suffix}"
    if FORBIDDEN_PATTERNS.search(log_text):
        return Status.violation, f"{name} tried to write outside its run folder{suffix}"
    if phase.signal == signal.SIGXFSZ:
        return Status.crash, f"{name} wrote a file larger than max_file_bytes and was killed (SIGXFSZ)"
    if phase.signal is not None:
        return Status.crash, f"{name} was killed by signal {_signal_name(phase.signal)}{suffix}"
    return Status.crash, f"{name} exited with code {phase.returncode}{suffix}"


def disk_reason(phase: PhaseOutcome, name: str) -> str:
    """Why a phase that passed a disk cap is charged: the cap and where its figure came from."""
    if phase.disk_limit_from_free:
        reason = (
            f"{name} wrote {_size(phase.written_bytes)} to its run folder, more than its disk limit of "
            f"{_size(phase.disk_limit_bytes)} there: the {_size(phase.disk_free_bytes)} free on that disk at "
            f"its start less {_size(phase.disk_reserve_bytes)} kept for the harness's logs and result "
            "(lower than disk_bytes; files deleted but held open count), and was stopped"
        )
    else:
        reason = (
            f"{name} wrote {_size(phase.written_bytes)}, more than its disk limit of "
            f"{_size(phase.disk_limit_bytes)} (disk_bytes: its run folder plus /tmp and /dev/shm), and was stopped"
        )
    if phase.log_error:
        reason += f"; the harness's log write then failed ({phase.log_error}): its doing, not the machine's"
    return reason


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB ({n:,} bytes)"
    return f"{n / 2**20:.1f} MiB ({n:,} bytes)"
