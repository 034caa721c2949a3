"""`agentgolf data check`: is a dataset what it claims to be, before a night is spent training on it?

One finding per check, each ok, warn or fail:
- leak: the share of validation documents, and of validation token n-grams, found in training (leak_scan.py);
- shards: the shard files on disk and their token counts against the dataset's manifest (and the export's
  published count for a known variant: `train_shards: 1499` where the export has 80 is a failure);
- val: the validation tokens and documents against a known variant's (a split that lost val documents);
- bos: a BOS opens the validation and the training stream, and every shard read has one;
- tokenizer: the tokenizer's sha256 against the one the shards were built with, its vocab against the ids.

The fast mode (the start of every `run`) reads the training shards only up to `fast_train_tokens`; a leak
from a first-N split shows in the first shards.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from agentgolf.baseline.dataset import MANIFEST_NAME, file_sha256
from agentgolf.baseline.leak_scan import ValSample, scan_training
from agentgolf.baseline.shards import BOS_ID, ShardError, read_shard, shard_token_count
from agentgolf.baseline.tokenizer import TokenizerError, load_tokenizer
from agentgolf.baseline.variants import Variant, variant_named, variant_of_dataset

Level = Literal["ok", "warn", "fail"]
PUBLISHED_SLACK = (
    1.5  # without the export's manifest: more than this times the known count is not that export
)


class DataCheckConfig(BaseModel):
    """How a dataset is judged; `data.check` in the workspace's config."""

    ngram: int = Field(32, ge=2)  # tokens per n-gram (32 sp1024 tokens: about 78 bytes of text)
    sample_every: int = Field(16, ge=1)  # keep 1 n-gram in this many, by hash (a power of two)
    min_doc_tokens: int = 16  # shorter documents are not matched whole ("Home", "404 Not Found")
    max_doc_share: float = 0.001  # more of the validation documents than this found in training fails
    warn_ngram_share: float = 0.05  # validation n-grams found in training: boilerplate stays below this
    max_ngram_share: float = 0.25  # above this, training holds the validation text (under other splits)
    count_tolerance: float = 0.01  # val tokens/docs further than this from a known variant's fail
    fast_train_tokens: int = 200_000_000  # the fast mode's leak scan reads the training shards up to this
    chunk_tokens: int = 1 << 22
    workers: int = 0  # processes for the leak scan; 0: every core

    @field_validator("sample_every")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"sample_every must be a power of two, got {v}")
        return v


class Finding(BaseModel):
    check: str
    level: Level
    message: str
    value: float | None = None


class DataReport(BaseModel):
    dataset: str
    mode: Literal["fast", "full"]
    variant: str | None = None
    findings: list[Finding] = []
    seconds: float = 0.0
    train_tokens_scanned: int = 0
    max_token_id: int | None = None  # the largest token id the leak scan read
    allowed: bool = False  # a run went on despite a failure (--allow-data-warnings)

    @property
    def failed(self) -> bool:
        return any(f.level == "fail" for f in self.findings)

    def lines(self) -> list[str]:
        return [f"{f.level}: {f.check}: {f.message}" for f in self.findings]


def check_dataset(
    dataset_dir: Path,
    *,
    tokenizer: Path | None = None,
    variant: str | None = None,
    fast: bool = False,
    config: DataCheckConfig | None = None,
) -> DataReport:
    """Every check on the dataset in `dataset_dir`, one finding each (see the module docstring).

    `tokenizer` defaults to the one the manifest names; `variant` (a key of variants.VARIANTS) to the one whose
    export folder the dataset is; `fast` reads the training shards only up to `config.fast_train_tokens`."""
    cfg = config or DataCheckConfig()
    t0 = time.perf_counter()
    dataset_dir = Path(dataset_dir)
    manifest, findings = _manifest(dataset_dir)
    known = variant_named(variant) if variant else variant_of_dataset(manifest.get("name", dataset_dir.name))
    if variant and known is None:
        findings.append(Finding(check="val", level="warn", message=f"unknown variant {variant!r}"))
    train, val, shard_findings = _shards(dataset_dir, manifest, known)
    findings += shard_findings
    report = DataReport(
        dataset=str(dataset_dir), mode="fast" if fast else "full", variant=known and known.name
    )
    if val and train:
        scanned = _fast_subset(train, cfg.fast_train_tokens) if fast else train
        findings += _leak(val, train, len(scanned), cfg, report)
        findings += _bos(val, scanned)
    findings += _val_counts(val, known, cfg)
    findings += _tokenizer(dataset_dir, manifest, tokenizer, report.max_token_id)
    report.findings = findings
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _manifest(dataset_dir: Path) -> tuple[dict, list[Finding]]:
    path = dataset_dir / MANIFEST_NAME
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(m, dict):
            return m, []
    except FileNotFoundError:  # shards from elsewhere: nothing to compare with, which is not a fault
        official = _official_entry(dataset_dir)
        if official:
            msg = f"no {path.name}: counts from the export's own {MANIFEST_NAME}, the tokenizer's hash unchecked"
            return official, [Finding(check="shards", level="warn", message=msg)]
        msg = f"{path} not found: the shard counts and the tokenizer's hash are not checked"
        return {}, [Finding(check="shards", level="warn", message=msg)]
    except (OSError, json.JSONDecodeError):
        pass
    return {}, [Finding(check="shards", level="fail", message=f"{path}: malformed manifest")]


def _official_entry(dataset_dir: Path) -> dict:
    """Data laid out by the challenge's own downloader: its `data/manifest.json` lists each dataset's
    published shard counts (`stats.files_train/files_val`) and its tokenizer's path."""
    root = dataset_dir.parent.parent
    try:
        m = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        entry = next(d for d in m["datasets"] if d.get("name") == dataset_dir.name)
        tok = next((t for t in m.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), {})
        out = {"name": dataset_dir.name, "published_train_shards": int(entry["stats"]["files_train"])}
        out["published_val_shards"] = int(entry["stats"]["files_val"])
        return {**out, "tokenizer": {"path": tok["model_path"]}} if tok.get("model_path") else out
    except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError):
        return {}


def _shards(dataset_dir: Path, manifest: dict, known: Variant | None) -> tuple[list, list, list[Finding]]:
    """The valid shards on disk per split, and what differs from the manifest (and the published count)."""
    out: list[Finding] = []
    good: dict[str, list[Path]] = {}
    listed = manifest.get("shards", {}) if isinstance(manifest.get("shards"), dict) else {}
    for split in ("train", "val"):
        on_disk = sorted(dataset_dir.glob(f"fineweb_{split}_[0-9]*.bin"))
        entries = {s.get("file"): s.get("tokens") for s in listed.get(split, []) if isinstance(s, dict)}
        good[split], tokens = [], 0
        for path in on_disk:
            try:
                n = shard_token_count(path)
            except ShardError as e:
                out.append(Finding(check="shards", level="fail", message=str(e)))
                continue
            good[split].append(path)
            tokens += n
            if path.name in entries and entries[path.name] != n:
                msg = f"{path.name} holds {n:,} tokens, the manifest says {entries[path.name]:,}"
                out.append(Finding(check="shards", level="fail", message=msg))
        missing = sorted(set(entries) - {p.name for p in on_disk})
        extra = sorted({p.name for p in on_disk} - set(entries))
        if "shards" in manifest and (missing or extra):
            msg = f"{len(on_disk)} {split} shards on disk, the manifest lists {len(entries)}"
            msg += f" ({len(missing)} missing, {len(extra)} not listed, e.g. {(missing + extra)[0]})"
            out.append(Finding(check="shards", level="fail", message=msg))
        want = manifest.get("tokens", {}).get(split) if manifest else None
        unreadable = len(good[split]) < len(on_disk)  # already a finding: its count would only repeat it
        if want is not None and want != tokens and not (missing or extra or unreadable):
            out.append(
                Finding(
                    check="shards", level="fail", message=f"{split}: {tokens:,} tokens, manifest {want:,}"
                )
            )
        published_val = manifest.get("published_val_shards")
        if split == "val" and published_val is not None and len(on_disk) != published_val:
            msg = f"{len(on_disk)} val shards, the export has {published_val}: scores would not be comparable"
            out.append(Finding(check="shards", level="fail", message=msg))
        if not on_disk:
            out.append(
                Finding(check="shards", level="fail", message=f"no fineweb_{split}_*.bin in {dataset_dir}")
            )
    # the export's own count (its manifest, as fetched) is a hard bound; the table's is what records used
    from_source = manifest.get("published_train_shards")
    published = from_source or (known.train_shards if known else None)
    n_train = len(good["train"])
    if published and n_train > published:
        msg = f"{n_train} train shards, but the {known.name if known else 'published'} export has {published}"
        hard = from_source or n_train > PUBLISHED_SLACK * published
        out.append(Finding(check="shards", level="fail" if hard else "warn", message=msg))
    if not any(f.level != "ok" for f in out if f.check == "shards"):
        total = sum(map(shard_token_count, good["train"]))
        of = f" of the {published} published" if published else ""
        msg = f"{n_train} train shards{of} ({total:,} tokens), {len(good['val'])} val"
        msg += ", as the manifest says" if "shards" in manifest else ""
        out.append(Finding(check="shards", level="ok", message=msg, value=n_train))
    return good["train"], good["val"], out


def _fast_subset(train: list[Path], max_tokens: int) -> list[Path]:
    out, total = [], 0
    for path in train:
        out.append(path)
        total += shard_token_count(path)
        if total >= max_tokens:
            break
    return out


def _leak(val: list[Path], train: list[Path], n_read: int, cfg: DataCheckConfig, report: DataReport) -> list:
    workers = cfg.workers or os.cpu_count() or 1
    sample = ValSample.build(val, cfg.ngram, cfg.sample_every, cfg.min_doc_tokens, cfg.chunk_tokens)
    hits = scan_training(
        sample, train, cfg.ngram, cfg.sample_every, cfg.min_doc_tokens, cfg.chunk_tokens, workers, n_read
    )
    report.train_tokens_scanned = hits["tokens"]
    docs = int(sample.doc_counts.sum())
    doc_found = int(sample.doc_counts[hits["found_docs"]].sum())
    grams = int(sample.gram_counts.sum())
    gram_found = int(sample.gram_counts[hits["found_grams"]].sum())
    doc_share = doc_found / docs if docs else 0.0
    gram_share = gram_found / grams if grams else 0.0
    where = f"the {n_read} of {len(train)} train shards read" if n_read < len(train) else "training"
    level: Level = "fail" if doc_share > cfg.max_doc_share else "ok"
    msg = f"{doc_found:,} of {docs:,} validation documents ({doc_share:.2%}) found in {where}"
    out = [Finding(check="leak", level=level, message=msg, value=doc_share)]
    level = (
        "fail" if gram_share > cfg.max_ngram_share else "warn" if gram_share > cfg.warn_ngram_share else "ok"
    )
    msg = f"{gram_share:.2%} of validation {cfg.ngram}-grams found in {where} (a 1/{cfg.sample_every} sample)"
    out.append(Finding(check="leak", level=level, message=msg, value=gram_share))
    report.max_token_id = max(hits["max_token"], sample.stats["max_token"])
    return out


def _bos(val: list[Path], train: list[Path]) -> list[Finding]:
    out: list[Finding] = []
    for split, files in (("val", val), ("train", train)):
        first = read_shard(files[0], mmap=True)[:1]
        if first.tolist() != [BOS_ID]:
            out.append(
                Finding(check="bos", level="fail", message=f"the {split} stream does not start with BOS")
            )
        for path in files:
            if not np.any(read_shard(path, mmap=True) == BOS_ID):
                out.append(
                    Finding(check="bos", level="fail", message=f"{path.name}: no BOS (no document starts)")
                )
    if not out:
        out.append(
            Finding(
                check="bos", level="ok", message="BOS opens the val and train streams and every shard read"
            )
        )
    return out


def _val_counts(val: list[Path], known: Variant | None, cfg: DataCheckConfig) -> list[Finding]:
    if known is None or not val:
        return []
    tokens = sum(map(shard_token_count, val))
    docs = sum(int(np.count_nonzero(read_shard(p, mmap=True) == BOS_ID)) for p in val)
    out = []
    if known.val_tokens_logged:
        want = known.val_tokens_logged
        off = abs(tokens - want) / want
        level: Level = (
            "fail" if off > cfg.count_tolerance else "ok" if want <= tokens <= want + 8193 else "warn"
        )
        msg = f"{tokens:,} val tokens; {known.name}'s records scored {want:,} (cut to their eval length)"
        out.append(Finding(check="val", level=level, message=msg, value=tokens))
    off = abs(docs - known.val_docs) / known.val_docs
    level = "ok" if docs == known.val_docs else "fail" if off > cfg.count_tolerance else "warn"
    msg = f"{docs:,} val documents; the official split holds {known.val_docs:,}"
    out.append(Finding(check="val", level=level, message=msg, value=docs))
    return out


def _tokenizer(
    dataset_dir: Path, manifest: dict, tokenizer: Path | None, max_id: int | None
) -> list[Finding]:
    recorded = manifest.get("tokenizer", {}) if isinstance(manifest.get("tokenizer"), dict) else {}
    path = tokenizer or (dataset_dir.parent.parent / recorded["path"] if recorded.get("path") else None)
    if path is None or not Path(path).is_file():
        return [
            Finding(check="tokenizer", level="fail", message=f"tokenizer {path or '(none named)'} not found")
        ]
    out = []
    try:
        vocab = load_tokenizer(Path(path)).vocab_size()
    except TokenizerError as e:
        return [Finding(check="tokenizer", level="fail", message=str(e))]
    if max_id is not None and max_id >= vocab:
        msg = f"token id {max_id} in the shards, but {Path(path).name} has {vocab} pieces"
        out.append(Finding(check="tokenizer", level="fail", message=msg))
    digest = file_sha256(Path(path))
    want = recorded.get("sha256")
    if not want:
        msg = f"the manifest records no tokenizer sha256 to check {path} against"
        return [*out, Finding(check="tokenizer", level="warn", message=msg)]
    if digest != want:
        msg = f"{path} has sha256 {digest[:12]}…, the shards were built with {want[:12]}…"
        return [*out, Finding(check="tokenizer", level="fail", message=msg)]
    msg = f"{Path(path).name} is the one the shards were built with ({vocab} pieces)"
    return out or [Finding(check="tokenizer", level="ok", message=msg)]
