"""Documents to build a dataset from: the offline demo corpus and readers for .jsonl/.txt files."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from agentgolf.errors import AgentgolfError

MIN_DEMO_DOC_BYTES = 200  # stdlib files shorter than this are stubs, not documents
DEMO_DOC_TARGET_BYTES = 8_000  # long modules are cut at blank lines into docs of about this size
DEMO_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


class DataError(AgentgolfError, ValueError):
    """Bad input documents or arguments for a dataset build."""


def demo_corpus(max_bytes: int = 4_000_000) -> list[str]:
    """Offline demo documents: the source of this Python's standard library, in sorted path order.

    Modules longer than DEMO_DOC_TARGET_BYTES are cut at blank lines into several documents, so a small
    corpus still has many documents. Stops before the document that would pass `max_bytes` (UTF-8).
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    total = 0
    for path in _stdlib_sources(stdlib):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "\x00" in text or len(text) < MIN_DEMO_DOC_BYTES:
            continue
        for doc in _split_at_blank_lines(text, DEMO_DOC_TARGET_BYTES):
            size = len(doc.encode("utf-8"))
            if total + size > max_bytes:
                return docs
            docs.append(doc)
            total += size
    return docs


def _stdlib_sources(stdlib: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in DEMO_SKIP_DIRS and not d.startswith("test"))
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test"):
                yield Path(dirpath) / name


def _split_at_blank_lines(text: str, target_bytes: int) -> Iterator[str]:
    piece: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        if size >= target_bytes and not line.strip():
            yield "".join(piece).strip("\n")
            piece, size = [], 0
            continue
        piece.append(line)
        size += len(line)
    rest = "".join(piece).strip("\n")
    if len(rest) >= MIN_DEMO_DOC_BYTES:
        yield rest


def read_docs(path: Path) -> Iterator[str]:
    """Stream documents from a file: `.jsonl` (one JSON object a line, field "text") or `.txt`
    (documents separated by one or more blank lines, so a .txt doc is one paragraph; use .jsonl for
    multi-paragraph docs). Either may be compressed: `.xz` or `.gz`."""
    path = Path(path)
    suffixes = path.suffixes
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(suffixes[-1] if suffixes else "")
    kind = suffixes[-2] if opener and len(suffixes) >= 2 else (suffixes[-1] if suffixes else "")
    if kind not in (".jsonl", ".txt"):
        raise DataError(f"{path}: unsupported document file; expected .jsonl or .txt (optionally .xz/.gz)")
    if not path.is_file():
        raise DataError(f"{path}: document file not found")
    with (opener or open)(path, "rt", encoding="utf-8") as f:
        if kind == ".jsonl":
            yield from _jsonl_docs(f, path)
        else:
            yield from _paragraph_docs(f)


def _jsonl_docs(lines: Iterable[str], path: Path) -> Iterator[str]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}:{lineno}: expected a JSON object with a string field 'text'") from None
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: field 'text' is not a string")
        yield text


def _paragraph_docs(lines: Iterable[str]) -> Iterator[str]:
    piece: list[str] = []
    for line in lines:
        if line.strip():
            piece.append(line)
        elif piece:
            yield "".join(piece).rstrip("\n")
            piece = []
    if piece:
        yield "".join(piece).rstrip("\n")
