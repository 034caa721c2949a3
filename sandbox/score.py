"""The trusted side of scoring: stream validation windows to a worker, and compute val_bpb from its answers.

This process never imports the candidate's code. It reads the validation shards, lays them out as the
model's declared eval mode asks (sandbox/layout.py: the official non-overlapping windows, or sliding
windows), and asks the sandboxed worker (sandbox/score_worker.py) for the NLL of every next token. Bytes
come from the harness's own ByteTable; val_loss and val_bpb are computed here.

The worker runs the candidate's code in its own interpreter, so anything it says may be forged: every
in-process check is best effort. The checks here are the cheap ones (finite values; the NLL of one
random position per batch re-derived here from the raw logits, so an unnormalized or inconsistent NLL
path fails). The guarantee comes from sandbox/verify.py: a random sample of the (window, position) pairs
scored here is scored again by a fresh process that never sees their true continuations.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ValidationError

from agentgolf.baseline.shards import read_shard
from agentgolf.errors import first_line
from agentgolf.sandbox.bpb import ByteTable, bits_per_byte
from agentgolf.sandbox.layout import EvalMode, Layout, build_layout, row_inputs
from agentgolf.sandbox.phase import PhaseOutcome
from agentgolf.sandbox.process import SandboxedProcess
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.score_worker import FrameError, read_frame, write_frame

BATCH_TOKENS_CPU = 8192  # tokens per request; several windows of seq_len each
BATCH_TOKENS_GPU = 32768
MAX_SEQ_LEN = 1 << 20
MAX_LOGITS_BYTES = 1 << 31  # cap on one logits answer (positions x V x 4 bytes)
BYTE_COUNT_CHUNK = 1 << 22
CONSISTENCY_ATOL = 1e-3  # nats: a reported NLL against the one re-derived here from the same logits
NEGATIVE_NLL_TOL = 1e-6
ERROR_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
EOF_GRACE_SECONDS = 5.0  # a worker that closed its output gets this long to exit before it is killed


class ScoreOutcome(BaseModel):
    status: Status
    reason: str = ""
    val_loss: float | None = None
    val_bpb: float | None = None
    val_tokens: int | None = None
    val_bytes: int | None = None
    mode: EvalMode | None = None
    reported: dict[int, float] = {}
    probes: int = 0  # stream mode: the in-stream purity and causality probes made  # NLL the worker reported at the positions verify.py will check


class Verdict(Exception):
    """Scoring ended with a definite status (nan, violation, crash) decided by the harness."""

    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def load_val_tokens(files: list[Path]) -> np.ndarray:
    """All validation shards concatenated, in order (the official val stream)."""
    parts = [read_shard(f) for f in files]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def count_stream_bytes(table: ByteTable, stream: np.ndarray) -> int:
    """Bytes of every scored target in a stream of n*T+1 tokens (target i's previous token is i-1)."""
    total = 0
    for start in range(0, stream.size - 1, BYTE_COUNT_CHUNK):
        end = min(start + BYTE_COUNT_CHUNK, stream.size - 1)
        total += int(table.count(stream[start:end], stream[start + 1 : end + 1]).sum())
    return total


def nll_from_logits(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Float64 log-softmax NLL of each target, computed here from raw float32 logits [K, V]."""
    z = logits.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        top = z.max(axis=-1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=-1))
        return lse - z[np.arange(targets.size), targets]


class Session:
    """Request/response over a worker's stdin/stdout, validating every answer."""

    def __init__(self, proc: SandboxedProcess):
        self.proc = proc

    def send(self, kind: str, tokens: np.ndarray | None = None, **meta) -> None:
        try:
            write_frame(self.proc.stdin, kind, tokens, **meta)
        except (BrokenPipeError, ValueError, OSError):
            raise EOFError("the scoring worker stopped reading") from None

    def receive(self, kind: str, max_payload: int) -> tuple[dict, np.ndarray | None]:
        try:
            header, array = read_frame(self.proc.stdout, max_payload)
        except FrameError as e:
            raise Verdict(Status.violation, f"scoring protocol corrupted: {e}") from None
        except (OSError, ValueError):
            raise EOFError("the scoring worker's output closed") from None
        if header["kind"] == "error":
            raise Verdict(Status.crash, f"the scoring worker raised {_error_type(header)} (see score.log)")
        if header["kind"] != kind:
            raise Verdict(Status.violation, f"scoring protocol: expected {kind!r}, got {header['kind']!r}")
        return header, array

    def hello(self) -> EvalMode:
        """The eval mode the model declares: its seq_len, and optionally eval_mode, eval_stride, eval_context."""
        hello, _ = self.receive("hello", max_payload=0)
        seq_len = hello.get("seq_len")
        if not isinstance(seq_len, int) or not 2 <= seq_len <= MAX_SEQ_LEN:
            raise Verdict(Status.crash, f"model seq_len {seq_len!r} is not an integer in [2, {MAX_SEQ_LEN}]")
        declared = {k: hello.get(f"eval_{k}") for k in ("mode", "stride", "context")}
        try:
            return EvalMode(seq_len=seq_len, **{k: v for k, v in declared.items() if v is not None})
        except ValidationError as e:
            reason = f"the model declares an eval mode the harness cannot run: {first_line(e)}"
            raise Verdict(Status.crash, reason) from None

    def nll(self, tokens: np.ndarray, at: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """For inputs [B, T]: the NLL [B, T-1] of each next token inside the block, and the raw logits
        [len(at), V] at the (row, position) pairs `at`.

        Scoring and verification send exactly this request, in batches of the same shape, so no request
        tells the worker which of the two it serves.
        """
        self.send("nll", tokens, at=[list(p) for p in at])
        b, t = tokens.shape[0], tokens.shape[1] - 1
        _, nll = self.receive("nll", max_payload=b * t * 8)
        if nll is None or nll.dtype != np.float64 or nll.shape != (b, t):
            got = None if nll is None else (nll.dtype.str, nll.shape)
            raise Verdict(Status.violation, f"scoring protocol: NLL answer {got}, expected float64 {(b, t)}")
        _, logits = self.receive("logits", max_payload=MAX_LOGITS_BYTES)
        if logits is None or logits.dtype != np.float32 or logits.ndim != 2 or logits.shape[0] != len(at):
            got = None if logits is None else (logits.dtype.str, logits.shape)
            raise Verdict(
                Status.violation, f"scoring protocol: logits answer {got}, expected float32 [{len(at)}, V]"
            )
        return nll, logits


def _error_type(header: dict) -> str:
    """The exception's type name, if it is one; never the candidate's message (it would reach a prompt)."""
    name = str(header.get("type", ""))
    return name if ERROR_TYPE.fullmatch(name) else "an exception"


def drive(
    proc: SandboxedProcess,
    work: Callable[[Session], ScoreOutcome],
    on_start: Callable[[int], None] | None = None,
    stop_when_done: bool = False,
) -> tuple[ScoreOutcome | None, PhaseOutcome]:
    """Run one worker process (started here, unless the caller started it already) through `work` to the
    end. Returns (outcome decided by the protocol or None, phase). None means the worker died or closed the
    pipe first: the caller classifies the phase. `stop_when_done` kills it once `work` has its answers."""
    outcome: ScoreOutcome | None = None
    try:
        if proc.proc is None:
            pid = proc.start()
            if on_start:
                on_start(pid)
        outcome = work(Session(proc))
        if stop_when_done:  # every answer is in: its exit (a torch process takes a while) is not waited for
            proc.abort()
    except Verdict as v:
        outcome = ScoreOutcome(status=v.status, reason=v.reason)
        proc.abort()
    except EOFError:  # the worker died or closed its output: let it exit on its own, briefly
        outcome = None
        proc.abort_after(EOF_GRACE_SECONDS)
    except BaseException:
        proc.abort()
        proc.wait()
        raise
    phase = proc.wait()
    return outcome, phase


def score_stream(
    session: Session,
    val: np.ndarray,
    table: ByteTable,
    batch_tokens: int,
    checked: Callable[[Layout], set[int]],
    stream_probes: float = 0.1,
    stream_tolerance: float = 0.02,
) -> ScoreOutcome:
    """Score every position of the model's eval mode; keep the reported NLL at the positions `checked` picks."""
    mode = session.hello()
    try:
        layout = build_layout(mode, val.size, batch_tokens)
    except ValueError as e:
        raise Verdict(Status.crash, str(e)) from None
    stream = val[: layout.positions + 1].astype(np.int64)
    n_bytes = count_stream_bytes(table, stream)
    if mode.mode == "stream":  # stateful: checked inside the stream, not by a fresh process
        from agentgolf.sandbox.stream import score_chunks

        rng = np.random.default_rng(secrets.randbits(64))
        nll_sum, probes = score_chunks(session, stream, layout, rng, stream_probes, stream_tolerance)
        session.send("bye")
        return _scored(nll_sum, n_bytes, layout, probes=probes)
    keep: dict[int, list[int]] = {}
    for flat in checked(layout):
        keep.setdefault(layout.row_of(flat), []).append(flat)
    rng = np.random.default_rng(secrets.randbits(64))
    reported: dict[int, float] = {}
    nll_sum = 0.0
    for rows in layout.batches():
        block = row_inputs(stream, layout, rows)
        last = block.shape[1] - 1
        row, pos = int(rng.integers(len(rows))), int(rng.integers(last))  # a consistency check
        at = [(r, last) for r in range(len(rows))] + [(row, pos)]
        inner, logits = session.nll(block, at=at)
        ends = nll_from_logits(logits[:-1], np.array([stream[layout.end[i]] for i in rows]))
        nll = np.concatenate([inner, ends[:, None]], axis=1)  # [B, L]: the last positions scored here
        mine = float(nll_from_logits(logits[-1:], block[row, pos + 1 : pos + 2])[0])
        if np.isfinite(inner[row, pos]) and not abs(mine - inner[row, pos]) <= CONSISTENCY_ATOL:
            raise Verdict(
                Status.violation,
                f"the reported NLL at validation token {layout.start[rows[row]] + pos} is {inner[row, pos]:.4f}"
                f" nats, but the same call's logits give {mine:.4f}: the NLL is not the model's own",
            )
        for r, i in enumerate(rows):
            scored = nll[r, nll.shape[1] - layout.scored[i] :]
            if not np.isfinite(scored).all():
                bad = layout.end[i] - layout.scored[i] + int(np.argmax(~np.isfinite(scored)))
                raise Verdict(Status.nan, f"non-finite NLL at validation token {bad}")
            if scored.min() < -NEGATIVE_NLL_TOL:
                raise Verdict(
                    Status.violation, f"negative NLL {scored.min():.3g}: not a normalized distribution"
                )
            nll_sum += float(scored.sum())
            for flat in keep.get(i, ()):
                reported[flat] = float(nll[r, flat - layout.start[i]])
    session.send("bye")
    return _scored(nll_sum, n_bytes, layout, reported=reported)


def _scored(nll_sum: float, n_bytes: int, layout: Layout, **checks) -> ScoreOutcome:
    """The score of every position of `layout`, from the harness's own sum and byte count."""
    return ScoreOutcome(
        status=Status.ok,
        val_loss=nll_sum / layout.positions,
        val_bpb=bits_per_byte(nll_sum, n_bytes),
        val_tokens=layout.positions,
        val_bytes=n_bytes,
        mode=layout.mode,
        **checks,
    )
