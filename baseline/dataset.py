"""Datasets: build train/val shards and a tokenizer from documents, and load a built dataset back.

A dataset lives under a root folder, laid out like the challenge's `data/` folder:

    root/datasets/<name>/fineweb_train_000000.bin ...   uint16 token shards, each doc = [BOS] + tokens
    root/datasets/<name>/fineweb_val_000000.bin ...
    root/datasets/<name>/manifest.json                   counts, tokenizer hash, split rule
    root/tokenizers/<name>.model (+ .vocab)              the SentencePiece model the shards were encoded with

Shards are written atomically and a build is staged in a hidden folder that is renamed into place only
when complete, so an interrupted build leaves either the previous dataset or nothing, never half a shard.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from agentgolf.baseline.corpus import DataError
from agentgolf.baseline.shards import (
    HEADER_BYTES,
    MAX_SHARD_TOKENS,
    MAX_VOCAB,
    SHARD_MAGIC,
    SHARD_VERSION,
    atomic_file,
    current_umask,
    shard_token_count,
    write_shard,
)
from agentgolf.baseline.tokenizer import BOS_ID, load_tokenizer, train_tokenizer

ENCODE_BATCH_DOCS = 256

MANIFEST_NAME = "manifest.json"
TRAIN_PATTERN = "fineweb_train_{:06d}.bin"
VAL_PATTERN = "fineweb_val_{:06d}.bin"
HASH_CHUNK_BYTES = 1 << 20


class DatasetInfo(BaseModel):
    name: str
    root: Path  # holds datasets/<name>/ and tokenizers/
    dataset_dir: Path
    tokenizer: Path
    vocab_size: int
    train_files: list[Path]
    val_files: list[Path]
    train_tokens: int
    val_tokens: int
    train_docs: int
    val_docs: int


class _ShardWriter:
    """Accumulates encoded docs and writes full shards of `shard_tokens` as they fill."""

    def __init__(self, folder: Path, pattern: str, shard_tokens: int):
        self.folder, self.pattern, self.shard_tokens = folder, pattern, shard_tokens
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.files: list[Path] = []
        self.tokens = 0
        self.docs = 0

    def add(self, encoded: list[list[int]]) -> None:
        for ids in encoded:
            doc = np.empty(len(ids) + 1, dtype=np.uint16)
            doc[0] = BOS_ID
            doc[1:] = ids
            self.buffer.append(doc)
            self.buffered += doc.size
            self.docs += 1
        while self.buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def close(self) -> None:
        if self.buffered:
            self._flush(self.buffered)

    def _flush(self, n: int) -> None:
        flat = np.concatenate(self.buffer)
        path = self.folder / self.pattern.format(len(self.files))
        write_shard(path, flat[:n])
        self.files.append(path)
        self.tokens += n
        rest = flat[n:]
        self.buffer = [rest] if rest.size else []
        self.buffered = rest.size


def build_dataset(
    docs: Iterable[str],
    root: Path,
    *,
    name: str,
    vocab_size: int = 1024,
    tokenizer: Path | None = None,
    val_docs: int | None = None,
    val_fraction: float = 0.05,
    shard_tokens: int = 10**8,
    progress: bool = False,
    val_docs_iter: Iterable[str] | None = None,
    byte_fallback: bool = True,
) -> DatasetInfo:
    """Tokenize documents into train/val shards under `root` (layout in the module docstring).

    Validation is held out by document: `val_docs_iter` when given (then all of `docs` train), else the
    first `val_docs` docs, else the first max(1, round(val_fraction * n)) docs. A new tokenizer is trained
    on training docs only; a given `tokenizer` .model is copied in and reused (its own vocab size wins).
    """
    root = Path(root)
    _check_build_args(name, vocab_size, val_docs, val_fraction, shard_tokens)
    val_iter, train_iter, split = _split_docs(docs, val_docs, val_fraction, val_docs_iter)
    datasets_dir = root / "datasets"
    datasets_dir.mkdir(parents=True, exist_ok=True)
    staging = _staging_dir(datasets_dir, f".{name}.building-")
    try:
        with _progress(progress) as bar:
            if tokenizer is None:
                train_iter = list(train_iter)  # needed twice: tokenizer training, then encoding
                if not train_iter:
                    raise DataError("no training documents")
                task = bar.add_task("training tokenizer", total=None) if bar else None
                model = train_tokenizer(
                    train_iter, staging / "tokenizer", vocab_size, byte_fallback=byte_fallback
                )
                if bar:
                    bar.update(task, total=1, completed=1)
            else:
                model = _copy_tokenizer(Path(tokenizer), staging / "tokenizer.model")
            sp = load_tokenizer(model)
            val = _encode_split(sp, val_iter, staging, VAL_PATTERN, shard_tokens, bar, "encoding val")
            train = _encode_split(sp, train_iter, staging, TRAIN_PATTERN, shard_tokens, bar, "encoding train")
        if val.docs == 0 or train.docs == 0:
            raise DataError(
                f"need at least one val and one train document (got {val.docs} val, {train.docs} train)"
            )
        return _install(staging, root, name, sp.vocab_size(), val, train, split)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_build_args(
    name: str, vocab_size: int, val_docs: int | None, val_fraction: float, shard_tokens: int
) -> None:
    if not name or "/" in name or name.startswith("."):
        raise DataError(f"bad dataset name {name!r}")
    if not 0 < vocab_size <= MAX_VOCAB:
        raise DataError(f"vocab_size must be in 1..{MAX_VOCAB}, got {vocab_size}")
    if val_docs is not None and val_docs < 1:
        raise DataError(f"val_docs must be at least 1, got {val_docs}")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0 < shard_tokens <= MAX_SHARD_TOKENS:
        raise DataError(f"shard_tokens must be in 1..{MAX_SHARD_TOKENS}, got {shard_tokens}")


def _split_docs(
    docs: Iterable[str], val_docs: int | None, val_fraction: float, val_docs_iter: Iterable[str] | None
) -> tuple[Iterable[str], Iterable[str], dict]:
    """Return (val docs, train docs, split rule for the manifest); streams unless a fraction is needed."""
    if val_docs_iter is not None:
        return val_docs_iter, docs, {"rule": "separate_val_docs"}
    it = iter(docs)
    if val_docs is not None:
        return list(itertools.islice(it, val_docs)), it, {"rule": "first_n_docs", "val_docs": val_docs}
    all_docs = list(it)
    n_val = max(1, round(val_fraction * len(all_docs)))
    rule = {"rule": "first_fraction_of_docs", "val_fraction": val_fraction, "val_docs": n_val}
    return all_docs[:n_val], all_docs[n_val:], rule


def _copy_tokenizer(src: Path, dest: Path) -> Path:
    load_tokenizer(src)  # fail early, with the source's name, on a bad model
    shutil.copyfile(src, dest)
    if src.with_suffix(".vocab").is_file():
        shutil.copyfile(src.with_suffix(".vocab"), dest.with_suffix(".vocab"))
    return dest


def _encode_split(sp, docs: Iterable[str], folder: Path, pattern: str, shard_tokens: int, bar, label: str):
    writer = _ShardWriter(folder, pattern, shard_tokens)
    task = bar.add_task(label, total=len(docs) if isinstance(docs, list) else None) if bar else None
    it = iter(docs)
    while batch := list(itertools.islice(it, ENCODE_BATCH_DOCS)):
        if not all(isinstance(d, str) for d in batch):
            raise DataError("documents must be strings")
        writer.add(sp.encode(batch, out_type=int))
        if bar:
            bar.advance(task, len(batch))
    writer.close()
    return writer


def _install(
    staging: Path, root: Path, name: str, vocab_size: int, val: _ShardWriter, train: _ShardWriter, split: dict
):
    """Write the manifest, then move the tokenizer and the finished dataset folder into place."""
    tok_dir = root / "tokenizers"
    tok_dir.mkdir(parents=True, exist_ok=True)
    tok_model = tok_dir / f"{name}.model"
    manifest = {
        "name": name,
        "vocab_size": vocab_size,
        "bos_id": BOS_ID,
        "shard_format": {"magic": SHARD_MAGIC, "version": SHARD_VERSION, "header_bytes": HEADER_BYTES},
        "tokenizer": {"path": f"tokenizers/{name}.model", "sha256": file_sha256(staging / "tokenizer.model")},
        "split": split,
        "docs": {"train": train.docs, "val": val.docs},
        "tokens": {"train": train.tokens, "val": val.tokens},
        "shards": {
            "train": [{"file": p.name, "tokens": shard_token_count(p)} for p in train.files],
            "val": [{"file": p.name, "tokens": shard_token_count(p)} for p in val.files],
        },
    }
    with atomic_file(staging / MANIFEST_NAME) as f:
        f.write((json.dumps(manifest, indent=2) + "\n").encode())
    for suffix in (".model", ".vocab"):
        src = staging / f"tokenizer{suffix}"
        if src.is_file():
            os.replace(src, tok_model.with_suffix(suffix))
        elif suffix == ".vocab":
            tok_model.with_suffix(".vocab").unlink(missing_ok=True)
    final = root / "datasets" / name
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=final.parent))
        os.replace(final, old / name)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    return load_dataset(final)


def load_dataset(dataset_dir: Path) -> DatasetInfo:
    """Read a dataset folder written by build_dataset or fetch_official back from its manifest."""
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / MANIFEST_NAME
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        root = dataset_dir.parent.parent
        return DatasetInfo(
            name=m["name"],
            root=root,
            dataset_dir=dataset_dir,
            tokenizer=root / m["tokenizer"]["path"],
            vocab_size=m["vocab_size"],
            train_files=[dataset_dir / s["file"] for s in m["shards"]["train"]],
            val_files=[dataset_dir / s["file"] for s in m["shards"]["val"]],
            train_tokens=m["tokens"]["train"],
            val_tokens=m["tokens"]["val"],
            train_docs=m["docs"]["train"],
            val_docs=m["docs"]["val"],
        )
    except FileNotFoundError:
        raise DataError(f"{path}: no dataset manifest") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{path}: malformed dataset manifest") from None


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _staging_dir(parent: Path, prefix: str) -> Path:
    """A hidden temp folder with ordinary permissions (mkdtemp makes 0700), renamed into place later."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~current_umask())
    return path


def file_sha256(path: Path, cache: dict[str, Any] | None = None) -> str:
    """sha256 of a file; with `cache`, memoized on (path, size, mtime) so large shards are hashed once."""
    path = Path(path)
    stat = path.stat()
    key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    if cache is not None and key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    if cache is not None:
        cache[key] = digest.hexdigest()
    return digest.hexdigest()
