"""Shard format, dataset builds (split, atomicity, tokenizer reuse), document readers and fetching."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from agentgolf.baseline.corpus import DataError, demo_corpus, read_docs
from agentgolf.baseline.dataset import build_dataset, file_sha256, load_dataset
from agentgolf.baseline.fetch import FetchError, fetch_official
from agentgolf.baseline.shards import (
    HEADER_BYTES,
    SHARD_MAGIC,
    ShardError,
    read_shard,
    shard_token_count,
    write_shard,
)
from agentgolf.baseline.tokenizer import BOS_ID, TokenizerError, train_tokenizer


def split_docs(tokens: np.ndarray) -> list[np.ndarray]:
    """Cut a BOS-prefixed token stream back into documents (without their BOS)."""
    starts = np.flatnonzero(tokens == BOS_ID)
    assert starts.size and starts[0] == 0, "stream must start with BOS"
    return [tokens[a + 1 : b] for a, b in zip(starts, [*starts[1:], tokens.size], strict=True)]


def leftovers(root: Path) -> list[str]:
    """Temp files or hidden staging folders anywhere under root."""
    found = []
    for _, dirnames, filenames in os.walk(root):
        found += [n for n in dirnames + filenames if n.startswith(".") or n.endswith(".tmp")]
    return found


def pieces(model: Path) -> list[str]:
    sp = spm.SentencePieceProcessor(model_file=str(model))
    return [sp.id_to_piece(i) for i in range(sp.vocab_size())]


# --- shards -------------------------------------------------------------------------------------


def test_shard_roundtrip(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 1 << 16, size=5000).astype(np.uint16)
    tokens[:2] = [0, 65535]
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, tokens)
    assert path.stat().st_size == HEADER_BYTES + 2 * tokens.size
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    header = np.fromfile(path, dtype="<i4", count=3)
    assert header.tolist() == [SHARD_MAGIC, 1, tokens.size]
    back = read_shard(path)
    assert back.dtype == np.uint16 and np.array_equal(back, tokens)
    assert np.array_equal(read_shard(path, mmap=True), tokens)
    write_shard(path, np.arange(7, dtype=np.int64))  # replaces in place
    assert read_shard(path).tolist() == list(range(7))
    write_shard(tmp_path / "empty.bin", np.zeros(0, dtype=np.uint16))
    assert read_shard(tmp_path / "empty.bin").size == read_shard(tmp_path / "empty.bin", mmap=True).size == 0
    assert leftovers(tmp_path) == []


def _header(magic=SHARD_MAGIC, version=1, n=10) -> bytes:
    h = np.zeros(256, dtype="<i4")
    h[:3] = [magic, version, n]
    return h.tobytes()


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "not found"),
        (b"\x00" * 100, "truncated header"),
        (_header(magic=123) + b"\x00" * 20, "bad magic 123"),
        (_header(version=2) + b"\x00" * 20, "unsupported version 2"),
        (_header(n=10) + b"\x00" * 19, "header's 10 tokens need 1044"),
        (_header(n=10) + b"\x00" * 22, "file is 1046 bytes"),
        (_header(n=-1), "negative token count"),
    ],
)
def test_malformed_shard_names_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "fineweb_train_000003.bin"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ShardError, match=re.escape(problem)) as e:
        read_shard(path)
    assert "fineweb_train_000003.bin" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "tokens", [np.zeros((2, 3), np.uint16), np.array([-1, 2]), np.array([70000]), np.array([1.5, 2.0])]
)
def test_write_shard_rejects_bad_tokens(tmp_path, tokens):
    with pytest.raises(ShardError, match="bad.bin"):
        write_shard(tmp_path / "bad.bin", tokens)
    assert list(tmp_path.iterdir()) == []


# --- demo corpus and tokenizer --------------------------------------------------------------------


def test_demo_corpus_is_deterministic_and_bounded():
    docs = demo_corpus(200_000)
    assert docs == demo_corpus(200_000)
    assert 10 <= len(docs) and sum(len(d.encode()) for d in docs) <= 200_000
    assert all(d.strip() for d in docs)
    assert demo_corpus(50_000) == docs[: len(demo_corpus(50_000))]


def test_train_tokenizer_deterministic_and_too_small_vocab(tmp_path):
    docs = demo_corpus(60_000)
    a = train_tokenizer(docs, tmp_path / "a", 300, byte_fallback=False)
    b = train_tokenizer(docs, tmp_path / "b", 300, byte_fallback=False)
    assert a.name == "a.model" and (tmp_path / "a.vocab").is_file()
    assert pieces(a) == pieces(b) and len(pieces(a)) == 300
    assert pieces(a)[:4] == ["<pad>", "<s>", "</s>", "<unk>"]
    with pytest.raises(TokenizerError, match="vocab_size=256") as e:
        train_tokenizer(docs, tmp_path / "c", 256)  # 256 byte pieces + characters do not fit
    assert "\n" not in str(e.value)


# --- build_dataset --------------------------------------------------------------------------------


def test_tiny_dataset_fixture_layout(tiny_dataset):
    info = tiny_dataset
    assert info.vocab_size == 256 and info.tokenizer == info.root / "tokenizers" / "tiny.model"
    assert info.dataset_dir == info.root / "datasets" / "tiny"
    assert info.dataset_dir.stat().st_mode & 0o077 == (info.root / "datasets").stat().st_mode & 0o077
    assert [p.name for p in info.val_files] == ["fineweb_val_000000.bin"]
    assert 1000 < info.val_tokens < 10_000 and info.train_tokens > 50_000
    assert load_dataset(info.dataset_dir) == info
    manifest = json.loads((info.dataset_dir / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == file_sha256(info.tokenizer)
    assert manifest["split"] == {"rule": "first_n_docs", "val_docs": 2}
    assert leftovers(info.root) == []


def test_split_is_disjoint_and_counts_add_up(tmp_path):
    docs = demo_corpus(150_000)
    info = build_dataset(
        docs, tmp_path, name="d", vocab_size=300, val_fraction=0.1, shard_tokens=20_000, byte_fallback=False
    )
    n_val = round(0.1 * len(docs))
    assert (info.val_docs, info.train_docs) == (n_val, len(docs) - n_val)
    assert len(info.train_files) > 1  # several shards; docs span shard boundaries
    sp = spm.SentencePieceProcessor(model_file=str(info.tokenizer))
    val = np.concatenate([read_shard(p) for p in info.val_files])
    train = np.concatenate([read_shard(p) for p in info.train_files])
    assert (val.size, train.size) == (info.val_tokens, info.train_tokens)
    assert all(read_shard(p).size == 20_000 for p in info.train_files[:-1])
    val_docs, train_docs = split_docs(val), split_docs(train)
    assert (len(val_docs), len(train_docs)) == (info.val_docs, info.train_docs)
    # each split holds exactly its own documents, in order
    assert [d.tolist() for d in val_docs] == sp.encode(docs[:n_val])
    assert [d.tolist() for d in train_docs] == sp.encode(docs[n_val:])
    train_text = "\n".join(sp.decode(d.tolist()) for d in train_docs)
    assert not any(sp.decode(d.tolist()) in train_text for d in val_docs)
    # the tokenizer saw training docs only: it equals one trained on exactly those
    assert pieces(info.tokenizer) == pieces(
        train_tokenizer(docs[n_val:], tmp_path / "ref", 300, byte_fallback=False)
    )


def test_reuse_given_tokenizer_and_separate_val_docs(tmp_path, tiny_dataset):
    docs = demo_corpus(80_000)
    val = ["A held out document about sentencepiece.", "Another one, with digits 12345."]
    info = build_dataset(
        docs, tmp_path, name="reuse", tokenizer=tiny_dataset.tokenizer, val_docs_iter=iter(val)
    )
    assert info.vocab_size == 256  # the given model's size, not the default 1024
    assert file_sha256(info.tokenizer) == file_sha256(tiny_dataset.tokenizer)
    assert info.tokenizer == tmp_path / "tokenizers" / "reuse.model"
    assert (info.val_docs, info.train_docs) == (2, len(docs))
    sp = spm.SentencePieceProcessor(model_file=str(tiny_dataset.tokenizer))
    assert read_shard(info.val_files[0]).tolist() == [BOS_ID, *sp.encode(val[0]), BOS_ID, *sp.encode(val[1])]
    manifest = json.loads((info.dataset_dir / "manifest.json").read_text())
    assert manifest["split"] == {"rule": "separate_val_docs"}
    with pytest.raises(TokenizerError, match="nope.model"):
        build_dataset(docs, tmp_path, name="x", tokenizer=tmp_path / "nope.model")


def _failing_docs(docs, fail_after, exc, root: Path | None = None, staged: list[int] | None = None):
    yield from docs[:fail_after]
    if staged is not None:  # what the build had written when it broke
        staged.append(sum(1 for _ in root.glob("datasets/.*building*/fineweb_train_*.bin")))
    raise exc


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_build_leaves_no_partial_files(tmp_path, tiny_dataset, exc):
    docs = [
        line for doc in demo_corpus(120_000) for line in doc.splitlines() if line.strip()
    ]  # many small docs
    kw = dict(name="d", tokenizer=tiny_dataset.tokenizer, val_docs=1, shard_tokens=5_000)
    before = build_dataset(docs[:6], tmp_path, **kw)  # a previous good build of the same name
    before_bytes = {p.name: p.read_bytes() for p in before.dataset_dir.iterdir()}
    staged: list[int] = []
    with pytest.raises(type(exc)):
        build_dataset(_failing_docs(docs, len(docs) - 1, exc, tmp_path, staged), tmp_path, **kw)
    assert staged[0] >= 3  # several full shards existed before the failure
    assert leftovers(tmp_path) == []
    assert {p.name: p.read_bytes() for p in before.dataset_dir.iterdir()} == before_bytes
    for path in tmp_path.rglob("*.bin"):
        shard_token_count(path)  # every shard left is whole
    with pytest.raises(type(exc)):
        build_dataset(_failing_docs(docs, 10, exc), tmp_path, **{**kw, "name": "fresh"})
    assert not (tmp_path / "datasets" / "fresh").exists() and leftovers(tmp_path) == []


def test_build_rejects_bad_input(tmp_path, tiny_dataset):
    tok = tiny_dataset.tokenizer
    with pytest.raises(DataError, match="at least one val and one train"):
        build_dataset(["only one doc"], tmp_path, name="d", tokenizer=tok, val_docs=1)
    with pytest.raises(DataError, match="val_fraction"):
        build_dataset(["a", "b"], tmp_path, name="d", tokenizer=tok, val_fraction=1.5)
    with pytest.raises(DataError, match="strings"):
        build_dataset(["a", b"bytes"], tmp_path, name="d", tokenizer=tok, val_docs=1)
    assert leftovers(tmp_path) == []


# --- read_docs ------------------------------------------------------------------------------------


def test_read_docs_formats(tmp_path):
    docs = ["first doc\nwith two lines", "second ü doc", "third"]
    jsonl = "".join(json.dumps({"text": d, "url": "x"}) + "\n" for d in docs)
    (tmp_path / "a.jsonl").write_text(jsonl + "\n")
    with lzma.open(tmp_path / "a.jsonl.xz", "wt", encoding="utf-8") as f:
        f.write(jsonl)
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n\n\n")
    for name in ("a.jsonl", "a.jsonl.xz", "a.txt.gz"):
        assert list(read_docs(tmp_path / name)) == docs
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected a JSON object"):
        list(read_docs(tmp_path / "bad.jsonl"))
    with pytest.raises(DataError, match="unsupported document file"):
        list(read_docs(tmp_path / "a.csv"))


# --- fetch_official -------------------------------------------------------------------------------


def _official_source(tmp_path: Path, tokenizer: Path, n_train: int, manifest: bool) -> Path:
    src = tmp_path / "remote"
    ds = src / "datasets" / "fineweb10B_sp1024"
    rng = np.random.default_rng(1)
    for name in ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in range(n_train)]:
        tokens = rng.integers(4, 256, size=3000).astype(np.uint16)
        tokens[::100] = BOS_ID  # 30 docs per shard
        write_shard(ds / name, tokens)
    (src / "tokenizers").mkdir()
    shutil.copyfile(tokenizer, src / "tokenizers" / "fineweb_1024_bpe.model")
    if manifest:
        entry = {
            "name": "fineweb10B_sp1024",
            "tokenizer_name": "sp_bpe_1024",
            "stats": {"files_train": n_train, "files_val": 1},
        }
        tok = {"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model"}
        (src / "manifest.json").write_text(json.dumps({"datasets": [entry], "tokenizers": [tok]}))
    return src


def test_fetch_official_from_local_folder(tmp_path, tiny_dataset):
    src = _official_source(tmp_path, tiny_dataset.tokenizer, n_train=3, manifest=False)
    dest = tmp_path / "data"
    info = fetch_official(dest, "sp1024", train_shards=2, source=src)
    assert info.name == "fineweb10B_sp1024" and info.vocab_size == 256
    assert info.dataset_dir == dest / "datasets" / "fineweb10B_sp1024"
    assert info.tokenizer == dest / "tokenizers" / "fineweb_1024_bpe.model"
    assert [p.name for p in info.train_files] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]
    assert (info.train_tokens, info.val_tokens, info.train_docs, info.val_docs) == (6000, 3000, 60, 30)
    for p in info.train_files + info.val_files:
        assert p.read_bytes() == (src / p.relative_to(dest)).read_bytes()
    assert load_dataset(info.dataset_dir) == info
    assert leftovers(dest) == []

    # valid files are kept; a corrupt one is fetched again
    kept = info.train_files[0].stat().st_mtime_ns
    info.val_files[0].write_bytes(b"junk")
    again = fetch_official(dest, "sp1024", train_shards=2, source=src)
    assert again == info and info.train_files[0].stat().st_mtime_ns == kept
    assert read_shard(info.val_files[0]).size == 3000


def test_fetch_official_errors(tmp_path, tiny_dataset):
    src = _official_source(tmp_path, tiny_dataset.tokenizer, n_train=2, manifest=False)
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match="fineweb_train_000002.bin: missing from the source"):
        fetch_official(dest, train_shards=3, source=src)
    (src / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin").write_bytes(b"x" * 2000)
    with pytest.raises(FetchError, match="fineweb_train_000001.bin: downloaded file is invalid.*bad magic"):
        fetch_official(tmp_path / "fresh", train_shards=2, source=src)
    assert not (tmp_path / "fresh" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin").exists()
    assert leftovers(tmp_path / "fresh") == [] and leftovers(dest) == []
    with pytest.raises(FetchError, match="source folder not found"):
        fetch_official(dest, source=tmp_path / "nowhere")
    with pytest.raises(FetchError, match="unreachable"):
        fetch_official(dest, source="http://127.0.0.1:9/datasets")
    with pytest.raises(FetchError, match="unsupported variant"):
        fetch_official(dest, variant="byte260", source=src)


def test_fetch_official_uses_source_manifest(tmp_path, tiny_dataset):
    src = _official_source(tmp_path, tiny_dataset.tokenizer, n_train=2, manifest=True)
    with pytest.raises(FetchError, match="has only 2 train shards"):
        fetch_official(tmp_path / "data", train_shards=3, source=src)
    info = fetch_official(tmp_path / "data", train_shards=2, source=src)
    assert len(info.train_files) == 2 and info.val_docs == 30
