"""The leaderboard's public data exports: where each lives, its names, and the counts a correct copy has.

Sources and figures: the challenge's `data/` tools and records (FineWeb, first 50,000 documents held out
for validation; 100M-token shards for the official exports, 10M for CaseOps). Every export keeps the official
layout under its root: `datasets/<dataset>/fineweb_{train,val}_%06d.bin`, `tokenizers/<model>`, and
`manifest.json` (whose `stats.files_train/files_val` win over the table's counts when present).
"""

from __future__ import annotations

import os

from pydantic import BaseModel

HF_HOST = "https://huggingface.co"
ENDPOINT_ENV = (
    "HF_ENDPOINT"  # huggingface_hub's: another host (a mirror, a test server) serving the same paths
)
VAL_DOCS = 50_000  # the official split: the first 50,000 documents are validation
VAL_BYTES_PATTERN = "fineweb_val_bytes_{:06d}.bin"  # CaseOps: uint16 bytes per val token, same header


class Variant(BaseModel):
    name: str  # what `data fetch --variant` takes
    dataset: str  # the folder under datasets/
    repo: str  # the Hugging Face dataset repository
    tokenizer_model: str  # relative to the root; a `.vocab` beside it is fetched when present
    vocab_size: int
    train_shards: int  # the shards the export publishes (the records trained on all of them)
    val_docs: int = VAL_DOCS
    val_tokens_logged: int | None = None  # records' logged val tokens, cut to a multiple of the eval length
    byte_sidecar: bool = False  # fineweb_val_bytes_*.bin, parallel to the val shards

    def base_url(self) -> str:
        """The export's root: `datasets/` inside its repository, on HF_ENDPOINT's host when set."""
        host = os.environ.get(ENDPOINT_ENV, "").rstrip("/") or HF_HOST
        return f"{host}/datasets/{self.repo}/resolve/main/datasets"

    @property
    def tokenizer_vocab(self) -> str:
        return self.tokenizer_model.removesuffix(".model") + ".vocab"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            name="sp1024",
            dataset="fineweb10B_sp1024",
            repo="willdepueoai/parameter-golf",
            tokenizer_model="tokenizers/fineweb_1024_bpe.model",
            vocab_size=1024,
            train_shards=80,
            val_tokens_logged=63_779_840,
        ),
        Variant(
            name="sp4096",
            dataset="fineweb10B_sp4096",
            repo="kevclark/parameter-golf",
            tokenizer_model="tokenizers/fineweb_4096_bpe.model",
            vocab_size=4096,
            train_shards=143,
        ),
        Variant(
            name="sp8192",
            dataset="fineweb10B_sp8192",
            repo="kevclark/parameter-golf",
            tokenizer_model="tokenizers/fineweb_8192_bpe.model",
            vocab_size=8192,
            train_shards=128,
            val_tokens_logged=40_540_160,
        ),
        Variant(
            name="caseops-sp8192",
            dataset="fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
            repo="romeerp/parameter-golf-caseops-v1",
            tokenizer_model="tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
            vocab_size=8192,
            train_shards=80,
            val_tokens_logged=47_851_520,
            byte_sidecar=True,
        ),
    )
}


def variant_named(name: str) -> Variant | None:
    return VARIANTS.get(name)


def variant_of_dataset(dataset: str) -> Variant | None:
    """The known variant whose export folder is named `dataset`, if any."""
    return next((v for v in VARIANTS.values() if v.dataset == dataset), None)
