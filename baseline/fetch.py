"""Fetch the leaderboard's FineWeb shards and tokenizers from their published roots (or a local copy).

The variants (sp1024, sp4096, sp8192, caseops-sp8192) and where each lives are in variants.py; the host is
`HF_ENDPOINT` (huggingface_hub's variable) when set, so a mirror or a test server stands in for it.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import numpy as np

from agentgolf.baseline.dataset import (
    MANIFEST_NAME,
    TRAIN_PATTERN,
    VAL_PATTERN,
    DatasetInfo,
    file_sha256,
    load_dataset,
)
from agentgolf.baseline.shards import ShardError, atomic_file, read_shard, shard_token_count
from agentgolf.baseline.tokenizer import BOS_ID, TokenizerError, load_tokenizer
from agentgolf.baseline.variants import VAL_BYTES_PATTERN, VARIANTS, Variant, variant_named
from agentgolf.errors import AgentgolfError

OFFICIAL_BASE_URL = VARIANTS["sp1024"].base_url()
DEFAULT_SOURCE = None  # the variant's own published root
FETCH_TIMEOUT_S = 60
FETCH_CHUNK_BYTES = 1 << 20


class FetchError(AgentgolfError, RuntimeError):
    """The official data could not be fetched from the given source."""


def fetch_official(
    dest_root: Path,
    variant: str = "sp1024",
    train_shards: int = 1,
    source: str | Path | None = DEFAULT_SOURCE,
) -> DatasetInfo:
    """Download a variant's published shards and tokenizer into dest_root (build_dataset's layout).

    `source` (default: the variant's published root) is a root URL or a local folder laid out the same way:
    `datasets/<dataset>/fineweb_{train,val}_%06d.bin`, the tokenizer under `tokenizers/`, optional
    `manifest.json` (its shard counts and tokenizer paths win; without it, one val shard is assumed), and for
    CaseOps the byte sidecar `fineweb_val_bytes_%06d.bin` beside each val shard. Valid files already present
    are skipped; downloads go to a temp file, are checked, then renamed.
    """
    dest_root = Path(dest_root)
    known = _variant(variant)
    if train_shards < 0:
        raise FetchError(f"train_shards must be non-negative, got {train_shards}")
    name = known.dataset
    src = _Source(source if source is not None else known.base_url())
    val_count, max_train, tok_paths = _remote_layout(src, known)
    if max_train is not None and train_shards > max_train:
        raise FetchError(f"{variant} has only {max_train} train shards at {src}, requested {train_shards}")

    rel_val = [f"datasets/{name}/" + VAL_PATTERN.format(i) for i in range(val_count)]
    rel_train = [f"datasets/{name}/" + TRAIN_PATTERN.format(i) for i in range(train_shards)]
    for rel in rel_val + rel_train:
        src.get(rel, dest_root / rel, check=shard_token_count)
    rel_bytes = [f"datasets/{name}/" + VAL_BYTES_PATTERN.format(i) for i in range(val_count)]
    for rel, val_rel in zip(rel_bytes if known.byte_sidecar else [], rel_val, strict=False):
        src.get(rel, dest_root / rel, check=_parallel_to(dest_root / val_rel))
    for i, rel in enumerate(tok_paths):
        src.get(rel, dest_root / rel, check=load_tokenizer, optional=i > 0)

    dataset_dir = dest_root / "datasets" / name
    tokenizer = dest_root / tok_paths[0]
    sp = load_tokenizer(tokenizer)
    val_files = [dest_root / r for r in rel_val]
    train_files = [dest_root / r for r in rel_train]
    manifest = {
        "name": name,
        "variant": known.name,
        "vocab_size": sp.vocab_size(),
        "bos_id": BOS_ID,
        "source": str(src),
        "published_train_shards": max_train if max_train is not None else known.train_shards,
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
    if known.byte_sidecar:
        manifest["val_bytes"] = [Path(r).name for r in rel_bytes]
    with atomic_file(dataset_dir / MANIFEST_NAME) as f:
        f.write((json.dumps(manifest, indent=2) + "\n").encode())
    return load_dataset(dataset_dir)


def _variant(variant: str) -> Variant:
    """A known export, or `sp<VOCAB>` laid out like the official one at the official root."""
    known = variant_named(variant)
    if known is not None:
        return known
    if variant.startswith("sp") and variant[2:].isdigit():
        vocab = int(variant[2:])
        return VARIANTS["sp1024"].model_copy(
            update={
                "name": variant,
                "dataset": f"fineweb10B_{variant}",
                "tokenizer_model": f"tokenizers/fineweb_{vocab}_bpe.model",
                "vocab_size": vocab,
                "val_tokens_logged": None,
            }
        )
    choices = ", ".join(VARIANTS)
    raise FetchError(f"unsupported variant {variant!r}; expected one of {choices} (or sp<VOCAB>)")


def _parallel_to(val_shard: Path):
    """A sidecar's check: a valid shard with as many entries as its val shard has tokens."""

    def check(path: Path) -> None:
        n, want = shard_token_count(path), shard_token_count(val_shard)
        if n != want:
            raise ShardError(f"{path.name}: {n} byte counts for {want} validation tokens in {val_shard.name}")

    return check


def _count_bos(files: list[Path]) -> int:
    return sum(int(np.count_nonzero(read_shard(p, mmap=True) == BOS_ID)) for p in files)


def _remote_layout(src: _Source, known: Variant) -> tuple[int, int | None, list[str]]:
    """(val shard count, train shard count or None, tokenizer files) from the source's manifest if any."""
    name = known.dataset
    default_tok = [known.tokenizer_model, known.tokenizer_vocab]
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
            with atomic_file(dest) as f:
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
