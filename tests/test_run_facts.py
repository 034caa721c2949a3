"""The facts a proposal is asked with: the parent's run, why each result came out so, what is in flight.

The logs below are written in the baseline trainer's own formats (its `log0` lines, copied from
baseline/train_gpt.py) and the result files in the sandbox's (`SandboxResult` as runner.py writes it):
they stand in for run folders so that each case (a wall-clock stop, a divergence, an oversized
artifact) is exact. A real run's folder is read in tests/test_llm_loop.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import git

from agentgolf.agent.controller.notes import add_note, notes_block, read_notes, remove_notes
from agentgolf.agent.proposers.briefing.context import change_summary, in_flight_block
from agentgolf.agent.proposers.briefing.digest import DigestConfig, build_digest
from agentgolf.agent.proposers.briefing.facts import outcome, parent_block, parent_facts, parse_train_log
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.result import SandboxResult, Status

HEAD = """[agentgolf] sandbox ready
train_loader:dataset:shards train_shards:1
val_loader:skipped no fineweb_val_*.bin in /data/shards; validation is skipped
model_params:17059912
world_size:8 grad_accum_steps:1
seed:1337
train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:3 max_wallclock_seconds:600.000
"""
CAPPED = (
    HEAD
    + "".join(
        f"step:{s}/20000 train_loss:{6.9 - s / 1000:.4f} train_time:{s * 480}ms step_avg:480.00ms\n"
        for s in (1, 2, 3, 200, 400, 600, 800, 1000, 1200)
    )
    + "step:1249/20000 train_loss:5.6512 train_time:599520ms step_avg:480.00ms\n"
    + "stopping_early: wallclock_cap train_time:599520ms step:1249/20000\n"
    + "peak memory allocated: 10240 MiB reserved: 11000 MiB\n"
    + "Serialized model int8+zlib: 15800000 bytes (payload:1 raw_torch:1 payload_ratio:1.00x)\n"
)
DIVERGED = HEAD + "".join(
    f"step:{s}/20000 train_loss:{loss} train_time:{s * 480}ms step_avg:480.00ms\n"
    for s, loss in ((1, "6.9300"), (200, "5.1000"), (400, "4.8000"), (600, "7.9000"), (800, "nan"))
)


def _row(i: int, **fields) -> Experiment:
    base = dict(id=i, kind="proposal", status="ok", title=f"idea {i}", parent_id=1, created_at=time.time())
    return Experiment(**{**base, **fields})


def _run_dir(root: Path, exp_id: int, log: str, **result) -> Path:
    folder = root / str(exp_id)
    folder.mkdir(parents=True)
    (folder / "train.log").write_text(log)
    status = result.pop("status", Status.ok)
    (folder / "result.json").write_text(
        json.dumps(SandboxResult(status=status, **result).model_dump(mode="json"))
    )
    return folder


def test_the_log_is_read_for_steps_pace_loss_memory_and_settings():
    log = parse_train_log(CAPPED)
    assert log.wallclock_stop and (log.step, log.planned) == (1249, 20000)
    assert log.step_ms == 480.0 and log.train_ms == 599520.0
    assert log.losses[0] == (1, 6.899) and log.losses[-1] == (1249, 5.6512)
    assert log.peak_mib == (10240, 11000)
    assert log.settings["iterations"] == "20000" and log.settings["world_size"] == "8"
    assert "train_loader" not in log.settings and "val_loader" not in log.settings  # not settings lines
    assert log.diverged_at() is None
    assert parse_train_log(DIVERGED).diverged_at() == 600  # back above where it started


def test_the_parents_block_has_every_fact_and_a_fixed_size(tmp_path):
    run_dir = _run_dir(
        tmp_path,
        7,
        CAPPED,
        val_bpb=1.2345,
        artifact_bytes=15_850_000,
        code_bytes=50_000,
        model_bytes=15_800_000,
        train_seconds=611.5,
    )
    manifest = {"gpus": list(range(8)), "gpu_model": "NVIDIA H100 80GB HBM3", "torch": "2.8.0"}
    parent = _row(7, title="Wider MLP", val_bpb=1.2345, artifact_bytes=15_850_000, manifest=manifest)
    source = 'PRESETS = {\n    "fast": {\n        "MATRIX_LR": 0.05,\n        "ITERATIONS": 900,\n    },\n}\n'
    facts = parent_facts(parent, run_dir, source, 600, 16_000_000, {"PRESET": "fast", "ITERATIONS": "20000"})
    block = parent_block(facts, 2_500)
    for expected in (
        "stopped at the wall-clock cap at step 1,249 of 20,000, 480.0 ms/step",
        "599.5 s by the trainer's clock, 611.5 s for the whole phase",
        "of train_seconds 600",
        "step 1 6.8990",
        "step 1,249 5.6512",
        "after it 1.2345 (scored by the harness)",
        "15,850,000 bytes = code 50,000 + model 15,800,000; cap 16,000,000: 150,000 bytes of headroom",
        "peak memory: 10.0 GiB allocated",
        "8 x NVIDIA H100 80GB HBM3 (devices 0,1,2,3,4,5,6,7), torch 2.8.0",
        "trainer_env in force (wins over the file): PRESET=fast, ITERATIONS=20000",
        'PRESET=fast sets (over the Hyperparameters defaults): MATRIX_LR=0.05; edit the PRESETS["fast"]',
        "iterations=20000",
    ):
        assert expected in block, (expected, block)
    assert "ITERATIONS=900" not in block  # the environment wins over the preset: not in force
    assert len(parent_block(facts, 400)) <= 400


def test_each_digest_line_says_why(tmp_path):
    _run_dir(tmp_path, 2, CAPPED, val_bpb=1.30)
    _run_dir(tmp_path, 3, DIVERGED, status=Status.nan)
    _run_dir(tmp_path, 4, CAPPED, status=Status.over_size, code_bytes=50_000, model_bytes=16_100_000)
    rows = [
        _row(1, kind="baseline", kept=True, val_bpb=1.25, parent_id=None, reason=""),
        _row(2, val_bpb=1.30, delta_bpb=0.05, reason="no better than its parent (+0.0500 bpb)"),
        _row(3, status="nan", reason="non-finite loss"),
        _row(4, status="over_size", artifact_bytes=16_150_000, reason="artifact too large"),
        _row(5, kept=True, val_bpb=1.20, delta_bpb=-0.05, reason="-0.0500 bpb after 2 runs, t=5.1, p=0.002"),
        _row(6, status="rejected", reason="edit 1: search text not found in train_gpt.py"),
    ]

    def why(e: Experiment) -> str:
        return outcome(e, tmp_path / str(e.id), 16_000_000)

    digest = build_digest(rows, rows[4], DigestConfig(), why)
    lines = {int(t.split()[2]): t for t in digest.splitlines() if t.startswith("- exp")}
    assert "reverted: no better than its parent (+0.0500 bpb)" in lines[2]
    assert "stopped at the wall-clock cap at step 1,249 of 20,000" in lines[2]
    assert "nan: non-finite loss; the train loss diverged at step 600" in lines[3]
    assert "over size by 150,000 bytes (code 50,000 + model 16,100,000)" in lines[4]
    assert "kept (-0.0500 bpb after 2 runs, t=5.1, p=0.002)" in lines[5]
    assert "rejected: edit 1: search text not found" in lines[6]
    assert "score.log" not in digest


def test_what_is_in_flight_names_the_parent_and_each_change(tmp_path):
    repo = git.Repo.init(tmp_path / "repo")
    trainer = tmp_path / "repo" / "train_gpt.py"
    trainer.write_text('lr = float(os.environ.get("MATRIX_LR", 0.04))\nlayers = 9\n')
    repo.index.add(["train_gpt.py"])
    base = repo.index.commit("base").hexsha
    trainer.write_text('lr = float(os.environ.get("MATRIX_LR", 0.02))\nlayers = 9\n')
    repo.index.add(["train_gpt.py"])
    change = repo.index.commit("lower lr").hexsha
    assert change_summary(tmp_path / "repo", base, change) == (
        '- lr = float(os.environ.get("MATRIX_LR", 0.04)) | + lr = float(os.environ.get("MATRIX_LR", 0.02))'
    )
    parent = _row(1, kind="baseline", title="Baseline", val_bpb=2.5, commit_sha=base)
    running = _row(2, status="running", title="Halve the LR", parent_commit=base, commit_sha=change)
    done = _row(3, status="crash", title="Crashed", parent_commit=base, commit_sha=change)
    text = in_flight_block(tmp_path / "repo", parent, [parent, running, done])
    assert "applied to experiment 1 (Baseline, val_bpb 2.5000)" in text
    assert "exp 2 on experiment 1 (training): Halve the LR; changes: - lr" in text and "exp 3" not in text
    assert "Nothing else is training" in in_flight_block(tmp_path / "repo", parent, [parent, done])


def test_notes_are_added_listed_and_removed(tmp_path):
    first = add_note(tmp_path, "try shorter warmdown;  the width changes are done")
    second = add_note(tmp_path, "keep the artifact under 15.5 MB")
    assert [n.id for n in read_notes(tmp_path)] == [1, 2]
    assert notes_block(read_notes(tmp_path)) == (
        "- try shorter warmdown; the width changes are done\n- keep the artifact under 15.5 MB"
    )
    assert notes_block(read_notes(tmp_path), max_chars=40) == "- keep the artifact under 15.5 MB"
    assert remove_notes(tmp_path, first.id) == [first]
    assert read_notes(tmp_path) == [second]
    remove_notes(tmp_path)
    assert read_notes(tmp_path) == [] and notes_block([]) == ""
