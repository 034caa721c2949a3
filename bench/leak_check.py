"""Benchmark: the full leak check's rate on this CPU (tokens/s), and the time it extrapolates to for the
challenge's data (80 sp1024 shards, 8B training tokens, against 62M validation tokens) on 16 cores.

    python bench/leak_check.py [--data ../shared/data] [--root bench/out/leak_data] [--repeat 4] [--json]

Real text where ../shared/data is present (benchmarks may read it; the project may not): wiki_en trains and
fineweb_docs validates, tokenized once with the sp1024 model into --root. Without it, Zipf-distributed
synthetic tokens in documents of web-like lengths. The training shards are listed --repeat times, so a scan
reads more tokens than were built (from the page cache, as a second pass over real shards would).

This machine is shared (its load average is printed), so rates are also given per CPU second, the time a
free core would take; the 16-core figure extrapolates from those. It measures, each in a fresh process pool: the validation side (hashing every doc and the sampled n-grams),
the training scan with 1 worker and with every core here, the peak memory, and the shares found (a clean
split: cross-domain, so the n-gram share is this text's boilerplate floor); then the same data with 5% of
the validation documents (every 20th) copied into a training shard, found at exactly the share copied.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from itertools import takewhile
from pathlib import Path

import numpy as np

from agentgolf.baseline.corpus import read_docs
from agentgolf.baseline.data_check import DataCheckConfig
from agentgolf.baseline.dataset import build_dataset, load_dataset
from agentgolf.baseline.leak_scan import ValSample, scan_training
from agentgolf.baseline.shards import BOS_ID, read_shard, write_shard

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_ROOT = Path(__file__).resolve().parent / "out" / "leak_data"
GOAL = {"train_tokens": 8_000_000_000, "val_tokens": 62_000_000, "cores": 16, "seconds": 120}


def build(data: Path, root: Path, train_mb: int, shard_tokens: int) -> Path:
    """The dataset under root (built once): real text if `data` has it, else synthetic tokens."""
    ds = root / "datasets" / "bench_sp1024"
    if (ds / "manifest.json").is_file():
        return ds
    if (data / "wiki_en.jsonl.xz").is_file():
        budget = [train_mb * 1_000_000]

        def within(doc: str) -> bool:
            budget[0] -= len(doc)
            return budget[0] > 0

        build_dataset(
            takewhile(within, read_docs(data / "wiki_en.jsonl.xz")),
            root,
            name="bench_sp1024",
            tokenizer=data / "fineweb_1024_bpe.model",
            val_docs_iter=read_docs(data / "fineweb_docs.jsonl.xz"),
            shard_tokens=shard_tokens,
        )
        return ds
    rng = np.random.default_rng(0)  # synthetic: Zipf tokens, log-normal doc lengths (median ~600 tokens)
    ds.mkdir(parents=True, exist_ok=True)
    for name, n in [("fineweb_val_000000.bin", 8_000_000)] + [
        (f"fineweb_train_{i:06d}.bin", shard_tokens)
        for i in range(max(1, train_mb * 400_000 // shard_tokens))
    ]:
        tokens = np.minimum(rng.zipf(1.2, size=n), 1019).astype(np.uint16) + 4
        starts = np.cumsum(rng.lognormal(6.4, 1.0, size=n // 100).astype(np.int64) + 1)
        tokens[starts[starts < n]] = BOS_ID
        tokens[0] = BOS_ID
        write_shard(ds / name, tokens)
    return ds


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def cpu_timed(fn):
    """(result, wall seconds, CPU seconds of this process and of the worker processes it reaped)."""
    c0 = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    out, wall = timed(fn)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, wall, time.process_time() + children.ru_utime + children.ru_stime - c0


def measure(ds: Path, repeat: int, cfg: DataCheckConfig) -> dict:
    info = load_dataset(ds) if (ds / "manifest.json").is_file() else None
    val = sorted(ds.glob("fineweb_val_[0-9]*.bin"))
    train = sorted(ds.glob("fineweb_train_[0-9]*.bin")) * repeat
    args = (cfg.ngram, cfg.sample_every, cfg.min_doc_tokens)
    sample, val_s, val_cpu = cpu_timed(lambda: ValSample.build(val, *args, cfg.chunk_tokens))
    cores = os.cpu_count() or 1
    one, one_s, one_cpu = cpu_timed(lambda: scan_training(sample, train, *args, cfg.chunk_tokens, 1))
    many, many_s, many_cpu = cpu_timed(lambda: scan_training(sample, train, *args, cfg.chunk_tokens, cores))
    docs, grams = int(sample.doc_counts.sum()), int(sample.gram_counts.sum())
    return {
        "text": "real" if info is not None and info.name == "bench_sp1024" else "synthetic",
        "val_tokens": sample.stats["tokens"],
        "val_docs": docs,
        "val_ngrams_sampled": grams,
        "train_tokens": one["tokens"],
        "val_seconds": round(val_s, 2),
        "val_rate_cpu": sample.stats["tokens"] / val_cpu,  # tokens per CPU second: what a free core does
        "scan_seconds_1": round(one_s, 2),
        "rate_1": one["tokens"] / one_s,
        "rate_1_cpu": one["tokens"] / one_cpu,
        "cores": cores,
        "scan_seconds_all": round(many_s, 2),
        "rate_all": many["tokens"] / many_s,
        "rate_all_cpu": many["tokens"] / many_cpu,  # spawning the workers included
        "doc_share": float(sample.doc_counts[one["found_docs"]].sum() / max(docs, 1)),
        "ngram_share": float(sample.gram_counts[one["found_grams"]].sum() / max(grams, 1)),
        "val_sample_mib": round((sample.grams.nbytes + sample.docs.nbytes) / 2**20, 1),
        "load_average": round(os.getloadavg()[0], 1),
    }


def leaked_copy(ds: Path, out: Path) -> tuple[Path, int]:
    """A copy with 5% of the validation documents put between two documents of the first training shard."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(ds, out)
    val = np.concatenate([read_shard(p) for p in sorted(out.glob("fineweb_val_[0-9]*.bin"))])
    starts = np.flatnonzero(val == BOS_ID)
    docs = [val[a:b] for a, b in zip(starts, [*starts[1:], val.size], strict=True)]
    picked = [d for d in docs[::20] if d.size > DataCheckConfig().min_doc_tokens]
    first = out / "fineweb_train_000000.bin"
    train = read_shard(first)
    cut = int(np.flatnonzero(train == BOS_ID)[1])
    write_shard(first, np.concatenate([train[:cut], *picked, train[cut:]]))
    return out, len(picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--train-mb", type=int, default=60, help="text for the training shards (real data)")
    parser.add_argument("--shard-tokens", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="list the training shards this many times")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    cfg = DataCheckConfig()
    ds, build_s = timed(lambda: build(args.data, args.root, args.train_mb, args.shard_tokens))
    clean = measure(ds, args.repeat, cfg)
    leaked_ds, n_leaked = leaked_copy(ds, args.root / "leaked")
    sample = ValSample.build(
        sorted(leaked_ds.glob("fineweb_val_[0-9]*.bin")),
        cfg.ngram,
        cfg.sample_every,
        cfg.min_doc_tokens,
        cfg.chunk_tokens,
    )
    hits = scan_training(
        sample,
        sorted(leaked_ds.glob("fineweb_train_[0-9]*.bin")),
        cfg.ngram,
        cfg.sample_every,
        cfg.min_doc_tokens,
        cfg.chunk_tokens,
        os.cpu_count() or 1,
    )
    leak_doc_share = float(sample.doc_counts[hits["found_docs"]].sum() / sample.doc_counts.sum())
    per_core = min(
        clean["rate_1_cpu"], clean["rate_all_cpu"]
    )  # per CPU second: a loaded machine's wall clock
    goal_s = GOAL["val_tokens"] / clean["val_rate_cpu"] + GOAL["train_tokens"] / (per_core * GOAL["cores"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        **clean,
        "build_seconds": round(build_s, 1),
        "leaked_docs": n_leaked,
        "leaked_doc_share_found": leak_doc_share,
        "peak_rss_mib": round(peak, 1),
        "peak_worker_rss_mib": round(peak_child, 1),
        "goal_seconds_16_cores": round(goal_s, 1),
        "goal_met": goal_s <= GOAL["seconds"],
        "ngram": cfg.ngram,
        "sample_every": cfg.sample_every,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rows = [
        (
            "data",
            f"{result['text']}: {result['train_tokens']:,} train tokens scanned, {result['val_tokens']:,} val",
        ),
        (
            "validation side",
            f"{result['val_seconds']} s; {result['val_rate_cpu'] / 1e6:.1f}M tokens per CPU-s",
        ),
        (
            "training scan, 1 worker",
            f"{result['scan_seconds_1']} s ({result['rate_1'] / 1e6:.1f}M tokens/s wall)",
        ),
        ("  per CPU second", f"{result['rate_1_cpu'] / 1e6:.1f}M tokens"),
        (
            f"training scan, {result['cores']} workers",
            f"{result['scan_seconds_all']} s ({result['rate_all'] / 1e6:.1f}M tokens/s wall)",
        ),
        ("  per CPU second", f"{result['rate_all_cpu'] / 1e6:.1f}M tokens"),
        ("clean split: docs / n-grams found", f"{result['doc_share']:.2%} / {result['ngram_share']:.2%}"),
        (f"{n_leaked} val docs (5%) copied in: found", f"{leak_doc_share:.2%}"),
        ("peak memory (main / a worker)", f"{result['peak_rss_mib']} / {result['peak_worker_rss_mib']} MiB"),
        (
            "8B train vs 62M val on 16 cores",
            f"{result['goal_seconds_16_cores']} s (goal {GOAL['seconds']} s)",
        ),
        ("load average while measured", str(result["load_average"])),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
