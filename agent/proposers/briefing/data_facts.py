"""What the workspace trains and scores on, as the prompt says it: read from the dataset's manifest.

The system prompt used to say "held-out FineWeb text" whatever the data was; on the demo the data is this
Python's standard-library source, a million tokens, and a model that believes it is tuning for FineWeb
reasons about the wrong corpus. The manifest (written by `agentgolf data`, baseline/dataset.py and
fetch.py) holds the truth: its source, tokenizer, and train and validation tokens and documents.
"""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST_NAME = "manifest.json"  # baseline/dataset.py's name for it
DEMO_PREFIX = "demo"  # agent/workspace.py's DEMO_DATASET starts so
DEMO_SOURCE = "the offline demo corpus: source files of this Python's standard library (not FineWeb)"


def read_manifest(dataset_dir: Path) -> dict:
    """The dataset's manifest, or {} when there is none (a hand-made data folder)."""
    try:
        data = json.loads((Path(dataset_dir) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def source_of(manifest: dict) -> str:
    name = str(manifest.get("name", ""))
    if manifest.get("source"):
        return f"{manifest['source']} (dataset {name})"
    if name.startswith(DEMO_PREFIX):
        return DEMO_SOURCE
    return f"dataset {name or 'unnamed'} (its manifest does not say where the text comes from)"


def data_description(manifest: dict, vocab_size: int) -> str:
    """One paragraph: what the text is, how it is tokenized, and how much of it each split holds."""
    if not manifest:
        return (
            f"The data's manifest could not be read: the text's source is unknown; the tokenizer has "
            f"{vocab_size:,} pieces."
        )
    tokens, docs = manifest.get("tokens") or {}, manifest.get("docs") or {}
    tok = manifest.get("tokenizer") or {}
    split = (manifest.get("split") or {}).get("rule", "")

    def count(d: dict, key: str) -> str:
        return f"{d[key]:,}" if isinstance(d.get(key), int) else "?"

    return (
        f"The text is {source_of(manifest)}. Tokenizer: {Path(str(tok.get('path', '?'))).name}, "
        f"{manifest.get('vocab_size', vocab_size):,} pieces. Training split: {count(tokens, 'train')} tokens "
        f"in {count(docs, 'train')} documents; validation split: {count(tokens, 'val')} tokens in "
        f"{count(docs, 'val')} documents" + (f" (split rule: {split})" if split else "") + ". val_bpb is "
        "bits per byte of the validation text, scored by the harness."
    )
