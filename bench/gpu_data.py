"""What bench/gpu_check.sh needs on a bare GPU machine: `pack` it here, turn it into shards `there`.

    python bench/gpu_data.py pack [--shared ../shared/data] [--official PATH]    # on this machine
    python bench/gpu_data.py shards --pack bench/gpu_data --out DIR               # on the GPU machine

`pack` fills bench/gpu_data/ (ignored by git; the device run carries it): the two compressed text files and
the sp1024 tokenizer from ../shared/data (45 MB: 60M tokens of shards would be 136 MB, over the 64 MiB a run
carries), the wheels agentgolf needs that the GPU image lacks (WHEELS: pydantic, GitPython, tenacity, bm25s,
optuna, colorlog and what they need; Python 3.12), the bubblewrap package, and, with --official, a copy of the
official train_gpt.py (never committed).
    python bench/gpu_data.py specs       # what bench/gpu_check.sh installs: `pip install --no-index --no-deps`
    python bench/gpu_data.py blocked     # what the image lacks and the pack does not carry (the dry run's blocker)
`shards` writes the official shard format there: wiki_en as one train shard (about 60M tokens) and the
FineWeb documents as the val shard, [BOS=1] + tokens per document, tokenized on every core.
Standard library, numpy and sentencepiece only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "bench" / "gpu_data"
SHARED = ROOT.parent / "shared" / "data"
TRAIN_TEXT, VAL_TEXT, TOKENIZER = "wiki_en.jsonl.xz", "fineweb_docs.jsonl.xz", "fineweb_1024_bpe.model"
DATASET = "wiki_fineweb_sp1024"
CARRY_LIMIT = 60 * 2**20  # the device run carries 64 MiB in all, the working tree included
# agentgolf's dependencies missing from the GPU image (the device's package list), at the versions this
# project is tested with: every CLI command, the sandbox, the search proposer (optuna's in-memory TPE imports
# colorlog, tqdm, numpy, packaging and PyYAML, never sqlalchemy or alembic) and `similar` (bm25s: numpy).
# openai and submitit are imported only by the LLM proposer and the SLURM executor, not carried.
WHEELS = (
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",  # pydantic 2.14.4 and pydantic-core 2.50.5 need >= 4.16.0
    "GitPython==3.2.1",
    "gitdb==4.0.12",
    "smmap==5.0.3",
    "tenacity==9.2.1",
    "bm25s==0.3.16",
    "optuna==4.9.0",
    "colorlog==6.12.0",
)
ON_IMAGE = {"typing-extensions"}  # on the image too: installed only where its own is older (see `specs`)
# The distributions of agentgolf's dependency tree the GPU image lacks, with the names they import.
IMAGE_LACKS = {
    "pydantic": "pydantic",
    "pydantic-core": "pydantic_core",
    "annotated-types": "annotated_types",
    "typing-inspection": "typing_inspection",
    "GitPython": "git",
    "gitdb": "gitdb",
    "smmap": "smmap",
    "tenacity": "tenacity",
    "bm25s": "bm25s",
    "optuna": "optuna",
    "colorlog": "colorlog",
    "openai": "openai",
    "jiter": "jiter",
    "distro": "distro",
    "submitit": "submitit",
    "sqlalchemy": "sqlalchemy",
    "alembic": "alembic",
}
OPTIONAL = (
    "bm25s",
    "optuna",
    "colorlog",
    "openai",
    "submitit",
)  # only the code paths that use them import them
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
MAGIC, VERSION, HEADER_INTS, BOS = 20240520, 1, 256, 1
ENCODE_CHUNK = 256  # documents per batch handed to SentencePiece's threads


def pack(args: argparse.Namespace) -> None:
    out: Path = args.out
    (out / "text").mkdir(parents=True, exist_ok=True)
    for name in (TRAIN_TEXT, VAL_TEXT, TOKENIZER):
        src = args.shared / name
        if not src.is_file():
            raise SystemExit(f"error: {src} is missing (pass --shared DIR)")
        shutil.copyfile(src, out / "text" / name)
    if args.official:
        (out / "official").mkdir(exist_ok=True)
        shutil.copyfile(args.official, out / "official" / "train_gpt.py")
    if not args.no_wheels:
        wheels = out / "wheels"
        wheels.mkdir(exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(wheels),
        ]
        cmd += ["--python-version", "3.12", "--implementation", "cp"]
        cmd += [f"--platform={p}" for p in PLATFORMS] + list(WHEELS)
        subprocess.run(cmd, check=True)
        debs = out / "debs"
        debs.mkdir(exist_ok=True)
        got = subprocess.run(["apt-get", "download", "bubblewrap"], cwd=debs, capture_output=True, text=True)
        if got.returncode:
            print(
                f"warning: no bubblewrap package ({got.stderr.strip()[:200]}); the GPU run uses its own or none"
            )
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(out)}  {p.stat().st_size:,}")
    if total > CARRY_LIMIT:
        raise SystemExit(f"error: {total:,} bytes is over the {CARRY_LIMIT:,} a device run can carry")


def read_texts(path: Path, max_docs: int | None) -> list[str]:
    texts = []
    with lzma.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
                if max_docs is not None and len(texts) >= max_docs:
                    break
    return texts


def encode(sp, texts: list[str], threads: int):
    """Each document as [BOS] + its tokens, uint16, in chunks so that no list of 60M Python ints is ever built."""
    import numpy as np

    bos = np.array([BOS], dtype="<u2")
    parts = []
    for start in range(0, len(texts), ENCODE_CHUNK):
        for ids in sp.encode(texts[start : start + ENCODE_CHUNK], num_threads=threads):
            parts += (bos, np.asarray(ids, dtype="<u2"))
    return np.concatenate(parts) if parts else np.zeros(0, dtype="<u2")


def write_shard(path: Path, tokens) -> int:
    import numpy as np

    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.tobytes())
    os.replace(tmp, path)
    return int(tokens.size)


def shards(args: argparse.Namespace) -> None:
    import sentencepiece as spm

    start = time.perf_counter()
    text = args.pack / "text"
    dataset, tokenizers = args.out / "datasets" / DATASET, args.out / "tokenizers"
    if (dataset / "fineweb_val_000000.bin").is_file() and not args.force:
        print(f"shards: already in {dataset}")
        return
    missing = [n for n in (TRAIN_TEXT, VAL_TEXT, TOKENIZER) if not (text / n).is_file()]
    if missing:
        raise SystemExit(
            f"error: {text} lacks {', '.join(missing)}: run `python bench/gpu_data.py pack` first"
        )
    dataset.mkdir(parents=True, exist_ok=True)
    tokenizers.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(text / TOKENIZER, tokenizers / TOKENIZER)
    sp = spm.SentencePieceProcessor(model_file=str(tokenizers / TOKENIZER))
    threads = args.threads or os.cpu_count() or 1
    counts = {}
    for split, name, limit in (
        ("val", VAL_TEXT, args.max_val_docs),
        ("train", TRAIN_TEXT, args.max_train_docs),
    ):
        texts = read_texts(text / name, limit)
        counts[split] = (
            len(texts),
            write_shard(dataset / f"fineweb_{split}_000000.bin", encode(sp, texts, threads)),
        )
    seconds = time.perf_counter() - start
    print(
        f"shards: train {counts['train'][0]:,} docs {counts['train'][1]:,} tokens, val {counts['val'][0]:,} docs "
        f"{counts['val'][1]:,} tokens, {threads} threads, {seconds:.1f} s -> {dataset}"
    )


def _name(spec: str) -> str:
    return spec.split("==")[0]


def install_specs() -> list[str]:
    """The requirement for each carried wheel: pinned where the image lacks the package, `>=` where the image
    has its own, so that pip keeps a newer one rather than downgrade a package torch's environment uses."""
    return [s.replace("==", ">=") if _name(s) in ON_IMAGE else s for s in WHEELS]


def blocked_imports(carried=WHEELS) -> list[str]:
    """The import names of what the image lacks and the pack does not carry: a dry run blocks these, so that
    a wheel missing from WHEELS fails on the CPU as it would on the GPU machine."""
    have = {_name(s).lower() for s in carried}
    return sorted({mod for dist, mod in IMAGE_LACKS.items() if dist.lower() not in have})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("pack", help="fill bench/gpu_data/ from ../shared/data (on this machine)")
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--out", type=Path, default=PACK)
    p.add_argument("--official", type=Path, help="the official train_gpt.py, copied into the pack")
    p.add_argument("--no-wheels", action="store_true", help="skip the wheels and the bubblewrap package")
    p.set_defaults(func=pack)
    p = sub.add_parser("shards", help="official-format shards from a pack (on the GPU machine)")
    p.add_argument("--pack", type=Path, default=PACK)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--max-train-docs", type=int, help="only the first N train documents (dry runs)")
    p.add_argument("--max-val-docs", type=int, help="only the first N val documents (dry runs)")
    p.add_argument("--force", action="store_true", help="rebuild even if the shards are there")
    p.set_defaults(func=shards)
    p = sub.add_parser("specs", help="the requirements bench/gpu_check.sh installs from the pack's wheels")
    p.set_defaults(func=lambda _: print("\n".join(install_specs())))
    p = sub.add_parser("blocked", help="import names the image lacks and the pack does not carry")
    p.add_argument("--optional", action="store_true", help="the optional machinery only (bm25s, optuna, ...)")
    p.set_defaults(func=lambda a: print(" ".join(OPTIONAL if a.optional else blocked_imports())))
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
