"""Benchmark: the int8 export's cost, val_bpb before against after the roundtrip, for several scale rules.

    python bench/quant_gap.py DATASET_DIR TOKENIZER [--env KEY=VALUE ...] [--trainer baseline/train_gpt.py]

Trains once (PRESET=cpu unless --env says otherwise) with SAVE_RAW_MODEL=1, then re-exports the same raw
weights under each rule and scores every roundtrip with the trainer's own `evaluate`:

- budget: the trainer's default, the finest step floor that fits ARTIFACT_MAX_BYTES (15,500,000);
- official: a fixed floor of 1/127, the official trainer's rule;
- none: no floor at all, the rule before issue 14 (every row spread over all 255 codes).

Without val shards in DATASET_DIR it prints sizes only (the default 9x512 recipe after a few steps, say:
`--env PRESET= --env TRAIN_SEQ_LEN=128 --env TRAIN_BATCH_TOKENS=256 --env ITERATIONS=10 --env WARMDOWN_ITERS=0`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RULES = (("budget", None), ("official", 1 / 127), ("none", 0.0))


def load_trainer(path: Path):
    spec = importlib.util.spec_from_file_location("trainer_under_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("--trainer", type=Path, default=ROOT / "baseline" / "train_gpt.py")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument(
        "--reuse", type=Path, help="a folder of an earlier run: skip training, re-export its weights"
    )
    args = parser.parse_args()

    work = args.reuse or Path(tempfile.mkdtemp(prefix="quant_gap_"))
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR", "LANG")}
    env.update(PRESET="cpu", DATA_PATH=str(args.dataset), TOKENIZER_PATH=str(args.tokenizer))
    env.update(VOCAB_SIZE=str(args.vocab_size), SAVE_RAW_MODEL="1", ARTIFACT_PATH=str(work / "model.ptz"))
    env.update(dict(item.split("=", 1) for item in args.env))
    if not args.reuse:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(args.trainer.resolve())], cwd=work, env=env, text=True)
        if proc.returncode:
            raise SystemExit(f"trainer failed with exit code {proc.returncode}")
        print(f"trained in {time.perf_counter() - start:.0f} s (folder {work})")

    os.environ.update({k: v for k, v in env.items() if k != "PATH"})
    load_trainer(args.trainer.resolve()).apply_preset()  # settings are read when the module is loaded:
    trainer = load_trainer(args.trainer.resolve())  # load it again with the preset in the environment
    hp = trainer.Hyperparameters()
    model = trainer.GPT(trainer.ModelConfig.from_args(hp))
    state = torch.load(work / "final_model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    code_bytes = len(args.trainer.read_bytes())
    val_tokens, luts = trainer.load_validation(hp, lambda _msg: None)

    def score() -> float | None:
        if val_tokens is None:
            return None
        batch = max(1, hp.val_batch_size // hp.train_seq_len)
        cpu = torch.device("cpu")
        return trainer.evaluate(model, val_tokens, luts, hp.train_seq_len, batch, 0, 1, cpu)[1]

    before = score()
    keep = trainer.name_patterns(hp.int8_keep_float_fp32_name_patterns)
    export = trainer.Int8Export(state, keep, {})
    print(f"{'rule':9} {'floor':>10} {'model bytes':>12} {'total bytes':>12} {'bpb before':>11} "
          f"{'bpb after':>11} {'gap':>8}")  # fmt: skip
    for name, fixed in RULES:
        if fixed is None:
            floor, blob, _ = export.fit(hp.artifact_max_bytes - code_bytes)
        else:
            floor, blob = fixed, export.blob(fixed)
        model.load_state_dict(trainer.dequantize_state_dict(export.artifact(floor)))
        after = score()
        model.load_state_dict(state)
        gap = f"{after - before:+.4f}" if before is not None else "-"
        fmt = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
        print(f"{name:9} {floor:10.3e} {len(blob):12,} {len(blob) + code_bytes:12,} {fmt(before):>11} "
              f"{fmt(after):>11} {gap:>8}")  # fmt: skip


if __name__ == "__main__":
    main()
