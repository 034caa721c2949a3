"""The SentencePiece tokenizer: train one with the challenge's settings, load and check one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

from agentgolf.baseline.shards import BOS_ID, MAX_VOCAB
from agentgolf.errors import AgentgolfError

# Official SentencePiece settings (challenge `download_hf_docs_and_tokenize.py`).
PAD_ID, EOS_ID, UNK_ID = 0, 2, 3  # BOS_ID (1) is the shard format's, in shards.py
CHARACTER_COVERAGE = 0.999
NORMALIZATION = "nmt_nfkc"
TOKENIZER_TRAIN_MAX_BYTES = 200_000_000  # cap on text fed to the tokenizer trainer (the first train docs)
TOKENIZER_MAX_LINE_BYTES = 1 << 16  # longer lines are skipped by the trainer


class TokenizerError(AgentgolfError, ValueError):
    """A tokenizer could not be trained or loaded."""


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
