"""Documents to build a dataset from: the offline demo corpus and readers for .jsonl/.txt files."""

from __future__ import annotations

import builtins
import gzip
import itertools
import json
import keyword
import lzma
import os
import random
import re
import secrets
import sysconfig
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from agentgolf.errors import AgentgolfError

MIN_DEMO_DOC_BYTES = 200  # stdlib files shorter than this are stubs, not documents
DEMO_DOC_TARGET_BYTES = 8_000  # long modules are cut at blank lines into docs of about this size
DEMO_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}

# A word: a name (`_foo1`) or a number (`0x2000`, the `5` of `0.5`), not glued to a word character or a
# backslash before it (so the `x00` of "\x00", the `n` of "\n" and the `nd` of "2nd" are not words).
_WORD = re.compile(r"(?<![\w\\])[A-Za-z0-9_]+")
_STRING_PREFIXES = {"r", "u", "b", "f", "br", "rb", "fr", "rf"}
_KEYWORDS = frozenset(keyword.kwlist + keyword.softkwlist)  # kept as they are
_BUILTINS = frozenset(dir(builtins))  # replaced by builtins
_REDRAWS = 20  # tries for a replacement other than the word and those used in the document


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


def disguise_docs(docs: Sequence[str], vocabulary: Iterable[str], seed: int | None = None) -> list[str]:
    """Held-out demo documents that no file holds: every word replaced, consistently within a document.

    Why: the sandbox binds the standard library read-only (Python cannot run without it), so a trainer can
    rebuild any held-out stdlib document and memorize it. Every word but Python's keywords (names and
    numbers in code, and the words of strings and comments, else verbatim English and data) becomes a
    word of `vocabulary` of the same shape (builtin or not, leading underscores, case; a number's
    length), drawn by frequency with a secret seed (fresh from `secrets` unless given; never stored).
    The text keeps Python's look, size and token statistics, but its words, what a model pays most for,
    are draws that no file on disk predicts: a lookup of the original text misses at nearly every word
    (builtins are replaced too, by builtins: runs like `raise StopIteration` would be looked up).

    What stays: keywords, punctuation, layout, and which words repeat where. A trainer that aligns the
    disguised text to its original learns those and pays only for each word's first appearance. Top-level
    blocks are not shuffled: such a trainer recovers the order after a block's first line (a few bits a
    block), and a shuffle would break the files' natural order (imports first).
    """
    rng = random.Random(secrets.randbits(128) if seed is None else seed)
    counts = Counter(w for text in vocabulary for w in _WORD.findall(text) if w not in _KEYWORDS)
    if not counts:
        raise DataError("no words in the vocabulary documents to draw replacements from")
    by_shape: dict[tuple, list[str]] = {}
    for word in counts:
        by_shape.setdefault(_shape(word), []).append(word)
    draws = {
        shape: (words, list(itertools.accumulate(counts[w] for w in words)))
        for shape, words in by_shape.items()
    }
    anything = (list(counts), list(itertools.accumulate(counts.values())))

    def disguise(doc: str) -> str:
        mapping: dict[str, str] = {}
        used: set[str] = set()

        def replace(m: re.Match) -> str:
            word = m.group()
            if word in _KEYWORDS or (
                word.lower() in _STRING_PREFIXES and doc[m.end() : m.end() + 1] in ("'", '"')
            ):
                return word
            if word not in mapping:
                words, cum = draws.get(_shape(word), anything)
                for _ in range(_REDRAWS):
                    new = rng.choices(words, cum_weights=cum)[0]
                    if new != word and new not in used:
                        break
                mapping[word] = new
                used.add(new)
            return mapping[word]

        return _WORD.sub(replace, doc)

    return [disguise(doc) for doc in docs]


def _shape(word: str) -> tuple:
    if word[0].isdigit():
        return ("number", len(word))
    core = word.lstrip("_")
    case = "upper" if core.isupper() else "capital" if core[:1].isupper() else "lower"
    return ("builtin" if word in _BUILTINS else "name", min(len(word) - len(core), 2), case)


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
