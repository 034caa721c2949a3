"""Benchmark: build a real dataset (wiki_en to train, fineweb_docs to validate) with the sp1024 tokenizer.

    python bench/data_build.py OUT_DIR [--data ../shared/data] [--shard-tokens N]

Reads ../shared/data (benchmarks may; the project and its tests may not) and prints docs, tokens,
seconds, and the val split's tokens per byte as the harness's byte table counts them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from agentgolf.baseline.corpus import read_docs
from agentgolf.baseline.dataset import build_dataset
from agentgolf.baseline.shards import read_shard
from agentgolf.baseline.tokenizer import UNK_ID
from agentgolf.sandbox.scoring.bpb import ByteTable

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_DOCS = "wiki_en.jsonl.xz"
VAL_DOCS = "fineweb_docs.jsonl.xz"
TOKENIZER = "fineweb_1024_bpe.model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="dataset root to write")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--shard-tokens", type=int, default=10**8)
    args = parser.parse_args()

    start = time.perf_counter()
    info = build_dataset(
        read_docs(args.data / TRAIN_DOCS),
        args.out,
        name="wiki_fineweb_sp1024",
        tokenizer=args.data / TOKENIZER,
        val_docs_iter=read_docs(args.data / VAL_DOCS),
        shard_tokens=args.shard_tokens,
        progress=True,
    )
    seconds = time.perf_counter() - start

    val = np.concatenate([read_shard(p) for p in info.val_files])
    table = ByteTable.from_model(info.tokenizer, info.vocab_size)
    scored = slice(1, None)  # every token but the first is a target, as in eval over the stream
    val_bytes = int(table.count(val[:-1], val[scored]).sum())
    val_raw_bytes = sum(len(d.encode("utf-8")) for d in read_docs(args.data / VAL_DOCS))
    unk = int(np.count_nonzero(val == UNK_ID))

    print(f"train: {info.train_docs:,} docs, {info.train_tokens:,} tokens, {len(info.train_files)} shard(s)")
    print(f"val:   {info.val_docs:,} docs, {info.val_tokens:,} tokens, {len(info.val_files)} shard(s)")
    print(f"build: {seconds:.1f} s, {(info.train_tokens + info.val_tokens) / seconds / 1e6:.2f} M tokens/s")
    print(
        f"val bytes (byte table): {val_bytes:,} of {val_raw_bytes:,} raw UTF-8; "
        f"tokens/byte {(val.size - 1) / val_bytes:.5f} (all targets, as the official val_bpb counts them; "
        f"official sp1024 FineWeb: 0.40945), <unk> {unk / val.size:.3%} of tokens"
    )
    print(f"written to {info.dataset_dir}")


if __name__ == "__main__":
    main()
