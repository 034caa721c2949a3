"""`data check`: the leak scan (validation documents and n-grams found in training), counts against the
manifest and a known variant, BOS, the tokenizer's hash; on datasets built for real and then damaged."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.trainer.data_gate import gate_run, manifest_entry
from agentgolf.baseline.corpus import demo_corpus
from agentgolf.baseline.data_check import DataCheckConfig, check_dataset
from agentgolf.baseline.dataset import DatasetInfo, build_dataset, load_dataset
from agentgolf.baseline.leak_scan import ValSample, scan_training
from agentgolf.baseline.shards import BOS_ID, read_shard, shard_token_count, write_shard
from agentgolf.baseline.tokenizer import train_tokenizer
from agentgolf.experiments.ledger import Run
from agentgolf.sandbox.result import SandboxResult, Status
from agentgolf.sandbox.runner import run_sandboxed
from tests.sandbox_support import TEST_BUDGET, TRAINERS, data_spec
from tests.tiny import make_workspace

VAL_DOCS = 40


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_dataset) -> DatasetInfo:
    """40 validation documents and ~1.2M training tokens in 3 shards (the tiny tokenizer, reused)."""
    return build_dataset(
        demo_corpus(3_000_000),
        tmp_path_factory.mktemp("clean"),
        name="clean",
        tokenizer=tiny_dataset.tokenizer,
        val_docs=VAL_DOCS,
        shard_tokens=400_000,
    )


@pytest.fixture
def copy(tmp_path, clean) -> DatasetInfo:
    """A private copy of the clean dataset, to damage."""
    shutil.copytree(clean.root, tmp_path / "root")
    return load_dataset(tmp_path / "root" / "datasets" / clean.name)


def docs_of(tokens: np.ndarray) -> list[np.ndarray]:
    starts = np.flatnonzero(tokens == BOS_ID)
    return [tokens[a:b] for a, b in zip(starts, [*starts[1:], tokens.size], strict=True)]


def rewrite(info: DatasetInfo, shard: Path, tokens: np.ndarray) -> None:
    """Write a shard and keep the manifest's counts true, so only the content is wrong."""
    write_shard(shard, tokens)
    path = info.dataset_dir / "manifest.json"
    m = json.loads(path.read_text())
    for split in ("train", "val"):
        for entry in m["shards"][split]:
            entry["tokens"] = shard_token_count(info.dataset_dir / entry["file"])
        m["tokens"][split] = sum(e["tokens"] for e in m["shards"][split])
    path.write_text(json.dumps(m))


def by_check(report, check: str) -> list:
    return [f for f in report.findings if f.check == check]


def test_clean_dataset_passes(clean):
    report = check_dataset(clean.dataset_dir)
    assert not report.failed, report.lines()
    docs, grams = by_check(report, "leak")
    assert docs.value == 0 and docs.level == "ok" and f"0 of {VAL_DOCS} validation documents" in docs.message
    assert grams.value < DataCheckConfig().warn_ngram_share and grams.level == "ok"
    assert report.train_tokens_scanned == clean.train_tokens
    assert {f.check for f in report.findings} == {"shards", "leak", "bos", "tokenizer"}


def test_five_percent_of_val_docs_copied_into_training_is_caught_with_that_share(copy):
    val_docs = docs_of(read_shard(copy.val_files[0]))
    assert len(val_docs) == VAL_DOCS
    leaked = [val_docs[3], val_docs[17]]  # 5% of the validation documents
    shard = copy.train_files[1]
    train = read_shard(shard)
    cut = docs_of(train)[5].size + np.flatnonzero(train == BOS_ID)[5]  # between two training docs
    rewrite(copy, shard, np.concatenate([train[:cut], *leaked, train[cut:]]))

    report = check_dataset(copy.dataset_dir)
    assert report.failed
    docs, grams = by_check(report, "leak")
    assert docs.level == "fail" and docs.value == pytest.approx(0.05)
    assert f"2 of {VAL_DOCS} validation documents (5.00%) found in training" in docs.message
    assert grams.value >= 0.02  # the copied documents' n-grams, in a 1/16 sample
    assert "fail: leak: 2 of 40 validation documents (5.00%)" in "\n".join(report.lines())
    assert [f.level for f in by_check(report, "shards")] == ["ok"]  # the counts alone would not tell


def test_leaked_doc_across_a_shard_boundary_and_the_fast_mode(copy):
    val_doc = docs_of(read_shard(copy.val_files[0]))[9]
    a, b = copy.train_files[0], copy.train_files[1]
    half, ta, tb = val_doc.size // 2, read_shard(a), read_shard(b)
    last = np.flatnonzero(ta == BOS_ID)[-1]  # shard a's last doc goes on in shard b: move it there whole
    rewrite(copy, a, np.concatenate([ta[:last], val_doc[:half]]))
    rewrite(copy, b, np.concatenate([val_doc[half:], ta[last:], tb]))
    report = check_dataset(copy.dataset_dir, config=DataCheckConfig(chunk_tokens=1000))
    assert by_check(report, "leak")[0].value == pytest.approx(1 / VAL_DOCS)
    fast = check_dataset(copy.dataset_dir, fast=True, config=DataCheckConfig(fast_train_tokens=1))
    assert fast.mode == "fast" and fast.train_tokens_scanned < copy.train_tokens
    docs = by_check(fast, "leak")[0]  # the first shard's last document is read on into the second
    assert (
        docs.value == pytest.approx(1 / VAL_DOCS) and "found in the 1 of 4 train shards read" in docs.message
    )


def test_scan_is_the_same_for_any_chunk_and_in_worker_processes(clean):
    args = (32, 4, 16)
    results = []
    for chunk, workers in ((1 << 20, 1), (777, 1), (50_000, 2)):
        sample = ValSample.build(clean.val_files, *args, chunk)
        hits = scan_training(sample, clean.train_files, *args, chunk, workers)
        results.append(
            (
                sample.docs.tolist(),
                sample.grams.tolist(),
                hits["found_grams"].tolist(),
                hits["tokens"],
                hits["bos"],
            )
        )
    assert results[0] == results[1] == results[2]
    assert results[0][3] == clean.train_tokens and results[0][4] == clean.train_docs


def test_counts_bos_and_tokenizer_failures(copy, tmp_path):
    # a shard the manifest does not list (the `train_shards: 1499` fingerprint) and a count it got wrong
    shutil.copyfile(copy.train_files[0], copy.dataset_dir / "fineweb_train_000099.bin")
    m = json.loads((copy.dataset_dir / "manifest.json").read_text())
    m["published_train_shards"] = 4
    m["shards"]["val"][0]["tokens"] += 1
    (copy.dataset_dir / "manifest.json").write_text(json.dumps(m))
    lines = check_dataset(copy.dataset_dir).lines()
    assert "fail: shards: 5 train shards on disk, the manifest lists 4 (0 missing, 1 not listed" in "\n".join(
        lines
    )
    assert "fail: shards: 5 train shards, but the published export has 4" in lines
    assert any(line.startswith("fail: shards: fineweb_val_000000.bin holds") for line in lines)
    (copy.dataset_dir / "fineweb_train_000099.bin").unlink()

    # a shard with no BOS at all (the CaseOps bug that broke phased TTT)
    shard = copy.train_files[2]
    rewrite(copy, shard, read_shard(shard)[read_shard(shard) != BOS_ID])
    lines = check_dataset(copy.dataset_dir).lines()
    assert "fail: bos: fineweb_train_000002.bin: no BOS (no document starts)" in lines

    # another tokenizer than the shards were built with
    other = train_tokenizer(demo_corpus(100_000), tmp_path / "other", 256, byte_fallback=False)
    report = check_dataset(copy.dataset_dir, tokenizer=other)
    assert any(
        f.level == "fail" and "the shards were built with" in f.message for f in by_check(report, "tokenizer")
    )


def test_known_variant_counts(clean):
    """Judged as the sp1024 export, a 40-document validation split is far from its 50,000 and 63.8M tokens."""
    report = check_dataset(clean.dataset_dir, variant="sp1024")
    tokens, docs = by_check(report, "val")
    assert tokens.level == "fail" and "records scored 63,779,840" in tokens.message
    assert (
        docs.level == "fail" and f"{VAL_DOCS} val documents; the official split holds 50,000" in docs.message
    )


def test_cli_one_line_per_finding_and_exit_status(copy, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "agentgolf.agent.cli.main", "data", "check", *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    ok = run(str(copy.root))  # a data root with one dataset under datasets/
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.strip().splitlines()
    assert all(line.startswith(("ok:", "warn:")) for line in lines[:-1]) and "full check of" in lines[-1]
    leak_one(copy)
    bad = run(str(copy.dataset_dir), "--fast")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "fail: leak: 1 of 40 validation documents (2.50%) found in training" in bad.stdout
    assert bad.stdout.strip().splitlines()[-1].startswith("fast check of")
    as_json = json.loads(run(str(copy.dataset_dir), "--json").stdout)
    assert as_json["mode"] == "full" and any(f["level"] == "fail" for f in as_json["findings"])


def leak_one(info: DatasetInfo) -> None:
    """Copy validation document 0 between two documents of the first training shard."""
    val_doc = docs_of(read_shard(info.val_files[0]))[0]
    tokens = read_shard(info.train_files[0])
    last = np.flatnonzero(tokens == BOS_ID)[-1]
    rewrite(info, info.train_files[0], np.concatenate([tokens[:last], val_doc, tokens[last:]]))


def test_a_run_on_leaked_data_stops_before_the_baseline(copy, tmp_path):
    leak_one(copy)
    ws = make_workspace(tmp_path / "ws", copy)
    cmd = [sys.executable, "-m", "agentgolf.agent.cli.main", "run", "--budget", "1"]
    proc = subprocess.run(cmd, cwd=ws.root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(
        "error: the data check failed (--allow-data-warnings to run anyway): fail: leak: 1 of"
    )
    assert all(line.startswith(("error:", "fail:")) for line in lines)
    assert ws.ledger().experiments() == [] and not (ws.state / "runs").exists()
    recorded = json.loads((ws.state / "data_check.json").read_text())
    assert recorded["mode"] == "fast" and recorded["allowed"] is False

    said: list[str] = []
    report = gate_run(ws, allow=True, say=said.append)  # --allow-data-warnings: on, and recorded
    assert report.failed and report.allowed
    assert (
        said
        and said[0].startswith("data check: fail: leak: 1 of 40")
        and said[0].endswith("--allow-data-warnings)")
    )
    entry = manifest_entry(ws.state)
    assert entry["allowed"] is True and entry["mode"] == "fast"
    assert any(line.startswith("fail: leak: 1 of 40") for line in entry["findings"])
    ws.config.data.check = DataCheckConfig(max_doc_share=0.05)  # the workspace's own setting judges
    assert not gate_run(ws).failed


def test_data_from_the_challenges_own_downloader(copy):
    """No dataset manifest, but the export's data/manifest.json: its published counts bound the shards."""
    (copy.dataset_dir / "manifest.json").unlink()
    entry = {"name": "clean", "tokenizer_name": "t", "stats": {"files_train": 3, "files_val": 1}}
    official = {"datasets": [entry], "tokenizers": [{"name": "t", "model_path": "tokenizers/clean.model"}]}
    (copy.root / "manifest.json").write_text(json.dumps(official))
    lines = check_dataset(copy.dataset_dir).lines()
    assert (
        "warn: shards: no manifest.json: counts from the export's own manifest.json, the tokenizer's hash unchecked"
        in lines
    )
    assert "fail: shards: 4 train shards, but the published export has 3" in lines
    assert "warn: tokenizer: the manifest records no tokenizer sha256 to check" in "\n".join(lines)
    entry["stats"] = {"files_train": 80, "files_val": 2}
    (copy.root / "manifest.json").write_text(json.dumps(official))
    report = check_dataset(copy.dataset_dir)
    assert "fail: shards: 1 val shards, the export has 2: scores would not be comparable" in report.lines()
    (copy.root / "manifest.json").unlink()  # nothing to compare with: warned, and the leak check still runs
    report = check_dataset(copy.dataset_dir, tokenizer=copy.tokenizer)
    assert not report.failed and by_check(report, "leak")[0].value == 0


def test_the_manifest_records_the_data_check_and_the_trainer_that_ran(tmp_path, tiny_dataset):
    """Each manifest carries the run's data check; the sha256 of the trainer file the sandbox read is recorded
    and checked against the commit's blob: a different file is the harness's failure, never a score."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    gate_run(ws)
    ledger = ws.ledger()
    lab = Lab(ws, ledger, ws.config.budget)
    commit = lab.repo.head.commit.hexsha
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit=commit))
    blob = hashlib.sha256(lab.trainer_source(commit)).hexdigest()

    def row(ran: str, bpb: float):
        exp = ledger.add_experiment(
            run_id="r1", kind="baseline", status="running", title="t", seed=1, commit_sha=commit
        )
        run_dir = lab.prepare_run_dir(exp, None)
        assert hashlib.sha256((run_dir / "train_gpt.py").read_bytes()).hexdigest() == blob
        return lab.record(exp, SandboxResult(status=Status.ok, val_bpb=bpb, trainer_sha256=ran), None)

    ok = row(blob, 2.5)
    assert ok.status == "ok" and ok.manifest["trainer_sha256"] == ok.manifest["trainer_ran_sha256"] == blob
    assert ok.manifest["data_check"]["mode"] == "fast" and ok.manifest["data_check"]["allowed"] is False
    assert any(line.startswith("ok: leak:") for line in ok.manifest["data_check"]["findings"])
    other = row("0" * 64, 2.4)  # e.g. a formatter rewrote the file between the commit and the run
    assert other.status == "infra_error" and other.val_bpb is None
    assert (
        f"is not commit {commit[:10]}'s" in other.reason and other.manifest["trainer_ran_sha256"] == "0" * 64
    )


def test_the_sandbox_records_the_sha256_of_the_trainer_it_ran(tmp_path, tiny_dataset):
    trainer = (
        TRAINERS / "print_env.py"
    )  # exits without an artifact: the hash is recorded whatever the outcome
    result = run_sandboxed(trainer, tmp_path / "run", data_spec(tiny_dataset), TEST_BUDGET)
    assert result.trainer_sha256 == hashlib.sha256(trainer.read_bytes()).hexdigest()
    recorded = json.loads((tmp_path / "run" / "result.json").read_text())
    assert recorded["trainer_sha256"] == result.trainer_sha256  # as a SLURM job's result comes back
