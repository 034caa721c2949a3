"""The trusted side of scoring: stream validation windows to the worker, check it, and compute val_bpb.

This process never imports the candidate's code. It reads the validation shards, cuts them into whole
windows of the model's seq_len (the official `eval_val` layout: non-overlapping, no context across
windows), and asks the sandboxed worker (sandbox/score_worker.py) for the NLL of every next token. Bytes
come from the harness's own ByteTable; val_loss and val_bpb are computed here.

The worker runs the candidate's code, so it could lie. Three checks catch the ways it could:
- every NLL must be finite (else `nan`) and non-negative, as a normalized distribution's must;
- spot checks: for a few windows chosen at random, the worker must later send raw logits for the window
  again, in a batch of the same shape whose other rows are random, and the NLL recomputed here must match
  what it reported (a tampered NLL path, a stateful model, or rows that peek at the next row fail);
- causality probes: a window and a copy with the suffix from a random position changed must give identical
  logits before that position (a model that peeks at future tokens fails).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from agentgolf.baseline.shards import read_shard
from agentgolf.sandbox.bpb import ByteTable, bits_per_byte
from agentgolf.sandbox.phase import PhaseOutcome
from agentgolf.sandbox.process import SandboxedProcess
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.score_worker import FrameError, read_frame, write_frame

BATCH_TOKENS_CPU = 8192  # tokens per request; several windows of seq_len each
BATCH_TOKENS_GPU = 32768
MAX_SEQ_LEN = 1 << 20
MAX_LOGITS_BYTES = 1 << 31  # cap on one logits answer (rows x T x V x 4 bytes)
BYTE_COUNT_CHUNK = 1 << 22
VERIFY_SAMPLES = 2  # windows whose reported NLL is re-derived from raw logits
CAUSALITY_PROBES = 3
CAUSAL_ATOL = 1e-5
CAUSAL_RTOL = 1e-5
VERIFY_ATOL = 1e-3  # nats per token; room for GPU kernels that are not bitwise reproducible
NEGATIVE_NLL_TOL = 1e-6
EOF_GRACE_SECONDS = 5.0  # a worker that closed its output gets this long to exit before it is killed


class ScoreOutcome(BaseModel):
    status: Status
    reason: str = ""
    val_loss: float | None = None
    val_bpb: float | None = None
    val_tokens: int | None = None
    val_bytes: int | None = None
    seq_len: int | None = None


class _Verdict(Exception):
    """Scoring ended with a definite status (nan, violation, crash) decided by the parent."""

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
    """Float64 log-softmax NLL of each target, computed here from raw float32 logits [T, V]."""
    z = logits.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        top = z.max(axis=-1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=-1))
        return lse - z[np.arange(targets.size), targets]


class _Session:
    """Request/response over the worker's stdin/stdout, validating every answer."""

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
            raise _Verdict(Status.violation, f"scoring protocol corrupted: {e}") from None
        except (OSError, ValueError):
            raise EOFError("the scoring worker's output closed") from None
        if header["kind"] == "error":
            raise _Verdict(Status.crash, f"scoring worker failed: {str(header.get('message', ''))[:500]}")
        if header["kind"] != kind:
            raise _Verdict(Status.violation, f"scoring protocol: expected {kind!r}, got {header['kind']!r}")
        return header, array

    def nll(self, tokens: np.ndarray) -> np.ndarray:
        self.send("nll", tokens)
        b, t = tokens.shape[0], tokens.shape[1] - 1
        _, array = self.receive("nll", max_payload=b * t * 8)
        if array is None or array.dtype != np.float64 or array.shape != (b, t):
            got = None if array is None else (array.dtype.str, array.shape)
            raise _Verdict(Status.violation, f"scoring protocol: NLL answer {got}, expected float64 {(b, t)}")
        return array

    def logits(self, tokens: np.ndarray, rows: list[int]) -> np.ndarray:
        self.send("logits", tokens, rows=rows)
        _, array = self.receive("logits", max_payload=MAX_LOGITS_BYTES)
        t = tokens.shape[1] - 1
        if array is None or array.dtype != np.float32 or array.ndim != 3 or array.shape[:2] != (len(rows), t):
            got = None if array is None else (array.dtype.str, array.shape)
            raise _Verdict(
                Status.violation,
                f"scoring protocol: logits answer {got}, expected float32 [{len(rows)}, {t}, V]",
            )
        return array


def _windows(stream: np.ndarray, start: int, end: int, seq_len: int) -> np.ndarray:
    """Windows start..end-1 as an int64 [n, T+1] block (inputs plus the next token)."""
    return np.stack([stream[i * seq_len : (i + 1) * seq_len + 1] for i in range(start, end)]).astype(np.int64)


def run_scoring(
    proc: SandboxedProcess,
    val_tokens: np.ndarray,
    table: ByteTable,
    vocab_size: int,
    *,
    batch_tokens: int = BATCH_TOKENS_CPU,
    on_start: Callable[[int], None] | None = None,
) -> tuple[ScoreOutcome | None, PhaseOutcome]:
    """Drive one scoring process to the end. Returns (outcome decided by the protocol or None, phase).

    None means the worker died or closed the pipe before finishing: the caller classifies the phase
    (timeout, oom, crash) from its exit and log.
    """
    pid = proc.start()
    outcome: ScoreOutcome | None = None
    try:
        if on_start:
            on_start(pid)
        outcome = _score(_Session(proc), val_tokens, table, vocab_size, batch_tokens)
    except _Verdict as v:
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


def _score(
    session: _Session, val: np.ndarray, table: ByteTable, vocab_size: int, batch_tokens: int
) -> ScoreOutcome:
    hello, _ = session.receive("hello", max_payload=0)
    seq_len = hello.get("seq_len")
    if not isinstance(seq_len, int) or not 2 <= seq_len <= MAX_SEQ_LEN:
        raise _Verdict(Status.crash, f"model seq_len {seq_len!r} is not an integer in [2, {MAX_SEQ_LEN}]")
    n_windows = (val.size - 1) // seq_len
    if n_windows == 0:
        raise _Verdict(Status.crash, f"seq_len {seq_len} exceeds the {val.size} validation tokens")
    stream = val[: n_windows * seq_len + 1].astype(np.int64)
    n_bytes = count_stream_bytes(table, stream)
    per_batch = max(1, batch_tokens // seq_len)
    batches = [(s, min(s + per_batch, n_windows)) for s in range(0, n_windows, per_batch)]

    rng = np.random.default_rng(secrets.randbits(64))  # the candidate cannot predict which windows
    picks = sorted(
        {int(i) for i in rng.choice(n_windows, size=min(VERIFY_SAMPLES, n_windows), replace=False)}
    )
    reported: dict[int, np.ndarray] = {}
    nll_sum = 0.0
    for start, end in batches:
        nll = session.nll(_windows(stream, start, end, seq_len))
        if not np.isfinite(nll).all():
            bad = int(np.argmax(~np.isfinite(nll).ravel()))
            raise _Verdict(Status.nan, f"non-finite NLL at validation token {start * seq_len + bad}")
        if nll.min() < -NEGATIVE_NLL_TOL:
            raise _Verdict(Status.violation, f"negative NLL {nll.min():.3g}: not a normalized distribution")
        nll_sum += float(nll.sum())
        for w in picks:
            if start <= w < end:
                reported[w] = nll[w - start].copy()

    for w in picks:  # recompute the NLL from raw logits, same batch shape, every other row random
        start = (w // per_batch) * per_batch
        end = min(start + per_batch, n_windows)
        row = w - start
        window = _windows(stream, w, w + 1, seq_len)[0]
        block = rng.integers(0, vocab_size, size=(end - start, seq_len + 1), dtype=np.int64)
        block[row] = window
        logits = session.logits(block, rows=[row])[0]
        mine = nll_from_logits(logits, window[1:])
        diff = float(np.max(np.abs(mine - reported[w]))) if np.isfinite(mine).all() else math.inf
        if not diff <= VERIFY_ATOL:
            raise _Verdict(
                Status.violation,
                f"reported NLL of window {w} disagrees with the model's own logits for it in a batch of "
                f"other windows (max diff {diff:.3g} nats): scoring code was tampered with, the model keeps "
                "state between calls, or its batch rows see each other",
            )

    for _ in range(CAUSALITY_PROBES):
        _probe_causality(session, stream, seq_len, n_windows, vocab_size, rng)

    session.send("bye")
    n_tokens = n_windows * seq_len
    return ScoreOutcome(
        status=Status.ok,
        val_loss=nll_sum / n_tokens,
        val_bpb=bits_per_byte(nll_sum, n_bytes),
        val_tokens=n_tokens,
        val_bytes=n_bytes,
        seq_len=seq_len,
    )


def _probe_causality(
    session: _Session, stream: np.ndarray, seq_len: int, n_windows: int, vocab_size: int, rng
) -> None:
    """Change every token from a random position p on; logits before p must not move."""
    w = int(rng.integers(n_windows))
    p = int(rng.integers(1, seq_len))
    original = _windows(stream, w, w + 1, seq_len)[0]
    changed = original.copy()
    changed[p:] = rng.integers(0, vocab_size, size=changed.size - p)
    changed[p] = (original[p] + 1 + rng.integers(vocab_size - 1)) % vocab_size  # surely differs at p
    logits = session.logits(np.stack([original, changed]), rows=[0, 1])
    before, after = logits[0, :p], logits[1, :p]
    if not (np.isfinite(before).all() and np.isfinite(after).all()):
        raise _Verdict(Status.nan, "non-finite logits in the causality probe")
    excess = np.abs(before - after) - (CAUSAL_ATOL + CAUSAL_RTOL * np.abs(before))
    if (excess > 0).any():
        q = int(np.argwhere(excess > 0)[0][0])
        diff = float(np.abs(before - after).max())
        raise _Verdict(
            Status.violation,
            f"non-causal model: changing tokens from position {p} on changed the logits at position {q} "
            f"(max diff {diff:.3g}); predictions may depend only on earlier tokens",
        )
