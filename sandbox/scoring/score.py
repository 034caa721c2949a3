"""The trusted side of scoring: stream validation rows to a worker, and compute val_bpb from its answers.

This process never imports the candidate's code. It reads the validation shards, lays them out as the
model's declared eval mode asks (sandbox/scoring/layout.py), and asks the sandboxed worker (sandbox/scoring/score_worker.py)
for the NLL of every next token. Bytes come from the harness's own ByteTable; val_loss and val_bpb are
computed here.

The worker runs the candidate's code in its own interpreter, so anything it says may be forged: every
in-process check is best effort (finite values; in every row, the NLL at one secret random position
re-derived here from the raw logits). The guarantee comes from sandbox/scoring/verify.py: a random sample of the
positions scored here is scored again by a fresh process that never sees their true continuations.

Every request has one shape in both workers: a block of rows [B, L], and for each row its last position
and one more, uniform over the positions it scores. The scorer draws that one at random for its check; the
verifier puts its probe there. So no request says which worker it goes to, or which position is checked.

Nothing the worker answers may make this code raise: sizes are checked from a frame's header before its
payload is read (a logits answer is at most positions x vocabulary x 4 bytes), widths against the
vocabulary, and an answer that still cannot be processed is the candidate's `violation` (see `drive`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ValidationError

from agentgolf.baseline.shards import read_shard
from agentgolf.errors import first_line
from agentgolf.sandbox.isolation.process import SandboxedProcess
from agentgolf.sandbox.phase import PhaseOutcome
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.scoring.bpb import ByteTable, bits_per_byte
from agentgolf.sandbox.scoring.layout import MAX_SEQ_LEN, EvalMode, Layout, build_layout, row_inputs
from agentgolf.sandbox.scoring.score_worker import FrameError, read_frame, write_frame

log = logging.getLogger(__name__)

# Tokens per request, several rows each. On a GPU 128 windows of 1,024, twice the trainer's own eval batch; on
# a CPU larger gains nothing. The verifier's requests take the scorer's sizes, and rows of one request never
# touch, whatever the size: what is checked does not change with it.
BATCH_TOKENS_CPU = 8192
BATCH_TOKENS_GPU = 131072
BYTE_COUNT_CHUNK = 1 << 22
SOFTMAX_ROWS = 1024  # logits rows per float64 log-softmax: the harness's memory per answer stays small
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
    reported: dict[int, float] = {}  # NLL the worker reported at the positions verify.py will check
    load_seconds: float | None = None  # worker start to its hello: load_model
    predict_seconds: float | None = None  # time in predict requests (stream mode's adapt excluded)


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
    """Bytes of every scored target of a stream (target i's previous token is i-1)."""
    total = 0
    for start in range(0, stream.size - 1, BYTE_COUNT_CHUNK):
        end = min(start + BYTE_COUNT_CHUNK, stream.size - 1)
        total += int(table.count(stream[start:end], stream[start + 1 : end + 1]).sum())
    return total


def nll_from_logits(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Float64 log-softmax NLL of each target, computed here from raw float32 logits [K, V], row by row."""
    out = np.empty(targets.size)
    for a in range(0, targets.size, SOFTMAX_ROWS):
        z = logits[a : a + SOFTMAX_ROWS].astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            top = z.max(axis=-1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=-1))
            out[a : a + z.shape[0]] = lse - z[np.arange(z.shape[0]), targets[a : a + SOFTMAX_ROWS]]
    return out


class Session:
    """Request/response over a worker's stdin/stdout, validating every answer; it keeps the worker's clock."""

    def __init__(self, proc: SandboxedProcess, vocab: int, started: float):
        self.proc, self.vocab, self.started = proc, vocab, started
        self.load_seconds: float | None = None
        self.predict_seconds = 0.0

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
        """The eval mode the model declares: its seq_len, and optionally eval_mode, eval_stride, eval_context
        and eval_autocast (its numerics, which the worker applies)."""
        hello, _ = self.receive("hello", max_payload=0)
        self.load_seconds = time.monotonic() - self.started
        seq_len = hello.get("seq_len")
        if not isinstance(seq_len, int) or not 2 <= seq_len <= MAX_SEQ_LEN:
            raise Verdict(Status.crash, f"model seq_len {seq_len!r} is not an integer in [2, {MAX_SEQ_LEN}]")
        declared = {k: hello.get(f"eval_{k}") for k in ("mode", "stride", "context", "autocast")}
        try:
            return EvalMode(seq_len=seq_len, **{k: v for k, v in declared.items() if v is not None})
        except ValidationError as e:
            reason = f"the model declares an eval mode the harness cannot run: {first_line(e)}"
            raise Verdict(Status.crash, reason) from None

    def nll(self, tokens: np.ndarray, at: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """For inputs [B, L]: the NLL [B, L-1] of each next token inside the block, and the raw logits
        [len(at), V] at the (row, position) pairs `at`. Scoring and verification send exactly this request."""
        t0 = time.monotonic()
        self.send("nll", tokens, at=[[int(r), int(c)] for r, c in at])
        b, t = tokens.shape[0], tokens.shape[1] - 1
        _, nll = self.receive("nll", max_payload=b * t * 8)
        if nll is None or nll.dtype != np.float64 or nll.shape != (b, t):
            got = None if nll is None else (nll.dtype.str, nll.shape)
            raise Verdict(Status.violation, f"scoring protocol: NLL answer {got}, expected float64 {(b, t)}")
        _, logits = self.receive("logits", max_payload=len(at) * self.vocab * 4)
        if logits is None or logits.dtype != np.float32 or logits.shape != (len(at), self.vocab):
            got = None if logits is None else (logits.dtype.str, logits.shape)
            raise Verdict(
                Status.violation,
                f"scoring protocol: logits answer {got}, expected float32 [{len(at)}, {self.vocab}] "
                "(one column per token of the vocabulary)",
            )
        self.predict_seconds += time.monotonic() - t0
        return nll, logits

    def adapt(self, chunk: np.ndarray, doc_starts: list[int]) -> None:
        """Stream mode: reveal a chunk already scored, for the model's own test-time training."""
        self.send("adapt", chunk, doc_starts=doc_starts)
        self.receive("adapted", max_payload=0)


def _error_type(header: dict) -> str:
    """The exception's type name, if it is one; never the candidate's message (it would reach a prompt)."""
    name = str(header.get("type", ""))
    return name if ERROR_TYPE.fullmatch(name) else "an exception"


def drive(
    proc: SandboxedProcess,
    vocab: int,
    work: Callable[[Session], ScoreOutcome],
    on_start: Callable[[int], None] | None = None,
    stop_when_done: bool = False,
) -> tuple[ScoreOutcome | None, PhaseOutcome]:
    """Start one worker process and run it through `work` to the end. Returns (outcome decided by the protocol
    or None, phase). None means the worker died or closed the pipe first: the caller classifies the phase.
    `stop_when_done` kills it once `work` has its answers. Whatever goes wrong while the candidate's answers
    are processed is the candidate's: a `violation`, never an escape into the caller."""
    outcome: ScoreOutcome | None = None
    try:
        started = time.monotonic()
        pid = proc.start()
        if on_start:
            on_start(pid)
        outcome = work(Session(proc, vocab, started))
        if stop_when_done:  # every answer is in: its exit (a torch process takes a while) is not waited for
            proc.abort()
    except Verdict as v:
        outcome = ScoreOutcome(status=v.status, reason=v.reason)
        proc.abort()
    except EOFError:  # the worker died or closed its output: let it exit on its own, briefly
        outcome = None
        proc.abort_after(EOF_GRACE_SECONDS)
    except Exception as e:  # noqa: BLE001 - an answer this code could not process is the candidate's doing
        log.warning("scoring: an answer could not be processed", exc_info=True)
        outcome = ScoreOutcome(
            status=Status.violation, reason=f"its answer could not be processed ({type(e).__name__})"
        )
        proc.abort()
    except BaseException:
        proc.abort()
        proc.wait()
        raise
    phase = proc.wait()
    return outcome, phase


def open_layout(session: Session, val: np.ndarray, batch_tokens: int) -> Layout:
    """The declared mode's layout over every validation target."""
    mode = session.hello()
    try:
        return build_layout(mode, val.size, batch_tokens)
    except ValueError as e:
        raise Verdict(Status.crash, f"the model declares an eval mode the harness cannot run: {e}") from None


def ask(session: Session, block: np.ndarray, layout: Layout, rows, checked: list[int]):
    """One request: per row its last position and `checked[r]`. Returns (inner NLL [B, L-1], logits at the
    last positions [B, V], logits at the checked ones [B, V])."""
    last = block.shape[1] - 1
    at = [(r, last) for r in range(len(rows))] + [(r, t) for r, t in enumerate(checked)]
    inner, logits = session.nll(block, at=at)
    return inner, logits[: len(rows)], logits[len(rows) :]


def any_position(layout: Layout, i: int, rng: np.random.Generator) -> int:
    """A position of row i (in the row), uniform over those it scores: the verifier's probes are drawn alike."""
    return layout.length(i) - 1 - int(rng.integers(int(layout.scored[i])))


def row_nll(
    stream: np.ndarray, layout: Layout, i: int, inner, end_logits, checked_logits, t: int
) -> np.ndarray:
    """The NLL at every position row i scores, from one answer: the inner NLL as reported, the last position
    from its raw logits here; the reported NLL at `t` must be what the same answer's logits give."""
    start, end = int(layout.start[i]), int(layout.end[i])
    nll = np.append(inner, nll_from_logits(end_logits[None], np.array([stream[end]])))
    mine = float(nll_from_logits(checked_logits[None], np.array([stream[start + t + 1]]))[0])
    if np.isfinite(nll[t]) and not abs(mine - nll[t]) <= CONSISTENCY_ATOL:
        raise Verdict(
            Status.violation,
            f"the reported NLL at validation token {start + t} is {nll[t]:.4f} nats, but the same call's "
            f"logits give {mine:.4f}: the NLL is not the model's own",
        )
    scored = nll[nll.size - int(layout.scored[i]) :]
    if not np.isfinite(scored).all():
        bad = end - int(layout.scored[i]) + int(np.argmax(~np.isfinite(scored)))
        raise Verdict(Status.nan, f"non-finite NLL at validation token {bad}")
    if scored.min() < -NEGATIVE_NLL_TOL:
        raise Verdict(Status.violation, f"negative NLL {scored.min():.3g}: not a normalized distribution")
    return scored


def score_rows(
    session: Session, layout: Layout, stream: np.ndarray, keep: dict[int, int], rng: np.random.Generator
) -> tuple[float, dict[int, float]]:
    """Windows and sliding: every row, in secret random batches. Returns (summed NLL, the reported NLL at the
    positions `keep` names, by row: verify.py checks those)."""
    sums, reported = np.zeros(layout.rows), {}  # summed in row order: the same answers, the same score
    for rows in layout.batches(rng):
        block = row_inputs(stream, layout, rows)
        checked = [any_position(layout, int(i), rng) for i in rows]
        inner, ends, at_checked = ask(session, block, layout, rows, checked)
        for r, i in enumerate(rows):
            scored = row_nll(stream, layout, int(i), inner[r], ends[r], at_checked[r], checked[r])
            sums[i] = scored.sum()
            if int(i) in keep:
                p = keep[int(i)]
                reported[p] = float(scored[p - (int(layout.end[i]) - scored.size)])
    return float(sums.sum()), reported


def scored(nll_sum: float, n_bytes: int, layout: Layout, session: Session, **checks) -> ScoreOutcome:
    """The score of every position of `layout`, from the harness's own sum and byte count."""
    return ScoreOutcome(
        status=Status.ok,
        val_loss=nll_sum / layout.positions,
        val_bpb=bits_per_byte(nll_sum, n_bytes),
        val_tokens=layout.positions,
        val_bytes=n_bytes,
        mode=layout.mode,
        load_seconds=session.load_seconds,
        predict_seconds=session.predict_seconds,
        **checks,
    )
