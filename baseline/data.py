"""Datasets in the challenge's shard format: write, read, build from documents, fetch the official ones.

A dataset lives under a root folder, laid out like the challenge's `data/` folder:

    root/datasets/<name>/fineweb_train_000000.bin ...   uint16 token shards, each doc = [BOS] + tokens
    root/datasets/<name>/fineweb_val_000000.bin ...
    root/datasets/<name>/manifest.json                   counts, tokenizer hash, split rule
    root/tokenizers/<name>.model (+ .vocab)              the SentencePiece model the shards were encoded with

Shards are written atomically and a build is staged in a hidden folder that is renamed into place only
when complete, so an interrupted build leaves either the previous dataset or nothing, never half a shard.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import lzma
import os
import shutil
import sysconfig
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO

import numpy as np
import sentencepiece as spm
from pydantic import BaseModel

# Shard format (challenge `train_gpt.py:load_data_shard`): 256 little-endian int32 header, uint16 body.
SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
MAX_VOCAB = 1 << 16  # uint16 tokens
MAX_SHARD_TOKENS = (1 << 31) - 1  # the header stores the count as int32

# Official SentencePiece settings (challenge `download_hf_docs_and_tokenize.py`).
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
CHARACTER_COVERAGE = 0.999
NORMALIZATION = "nmt_nfkc"
TOKENIZER_TRAIN_MAX_BYTES = 200_000_000  # cap on text fed to the tokenizer trainer (the first train docs)
TOKENIZER_MAX_LINE_BYTES = 1 << 16  # longer lines are skipped by the trainer

ENCODE_BATCH_DOCS = 256
MIN_DEMO_DOC_BYTES = 200  # stdlib files shorter than this are stubs, not documents
DEMO_DOC_TARGET_BYTES = 8_000  # long modules are cut at blank lines into docs of about this size
DEMO_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}

OFFICIAL_BASE_URL = "https://huggingface.co/datasets/willdepueoai/parameter-golf/resolve/main/datasets"
DEFAULT_SOURCE = OFFICIAL_BASE_URL
FETCH_TIMEOUT_S = 60
FETCH_CHUNK_BYTES = 1 << 20

MANIFEST_NAME = "manifest.json"
TRAIN_PATTERN = "fineweb_train_{:06d}.bin"
VAL_PATTERN = "fineweb_val_{:06d}.bin"


class ShardError(ValueError):
    """A shard file is missing, truncated or not in the challenge format; the message names the file."""


class DataError(ValueError):
    """Bad input documents or arguments for a dataset build."""


class TokenizerError(ValueError):
    """A tokenizer could not be trained or loaded."""


class FetchError(RuntimeError):
    """The official data could not be fetched from the given source."""


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


# --------------------------------------------------------------------------------------------------
# Shards


def write_shard(path: Path, tokens: np.ndarray) -> None:
    """Write tokens as one shard; a temp file in the same folder is fsynced then renamed over `path`."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ShardError(f"{path.name}: tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size > MAX_SHARD_TOKENS:
        raise ShardError(f"{path.name}: {tokens.size} tokens do not fit a shard (max {MAX_SHARD_TOKENS})")
    if tokens.dtype.kind not in "iu":
        raise ShardError(f"{path.name}: tokens must be integers, got {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= MAX_VOCAB):
        raise ShardError(f"{path.name}: token ids must lie in [0, {MAX_VOCAB})")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    with _atomic_file(path) as f:
        f.write(header.tobytes())
        f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())


def shard_token_count(path: Path) -> int:
    """Validate a shard's header against its file size and return its token count (reads 1 KiB)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file not found") from None
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard ({e.strerror})") from None
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({len(raw)} of {HEADER_BYTES} bytes)")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic {int(header[0])}, expected {SHARD_MAGIC}")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported version {int(header[1])}, expected {SHARD_VERSION}")
    n = int(header[2])
    if n < 0:
        raise ShardError(f"{path}: negative token count {n}")
    expected = HEADER_BYTES + n * TOKEN_DTYPE.itemsize
    if size != expected:
        raise ShardError(f"{path}: file is {size} bytes but the header's {n} tokens need {expected}")
    return n


def read_shard(path: Path, *, mmap: bool = False) -> np.ndarray:
    """Return a shard's tokens as uint16 (a read-only memory map when `mmap`), after validating it."""
    n = shard_token_count(path)
    if mmap and n:
        return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,))
    tokens = np.fromfile(path, dtype=TOKEN_DTYPE, count=n, offset=HEADER_BYTES)
    return tokens.astype(np.uint16, copy=False)


@contextmanager
def _atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Yield a temp file next to `path`; on success fsync and rename it over `path`, else delete it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _staging_dir(parent: Path, prefix: str) -> Path:
    """A hidden temp folder with ordinary permissions (mkdtemp makes 0700), renamed into place later."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~_umask())
    return path


# --------------------------------------------------------------------------------------------------
# Documents


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


# --------------------------------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(
    docs: Iterable[str],
    out_prefix: Path,
    vocab_size: int,
    *,
    byte_fallback: bool = True,
    max_bytes: int = TOKENIZER_TRAIN_MAX_BYTES,
) -> Path:
    """Train a BPE SentencePiece model with the challenge's settings; writes <prefix>.model and .vocab.

    Fed line by line from the first documents (up to `max_bytes`), in order, single-threaded: the same
    docs give the same pieces. byte_fallback needs 256 byte pieces plus the corpus's characters, so tiny
    vocabularies (e.g. 256) must pass byte_fallback=False; rare characters then encode to <unk>.
    """
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    lines = list(_training_lines(docs, max_bytes))
    if not lines:
        raise TokenizerError("no text to train the tokenizer on")
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(out_prefix),
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=CHARACTER_COVERAGE,
            byte_fallback=byte_fallback,
            split_digits=True,
            normalization_rule_name=NORMALIZATION,
            add_dummy_prefix=False,
            pad_id=PAD_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            hard_vocab_limit=False,
            max_sentence_length=TOKENIZER_MAX_LINE_BYTES,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1].split("]")[-1].strip()
        raise TokenizerError(f"tokenizer training failed (vocab_size={vocab_size}): {reason}") from None
    return out_prefix.with_suffix(".model")


def _training_lines(docs: Iterable[str], max_bytes: int) -> Iterator[str]:
    used = 0
    for doc in docs:
        for line in doc.splitlines():
            if line.strip():
                yield line
                used += len(line)
        if used >= max_bytes:
            return


def load_tokenizer(path: Path) -> spm.SentencePieceProcessor:
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer model not found")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError):
        raise TokenizerError(f"{path}: not a SentencePiece model") from None
    if sp.vocab_size() > MAX_VOCAB:
        raise TokenizerError(f"{path}: vocab {sp.vocab_size()} does not fit uint16 tokens")
    return sp


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(FETCH_CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Building a dataset


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
    with _atomic_file(staging / MANIFEST_NAME) as f:
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


# --------------------------------------------------------------------------------------------------
# Fetching the official data


def fetch_official(
    dest_root: Path, variant: str = "sp1024", train_shards: int = 1, source: str | Path = DEFAULT_SOURCE
) -> DatasetInfo:
    """Download the challenge's published shards and tokenizer into dest_root (build_dataset's layout).

    `source` is the remote root URL or a local folder laid out the same way: `datasets/fineweb10B_<variant>/
    fineweb_{train,val}_%06d.bin`, `tokenizers/fineweb_<vocab>_bpe.model`, optional `manifest.json` (its
    shard counts and tokenizer paths win; without it, one val shard is assumed). Valid files already
    present are skipped; downloads go to a temp file, are checked, then renamed.
    """
    dest_root = Path(dest_root)
    if not (variant.startswith("sp") and variant[2:].isdigit()):
        raise FetchError(f"unsupported variant {variant!r}; expected sp<VOCAB>, e.g. sp1024")
    if train_shards < 0:
        raise FetchError(f"train_shards must be non-negative, got {train_shards}")
    name = f"fineweb10B_{variant}"
    src = _Source(source)
    val_count, max_train, tok_paths = _remote_layout(src, name, int(variant[2:]))
    if max_train is not None and train_shards > max_train:
        raise FetchError(f"{variant} has only {max_train} train shards at {src}, requested {train_shards}")

    rel_val = [f"datasets/{name}/" + VAL_PATTERN.format(i) for i in range(val_count)]
    rel_train = [f"datasets/{name}/" + TRAIN_PATTERN.format(i) for i in range(train_shards)]
    for rel in rel_val + rel_train:
        src.get(rel, dest_root / rel, check=shard_token_count)
    for i, rel in enumerate(tok_paths):
        src.get(rel, dest_root / rel, check=load_tokenizer, optional=i > 0)

    dataset_dir = dest_root / "datasets" / name
    tokenizer = dest_root / tok_paths[0]
    sp = load_tokenizer(tokenizer)
    val_files = [dest_root / r for r in rel_val]
    train_files = [dest_root / r for r in rel_train]
    manifest = {
        "name": name,
        "vocab_size": sp.vocab_size(),
        "bos_id": BOS_ID,
        "source": str(source),
        "tokenizer": {"path": tok_paths[0], "sha256": file_sha256(tokenizer)},
        "split": {"rule": "official"},
        "docs": {"train": _count_bos(train_files), "val": _count_bos(val_files)},
        "tokens": {
            "train": sum(map(shard_token_count, train_files)),
            "val": sum(map(shard_token_count, val_files)),
        },
        "shards": {
            "train": [{"file": p.name, "tokens": shard_token_count(p)} for p in train_files],
            "val": [{"file": p.name, "tokens": shard_token_count(p)} for p in val_files],
        },
    }
    with _atomic_file(dataset_dir / MANIFEST_NAME) as f:
        f.write((json.dumps(manifest, indent=2) + "\n").encode())
    return load_dataset(dataset_dir)


def _count_bos(files: list[Path]) -> int:
    return sum(int(np.count_nonzero(read_shard(p, mmap=True) == BOS_ID)) for p in files)


def _remote_layout(src: _Source, name: str, vocab: int) -> tuple[int, int | None, list[str]]:
    """(val shard count, train shard count or None, tokenizer files) from the source's manifest if any."""
    default_tok = [f"tokenizers/fineweb_{vocab}_bpe.model", f"tokenizers/fineweb_{vocab}_bpe.vocab"]
    raw = src.read_optional(MANIFEST_NAME)
    if raw is None:
        return 1, None, default_tok
    try:
        m = json.loads(raw)
        entry = next(d for d in m["datasets"] if d.get("name") == name)
        stats = entry["stats"]
        tok = next((t for t in m.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), {})
        paths = [str(tok[k]) for k in ("model_path", "vocab_path") if tok.get(k)]
        return int(stats["files_val"]), int(stats["files_train"]), paths or default_tok
    except StopIteration:
        raise FetchError(f"{name} is not listed in {src}/{MANIFEST_NAME}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise FetchError(f"{src}/{MANIFEST_NAME}: malformed manifest") from None


class _Source:
    """A remote root URL or a local folder with the official layout."""

    def __init__(self, source: str | Path):
        text = str(source)
        self.url = text.rstrip("/") if text.startswith(("http://", "https://")) else None
        self.folder = None if self.url else Path(source)
        if self.folder is not None and not self.folder.is_dir():
            raise FetchError(f"{self.folder}: source folder not found")

    def __str__(self) -> str:
        return self.url or str(self.folder)

    def read_optional(self, rel: str) -> bytes | None:
        if self.folder is not None:
            path = self.folder / rel
            return path.read_bytes() if path.is_file() else None
        try:
            with urllib.request.urlopen(f"{self.url}/{rel}", timeout=FETCH_TIMEOUT_S) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise FetchError(f"{self.url}/{rel}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise FetchError(f"{self.url}/{rel}: unreachable ({getattr(e, 'reason', e)})") from None

    def get(self, rel: str, dest: Path, *, check, optional: bool = False) -> None:
        """Copy one file to dest unless a valid copy is there; `check(path)` raises on a bad file."""
        if dest.is_file():
            try:
                check(dest)
                return
            except (ShardError, TokenizerError):
                pass  # re-download a corrupt or partial file
        if self.folder is not None and not (self.folder / rel).is_file():
            if optional:
                return
            raise FetchError(f"{self.folder / rel}: missing from the source")
        tmp = None
        try:
            with _atomic_file(dest) as f:
                tmp = Path(f.name)
                if not self._copy_into(rel, f, optional):
                    raise _Skip
                f.flush()
                check(tmp)
        except _Skip:
            return
        except (ShardError, TokenizerError) as e:
            raise FetchError(f"{self}/{rel}: downloaded file is invalid: {e}") from None

    def _copy_into(self, rel: str, f: IO[bytes], optional: bool) -> bool:
        if self.folder is not None:
            with open(self.folder / rel, "rb") as s:
                shutil.copyfileobj(s, f, FETCH_CHUNK_BYTES)
            return True
        url = f"{self.url}/{rel}"
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as r:
                shutil.copyfileobj(r, f, FETCH_CHUNK_BYTES)
            return True
        except urllib.error.HTTPError as e:
            if e.code == 404 and optional:
                return False
            raise FetchError(f"{url}: HTTP {e.code}" + (" (not found)" if e.code == 404 else "")) from None
        except (urllib.error.URLError, OSError) as e:
            raise FetchError(f"{url}: unreachable ({getattr(e, 'reason', e)})") from None


class _Skip(Exception):
    """An optional file is absent from the source."""
