"""The scoring child: loads the candidate's model from its artifact and answers the harness's requests.

Copied into the scoring folder and run there as a standalone script (it imports nothing from agentgolf),
inside a sandbox that holds no data: token windows arrive over stdin, answers leave over stdout, both as
length-prefixed numpy frames. The candidate's prints are sent to stderr (the log) so they cannot corrupt
the protocol. This process runs the candidate's code, so the parent trusts nothing it says: it validates
every frame and verifies a sample of its answers in a fresh process (see sandbox/scoring/verify.py).

Requests: "nll" (inputs [B, T], T >= 1, and `at`, a list of (row, position) pairs -> a frame of float64 NLL [B, T-1] of
each next token inside the block, from a float64 log-softmax over the whole vocabulary, then a frame of the
raw float32 logits [len(at), V] at those pairs), "adapt" (stream mode: a chunk after it was scored, with its
document starts, for the model's own `adapt(tokens, doc_starts)`), "bye". Scoring and verification send the
same request. A row's last target is never sent with it: the harness scores that position from its logits.

Numerics: the model may declare `eval_autocast` ("bf16", "fp16"; "fp32" or none: off), the autocast its
forward ran under in training; this script runs `forward_logits` and `adapt` under it, in the scoring and the
verifying worker alike, and says it in its hello, where the harness checks it. On CUDA, TF32 matmuls are on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import operator
import os
import struct
import sys
import traceback
from typing import IO, Any

import numpy as np

FRAME_MAGIC = b"AGF1"
FRAME_PREFIX = struct.Struct("<4sIQ")  # magic, header length, payload length
MAX_HEADER_BYTES = 1 << 20
FRAME_DTYPES = {"<f8", "<f4", "<i8"}  # float64 NLL, float32 logits, int64 tokens
CANDIDATE_MODULE = "train_gpt"
ERROR_MESSAGE_CHARS = 2000
AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # eval_autocast -> torch dtype; "fp32": none
NLL_CHUNK_POSITIONS = {"cpu": 1024, "cuda": 16384}  # float64 cross-entropy in chunks: cache-sized on a CPU


class FrameError(ValueError):
    """A frame is malformed, too large, or of a kind or shape the reader did not expect."""


def write_frame(stream: IO[bytes], kind: str, array: np.ndarray | None = None, **meta: Any) -> None:
    header: dict[str, Any] = {"kind": kind, **meta}
    payload = b""
    if array is not None:
        array = np.ascontiguousarray(array)
        header["dtype"] = array.dtype.str
        header["shape"] = list(array.shape)
        payload = array.tobytes()
    raw = json.dumps(header).encode()
    stream.write(FRAME_PREFIX.pack(FRAME_MAGIC, len(raw), len(payload)) + raw)
    stream.write(payload)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise EOFError(f"stream ended after {got} of {n} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_frame(stream: IO[bytes], max_payload: int) -> tuple[dict[str, Any], np.ndarray | None]:
    """One frame; sizes, dtype and shape are checked before the payload is read, so a liar cannot flood us."""
    magic, n_header, n_payload = FRAME_PREFIX.unpack(_read_exact(stream, FRAME_PREFIX.size))
    if magic != FRAME_MAGIC:
        raise FrameError(f"bad frame magic {magic!r}")
    if n_header > MAX_HEADER_BYTES or n_payload > max_payload:
        raise FrameError(f"frame too large (header {n_header} bytes, payload {n_payload} bytes)")
    try:
        header = json.loads(_read_exact(stream, n_header))
    except ValueError:
        raise FrameError("frame header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise FrameError("frame header lacks a kind")
    if "dtype" not in header:
        if n_payload:
            raise FrameError("payload without dtype")
        return header, None
    dtype, shape = header.get("dtype"), header.get("shape")
    if (
        dtype not in FRAME_DTYPES
        or not isinstance(shape, list)
        or not all(isinstance(d, int) and d >= 0 for d in shape)
    ):
        raise FrameError(f"bad array description dtype={dtype!r} shape={shape!r}")
    if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != n_payload:
        raise FrameError(f"payload of {n_payload} bytes does not match shape {shape} of {dtype}")
    array = np.frombuffer(_read_exact(stream, n_payload), dtype=dtype).reshape(shape)
    return header, array


# --------------------------------------------------------------------------------------------------
# The worker proper (runs in the sandbox)


def _protocol_streams() -> tuple[IO[bytes], IO[bytes]]:
    """Keep private copies of stdin/stdout for the protocol; point fds 0/1 at /dev/null and the log."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # C-level and Python writes to stdout now land in the log
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    return proto_in, proto_out


def _load_candidate(trainer: str):
    spec = importlib.util.spec_from_file_location(CANDIDATE_MODULE, trainer)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {trainer}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[CANDIDATE_MODULE] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "load_model", None)):
        raise AttributeError(f"{trainer} defines no load_model(artifact_path, device)")
    return module


def _logits(model, tokens, torch):
    """forward_logits on a fresh copy of a [B, T] block of inputs, checked against the contract."""
    x = tokens.clone()  # the model gets its own tensor, not the one we keep reading
    logits = model.forward_logits(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(x.shape):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"forward_logits returned {shape}, expected a tensor of shape [B={x.shape[0]}, T={x.shape[1]}, V]"
        )
    if int(tokens.max()) >= logits.shape[-1]:
        raise ValueError(
            f"forward_logits has {logits.shape[-1]} classes but a token id is {int(tokens.max())}"
        )
    return logits


def declared_autocast(model, torch) -> str | None:
    """The model's `eval_autocast` as a name for the hello (a torch dtype is named; anything else is sent as
    a name the harness refuses), or None when it declares none."""
    value = getattr(model, "eval_autocast", None)
    if value is None or isinstance(value, str):
        return value
    names = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
    return names.get(value, f"<{type(value).__name__}>") if isinstance(value, torch.dtype) else "<unknown>"


def autocast(declared: str | None, device: str, torch):
    """The context `forward_logits` and `adapt` run in: autocast to the declared dtype, else nothing."""
    if declared not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=getattr(torch, AUTOCAST_DTYPES[declared]))


def nll_of(logits, tokens, torch):
    """Float64 NLL [B, T-1] of each next token inside the block: the cross-entropy of float64 logits over the
    whole vocabulary, in chunks of positions (the same numbers as one float64 log-softmax, in a third the
    time on a CPU)."""
    b, t = tokens.shape[0], tokens.shape[1] - 1
    z, y = logits[:, :-1].reshape(b * t, logits.shape[-1]), tokens[:, 1:].reshape(b * t)
    out = torch.empty(b * t, dtype=torch.float64, device=logits.device)
    step = NLL_CHUNK_POSITIONS.get(logits.device.type, 1024)
    for a in range(0, b * t, step):
        out[a : a + step] = torch.nn.functional.cross_entropy(
            z[a : a + step].double(), y[a : a + step], reduction="none"
        )
    return out.view(b, t)


def serve(model, device: str, proto_in: IO[bytes], proto_out: IO[bytes], torch, declared: str | None) -> None:
    numerics = autocast(declared, device, torch)  # as said in the hello, read once
    while True:
        header, array = read_frame(proto_in, max_payload=1 << 34)
        kind = header["kind"]
        if kind == "bye":
            return
        if kind == "adapt":  # stream mode: a chunk already scored, revealed for test-time training
            if array is None or array.dtype != np.int64 or array.ndim != 2:
                raise ValueError("request 'adapt' needs an int64 [1, L] token array")
            adapt = getattr(model, "adapt", None)
            if callable(adapt):
                with torch.enable_grad(), numerics:
                    adapt(torch.from_numpy(array.copy()).to(device), list(header.get("doc_starts") or []))
            write_frame(proto_out, "adapted")
            continue
        if kind != "nll":
            raise ValueError(f"unknown request {kind!r}")
        if array is None or array.dtype != np.int64 or array.ndim != 2 or array.shape[1] < 1:
            raise ValueError("request 'nll' needs an int64 [B, T] token array")
        tokens = torch.from_numpy(array.copy()).to(device)
        at = header.get("at") or []
        with torch.inference_mode():
            with numerics:
                logits = _logits(model, tokens, torch)
            logits = logits.float()  # what the harness reads; the NLL is taken from the same numbers
            write_frame(proto_out, "nll", nll_of(logits, tokens, torch).cpu().numpy().astype(np.float64))
            rows = torch.tensor([int(r) for r, _ in at], dtype=torch.long, device=logits.device)
            cols = torch.tensor([int(c) for _, c in at], dtype=torch.long, device=logits.device)
            write_frame(proto_out, "logits", logits[rows, cols].cpu().numpy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    proto_in, proto_out = _protocol_streams()
    try:
        import torch

        if args.device.startswith("cuda"):  # TF32 matmuls, as the trainer's; both workers alike
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        module = _load_candidate(args.trainer)
        with (
            torch.no_grad()
        ):  # loading is not training (not inference_mode: its tensors could not adapt later)
            model = module.load_model(args.artifact, args.device)
        if hasattr(model, "eval"):
            model.eval()
        try:
            seq_len = operator.index(model.seq_len)
        except (AttributeError, TypeError):
            raise TypeError(
                "the loaded model needs an integer .seq_len (its training sequence length)"
            ) from None
        names = ("mode", "stride", "context")
        declared = {f"eval_{k}": getattr(model, f"eval_{k}", None) for k in names}
        declared = {
            k: v for k, v in declared.items() if isinstance(v, (str, int)) and not isinstance(v, bool)
        }
        numerics = declared_autocast(model, torch)
        if numerics is not None:
            declared["eval_autocast"] = numerics
        write_frame(
            proto_out, "hello", seq_len=seq_len, torch=torch.__version__, device=args.device, **declared
        )
        serve(model, args.device, proto_in, proto_out, torch, numerics)
        return 0
    except Exception as e:
        traceback.print_exc()
        message = f"{type(e).__name__}: {e}"[:ERROR_MESSAGE_CHARS]
        try:
            write_frame(proto_out, "error", message=message, type=type(e).__name__)
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
