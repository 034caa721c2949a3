"""Shared pieces of the sandbox tests: the data spec, small budgets, composing attack trainers."""

from __future__ import annotations

import os
from pathlib import Path

from agentgolf.baseline.dataset import DatasetInfo
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.result import DataSpec
from agentgolf.sandbox.scoring.verify import VerifyConfig

TRAINERS = Path(__file__).parent / "sandbox_trainers"
TOY = TRAINERS / "toy_bigram.py"
MAIN_GUARD = 'if __name__ == "__main__":\n    main()\n'

# Generous for a toy that trains in about a second, small enough that a hung test ends quickly.
TEST_BUDGET = Budget(
    train_seconds=20, train_grace_seconds=10, score_seconds=40, memory_bytes=8 * 2**30, max_processes=64
)
# Enough checked positions that every row of the tiny validation set is checked (m is at most one per row).
THOROUGH = TEST_BUDGET.model_copy(update={"verify": VerifyConfig(min_positions=300)})


def data_spec(info: DatasetInfo) -> DataSpec:
    return DataSpec(
        train_files=info.train_files,
        val_files=info.val_files,
        tokenizer=info.tokenizer,
        vocab_size=info.vocab_size,
    )


def compose(attack: str, dest_dir: Path) -> Path:
    """toy_bigram.py with an attack's code inserted before its __main__ guard, written as one trainer file."""
    toy = TOY.read_text()
    assert toy.endswith(MAIN_GUARD), "toy_bigram.py must end with its __main__ guard"
    text = toy[: -len(MAIN_GUARD)] + "\n" + (TRAINERS / attack).read_text() + "\n\n" + MAIN_GUARD
    path = dest_dir / f"composed_{attack}"
    path.write_text(text)
    return path


def processes_with(needle: str) -> list[int]:
    """Pids whose command line contains needle (for checking that nothing survived a run)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def declaring(trainer: Path, **attrs: object) -> Path:
    """The trainer with its loaded model declaring `attrs` (eval_mode="stream", eval_stride=16, seq_len=...),
    appended before its __main__ guard: any attack, in any eval mode."""
    sets = "".join(f"    model.{k} = {v!r}\n" for k, v in attrs.items())
    wrapper = f"_undeclared_load = load_model\n\n\ndef load_model(path, device='cpu'):\n    model = _undeclared_load(path, device)\n{sets}    return model\n\n\n"
    text = trainer.read_text()
    trainer.write_text(text.replace('if __name__ == "__main__":', wrapper + 'if __name__ == "__main__":'))
    return trainer
