"""The Parameter Golf challenge's fixed numbers, defined once.

Source: the challenge's README (github.com/openai/parameter-golf):
the artifact is the trainer's code bytes plus the compressed model, at most 16,000,000 decimal bytes;
training gets 600 s on 8xH100; a new record must beat the previous one by 0.005 nats per token at
p < 0.01, shown with the logs of (most often) 3 training runs. The margin is stated in nats per token,
so in bits per byte it depends on the tokenizer's tokens per byte of validation text: `margin_bpb`
derives it instead of hard-coding sp1024's value.
"""

from __future__ import annotations

import math

TRAINER_FILE = "train_gpt.py"  # the one file a submission's code lives in
SIZE_LIMIT_BYTES = 16_000_000  # decimal bytes: code + compressed model
TRAIN_SECONDS = 600.0  # the training wall-clock cap on 8xH100
CHALLENGE_GPUS, CHALLENGE_GPU_MODEL = 8, "H100"  # the hardware a record trains on
RECORD_MARGIN_NATS = 0.005  # a record beats the previous one by this much, in nats per token
RECORD_ALPHA = 0.01  # ... at this one-sided significance level
# ... shown over this many training runs (seeds): the submission process asks for enough run logs to show
# the margin at p < 0.01, and names the mean of 3 runs as what usually suffices (records show 3, some 5);
# with fewer, the one-sided t-test has one degree of freedom or none.
RECORD_SEEDS = 3
# FineWeb validation with the official sp1024 tokenizer: tokens per byte, used only when a run's own
# ratio is unknown (val_bpb = val_loss / ln 2 * tokens/byte). 0.005 nats at this ratio is 0.00295 bpb.
SP1024_TOKENS_PER_BYTE = 0.40945


def margin_bpb(tokens_per_byte: float | None = None) -> float:
    """The record margin in bits per byte: nats/token x tokens/byte / ln 2."""
    ratio = tokens_per_byte if tokens_per_byte and tokens_per_byte > 0 else SP1024_TOKENS_PER_BYTE
    return RECORD_MARGIN_NATS * ratio / math.log(2)


def tokens_per_byte(val_loss: float | None, val_bpb: float | None) -> float | None:
    """A run's own tokens per byte, recovered from its scores (val_bpb = val_loss / ln 2 x tokens/byte)."""
    if not val_loss or not val_bpb:
        return None
    return val_bpb * math.log(2) / val_loss
