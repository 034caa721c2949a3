"""The trainer contract's static half: what can be told of a trainer from its source alone.

`agentgolf check` reads a trainer before it runs it, and on a machine where it cannot run (a CUDA-only
trainer on a CPU box) this is all it can say, so every point says whether it was met, missed, only a warning,
or not checkable without running. The contract itself is docs/trainer-contract.md (version 1); the harness's
side of it is sandbox/train_phase.py (what a trainer gets) and sandbox/scoring/score_worker.py (what it must answer).
A self-extracting trainer (the late records' lzma + base85 stub) is unpacked first and checked unpacked, while
its code bytes stay the bytes as shipped, as the challenge counts them.
"""

from __future__ import annotations

import ast
import base64
import bz2
import gzip
import lzma
import zlib
from itertools import product
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

CONTRACT_VERSION = 1
EVAL_MODES = ("windows", "sliding", "stream")
AUTOCASTS = ("fp32", "bf16", "fp16")
State = Literal["met", "missed", "warn", "unchecked"]
DECODERS = (("base85", base64.b85decode), ("base64", base64.b64decode))
INFLATERS = (
    ("lzma", lzma.decompress),
    ("zlib", zlib.decompress),
    ("gzip", gzip.decompress),
    ("bz2", bz2.decompress),
)
WORDS = {"met": "ok", "missed": "MISSED", "warn": "warn", "unchecked": "not checked"}


class Point(BaseModel):
    """One contract point: its name, whether this trainer meets it, and why, in one line."""

    name: str
    state: State
    detail: str

    def line(self) -> str:
        return f"{WORDS[self.state]:<12}{self.name}: {self.detail}"


class Source(BaseModel):
    """A trainer's code as checked: the text (unpacked if it was packed) and its bytes as shipped."""

    text: str
    code_bytes: int
    packed: str = ""  # how it was unpacked ("lzma of base85"), or "" for plain source


def read_source(path: Path) -> Source:
    """The trainer's text and its code bytes (the file as it is: what the size cap counts)."""
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    inner, how = unpack(text)
    return Source(text=inner or text, code_bytes=len(raw), packed=how)


def unpack(text: str) -> tuple[str, str]:
    """The source a self-extracting stub runs (`exec(lzma.decompress(base64.b85decode("...")))` and its
    kin), with how it was packed; ("", "") for a plain trainer or one that does not parse."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return "", ""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "exec"]
    for call in calls:
        for const in ast.walk(call):
            value = getattr(const, "value", None) if isinstance(const, ast.Constant) else None
            if not isinstance(value, str | bytes) or len(value) < 64:
                continue
            for (name, decode), (kind, inflate) in product(DECODERS, INFLATERS):
                try:
                    return inflate(decode(value)).decode(), f"{kind} of {name}"
                except Exception:  # not this packing: try the next
                    continue
    return "", ""


def static_points(source: Source, size_bytes: int, siblings: set[str] = frozenset()) -> list[Point]:
    """Every point the source alone can tell. `siblings`: module names beside the trainer in its folder
    (a records folder), which the sandbox does not carry: it runs the trainer file alone."""
    try:
        tree = ast.parse(source.text)
    except SyntaxError as exc:
        return [
            Point(name="parses", state="missed", detail=f"not valid Python: line {exc.lineno}: {exc.msg}")
        ]
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    found = [
        _version(tree),
        Point(
            name="parses",
            state="met",
            detail="valid Python" + (f" ({source.packed})" if source.packed else ""),
        ),
        _guard(tree),
        _load_model(tree),
        _forward_logits(tree),
        _seq_len(tree),
        *_eval_mode(tree),
        _reads(strings, "data", ["DATA_PATH"], "the training shards' folder", required=True),
        _artifact(strings),
        _reads(
            strings, "clock", ["MAX_WALLCLOCK_SECONDS", "MAX_CPU_SECONDS"], "its time limit", required=True
        ),
        _reads(strings, "seed", ["SEED"], "the seed (paired runs and replays need it)", required=False),
        _reads(strings, "vocab", ["VOCAB_SIZE"], "the vocabulary size", required=False),
        _own_score(strings),
        _code_bytes(source, size_bytes),
    ]
    if siblings:
        found.append(_one_file(tree, siblings))
    return found


def _version(tree: ast.Module) -> Point:
    value = assigned(tree, "CONTRACT_VERSION")
    if not value:
        return Point(
            name="contract", state="met", detail=f"no CONTRACT_VERSION: version {CONTRACT_VERSION} assumed"
        )
    if value[0] != CONTRACT_VERSION:
        return Point(
            name="contract", state="missed", detail=f"CONTRACT_VERSION {value[0]!r}: this harness speaks 1"
        )
    return Point(name="contract", state="met", detail=f"version {CONTRACT_VERSION}")


def _guard(tree: ast.Module) -> Point:
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and "__name__" in ast.unparse(node.test)
            and "__main__" in ast.unparse(node.test)
        ):
            return Point(
                name="import", state="met", detail='training runs only under `if __name__ == "__main__"`'
            )
    return Point(
        name="import",
        state="missed",
        detail='no `if __name__ == "__main__":` guard: the scoring worker imports the file, and must not train',
    )


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """The module's own statements, also those inside a top-level `if`/`try` (a guarded import)."""
    out = []
    for node in tree.body:
        out.append(node)
        if isinstance(node, ast.If | ast.Try):
            out += [n for block in (node.body, node.orelse, getattr(node, "finalbody", [])) for n in block]
    return out


def _load_model(tree: ast.Module) -> Point:
    nodes = _top_level(tree)
    fn = next((n for n in nodes if isinstance(n, ast.FunctionDef) and n.name == "load_model"), None)
    if fn is None:
        named = [
            n
            for n in nodes
            if (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "load_model" for t in n.targets))
            or (isinstance(n, ast.ImportFrom) and any((a.asname or a.name) == "load_model" for a in n.names))
        ]
        if named:
            return Point(
                name="load_model", state="met", detail=f"bound at line {named[0].lineno} (signature unread)"
            )
        return Point(
            name="load_model", state="missed", detail="no module-level load_model(artifact_path, device)"
        )
    positional = len(fn.args.posonlyargs) + len(fn.args.args)
    if positional < 2 and fn.args.vararg is None:
        return Point(
            name="load_model",
            state="missed",
            detail=f"load_model takes {positional} positional argument(s); the harness passes 2 (artifact_path, device)",
        )
    return Point(
        name="load_model", state="met", detail=f"load_model({', '.join(a.arg for a in fn.args.args)})"
    )


def _forward_logits(tree: ast.Module) -> Point:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "forward_logits":
            return Point(name="forward_logits", state="met", detail=f"defined at line {node.lineno}")
        if isinstance(node, ast.keyword) and node.arg == "forward_logits":
            return Point(name="forward_logits", state="met", detail=f"set at line {node.value.lineno}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "forward_logits"
            and isinstance(node.ctx, ast.Store)
        ):
            return Point(name="forward_logits", state="met", detail=f"assigned at line {node.lineno}")
    return Point(
        name="forward_logits", state="missed", detail="no forward_logits(tokens [B, T]) -> logits [B, T, V]"
    )


def _seq_len(tree: ast.Module) -> Point:
    for node in ast.walk(tree):
        if (isinstance(node, ast.keyword) and node.arg == "seq_len") or (
            isinstance(node, ast.Attribute) and node.attr == "seq_len" and isinstance(node.ctx, ast.Store)
        ):
            return Point(name="seq_len", state="met", detail="the model is given a .seq_len")
    return Point(name="seq_len", state="warn", detail="no .seq_len assignment seen (checked when it runs)")


def assigned(tree: ast.Module, name: str) -> list[object]:
    """The literal values the source gives `name`: as a variable, an attribute or a keyword argument."""
    values = []
    for node in ast.walk(tree):
        targets: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(node, ast.Assign):
            targets = [(t, node.value) for t in node.targets]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [(node.target, node.value)]
        elif isinstance(node, ast.keyword) and node.arg == name:
            targets = [(ast.Name(id=name), node.value)]
        for target, value in targets:
            if getattr(target, "id", getattr(target, "attr", None)) == name:
                try:
                    values.append(ast.literal_eval(value))
                except ValueError:
                    pass
    return values


def _eval_mode(tree: ast.Module) -> list[Point]:
    modes = assigned(tree, "eval_mode")
    bad = [m for m in modes if m not in EVAL_MODES]
    if bad:
        return [
            Point(
                name="eval_mode",
                state="missed",
                detail=f"eval_mode {bad[0]!r}: one of {', '.join(EVAL_MODES)}",
            )
        ]
    points = []
    autocast = [a for a in assigned(tree, "eval_autocast") if isinstance(a, str) and a not in AUTOCASTS]
    if autocast:
        points.append(
            Point(
                name="eval_autocast", state="missed", detail=f"{autocast[0]!r}: one of {', '.join(AUTOCASTS)}"
            )
        )
    if not modes:
        return [
            *points,
            Point(name="eval_mode", state="met", detail="windows (the default: nothing declared)"),
        ]
    params = [f"{k} {assigned(tree, k)[0]}" for k in ("eval_stride", "eval_context") if assigned(tree, k)]
    detail = ", ".join(dict.fromkeys(str(m) for m in modes)) + (f" ({', '.join(params)})" if params else "")
    if "stream" in modes and not any(
        isinstance(n, ast.FunctionDef) and n.name == "adapt" for n in ast.walk(tree)
    ):
        return [
            *points,
            Point(name="eval_mode", state="missed", detail=f"{detail}, but no adapt(tokens, doc_starts)"),
        ]
    return [*points, Point(name="eval_mode", state="met", detail=detail)]


def _reads(strings: set[str], name: str, keys: list[str], what: str, *, required: bool) -> Point:
    seen = [k for k in keys if k in strings]
    if seen:
        return Point(name=name, state="met", detail=f"reads {' / '.join(seen)}")
    return Point(
        name=name, state="missed" if required else "warn", detail=f"never reads {' or '.join(keys)} ({what})"
    )


def _artifact(strings: set[str]) -> Point:
    if "ARTIFACT_PATH" in strings:
        return Point(name="artifact", state="met", detail="writes to ARTIFACT_PATH")
    if any("final_model.int8.ptz" in s for s in strings):
        return Point(
            name="artifact", state="warn", detail="writes final_model.int8.ptz but never reads ARTIFACT_PATH"
        )
    return Point(
        name="artifact", state="missed", detail="never reads ARTIFACT_PATH (where the artifact must be left)"
    )


def _own_score(strings: set[str]) -> Point:
    if any("val_bpb" in s for s in strings):
        return Point(
            name="own score", state="met", detail="prints a val_bpb line (compared with the harness's)"
        )
    return Point(
        name="own score", state="warn", detail="prints no val_bpb line: its own score cannot be compared"
    )


def _code_bytes(source: Source, size_bytes: int) -> Point:
    how = f" ({source.packed}, {len(source.text.encode()):,} bytes unpacked)" if source.packed else ""
    state: State = "met" if source.code_bytes < size_bytes else "missed"
    return Point(
        name="code bytes",
        state=state,
        detail=f"{source.code_bytes:,} bytes as shipped{how}, of {size_bytes:,}",
    )


def _one_file(tree: ast.Module, siblings: set[str]) -> Point:
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    local = sorted(imported & siblings)
    if local:
        return Point(
            name="one file",
            state="missed",
            detail=f"imports {', '.join(local)} from its folder; the sandbox runs the trainer file alone",
        )
    return Point(name="one file", state="met", detail="imports nothing from its own folder")
