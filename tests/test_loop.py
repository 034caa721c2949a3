"""The orchestrator's acceptance path on real runs: noise calibration, a confirmation re-run, promotion."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import git
import pytest
from rich.console import Console

from agentgolf.agent.controller.loop import Loop, RunCaps
from agentgolf.agent.judge.acceptance import AcceptanceConfig
from agentgolf.agent.proposers.command import CommandConfig
from agentgolf.agent.workspace import save_config
from agentgolf.experiments import worktree as wt
from tests.fake_llm import FakeLLM, error, llm_config, reply
from tests.tiny import TINY_ENV, make_workspace

# The "agent": train four times longer than the baseline, a change far larger than seed noise.
LONGER = """
import re
text = open("train_gpt.py").read()
text = re.sub(r'"ITERATIONS": \\d+,', '"ITERATIONS": 24,', text, count=1)
open("train_gpt.py", "w").write(text)
"""


@pytest.mark.slow
def test_calibrate_then_confirm_then_promote(tmp_path: Path, tiny_dataset):
    ws = make_workspace(
        tmp_path / "ws", tiny_dataset, env={k: v for k, v in TINY_ENV.items() if k != "ITERATIONS"}
    )
    root, repo = ws.root, git.Repo(ws.root)
    trainer = root / "train_gpt.py"
    short, n = re.subn(r'"ITERATIONS": \d+,', '"ITERATIONS": 6,', trainer.read_text(), count=1)
    assert n == 1  # the preset's step count, which the short baseline overrides
    trainer.write_text(short)
    repo.index.add(["train_gpt.py"])
    repo.index.commit("a short CPU baseline", author=wt.AUTHOR, committer=wt.AUTHOR)
    (tmp_path / "agent.py").write_text(LONGER)
    # Three baseline seeds (2 dof), at most two runs of a candidate: one confirmation, then a decision.
    ws.config.acceptance = AcceptanceConfig(noise_seeds=3, max_runs=2, alpha=0.05)
    ws.config.command = CommandConfig(cmd=f"{sys.executable} {tmp_path / 'agent.py'}")
    save_config(ws.config_path, ws.config)

    loop = Loop(ws, ws.ledger(), ws.config.budget, console=Console(file=open(tmp_path / "out.txt", "w")))
    summary = loop.run(RunCaps(experiments=2), "command")

    rows = loop.ledger.experiments(run_id=summary.run_id)
    kinds = ["baseline", "calibration", "calibration", "proposal", "control", "confirm", "control"]
    assert [e.kind for e in rows] == kinds, [(e.kind, e.status) for e in rows]
    base, calibration, calibration2, proposal, control, confirm, control2 = rows
    assert calibration.seed == base.seed + 1 and calibration.replay_of == base.id
    assert calibration2.seed == base.seed + 2 and calibration2.replay_of == base.id
    assert calibration.val_bpb != base.val_bpb  # distinct seeds: a measured, non-zero noise floor
    assert confirm.replay_of == proposal.id and confirm.seed != proposal.seed
    assert confirm.commit_sha == proposal.commit_sha
    # Each round: the candidate's run and a control of its parent, with one seed (one slot: back to back,
    # the order alternating: candidate first, then control first).
    assert (control.paired_with, control.seed, control.commit_sha) == (
        [proposal.id],
        proposal.seed,
        base.commit_sha,
    )
    assert (control2.paired_with, control2.seed, control2.replay_of) == ([confirm.id], confirm.seed, base.id)
    assert proposal.started_at < control.started_at and control2.started_at < confirm.started_at
    assert control.val_bpb == base.val_bpb  # the CPU trainer is deterministic: the same seed, the same run
    assert proposal.status == "ok" and proposal.kept, proposal.reason
    assert "p=" in proposal.reason and "2 pairs" in proposal.reason
    # The evidence is on the row: the two paired differences, the noise from the seeds' prior (2 dof).
    decision = proposal.decision
    assert decision["decision"] == "promote" and decision["design"] == "paired"
    assert decision["noise"] == "pooled" and decision["dof"] == 2
    diffs = [proposal.val_bpb - control.val_bpb, confirm.val_bpb - control2.val_bpb]
    assert decision["samples"] == pytest.approx(diffs) and decision["parent_samples"] == []
    assert [(p["candidate"], p["control"], p["seed"]) for p in decision["pairs"]] == [
        (proposal.id, control.id, proposal.seed),
        (confirm.id, control2.id, confirm.seed),
    ]
    assert decision["p_value"] <= decision["promote_below"]
    assert summary.best_id == proposal.id and summary.stop_reason == "budget spent"
    assert repo.commit(wt.best_branch(summary.run_id)).hexsha == proposal.commit_sha


def _llm_workspace(tmp_path: Path, tiny_dataset, url: str, monkeypatch):
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    ws.config.llm = llm_config(
        url, monkeypatch, request_timeout_s=2.0, api_attempts=3, usd_per_mtok_in=1000.0
    )
    save_config(ws.config_path, ws.config)
    return ws


def _quiet(tmp_path: Path) -> Console:
    return Console(file=open(tmp_path / "out.txt", "w"))


@pytest.mark.slow
def test_llm_outage_ends_the_run_cleanly(tmp_path, tiny_dataset, monkeypatch):
    with FakeLLM([error(503)] * 20) as llm:
        ws = _llm_workspace(tmp_path, tiny_dataset, llm.base_url, monkeypatch)
        loop = Loop(ws, ws.ledger(), ws.config.budget, console=_quiet(tmp_path))
        summary = loop.run(RunCaps(experiments=3), "openai")
    assert summary.stop_reason.startswith("proposer failed: LLM endpoint failed 3 times")
    rows = loop.ledger.experiments(run_id=summary.run_id)
    assert [(e.kind, e.status) for e in rows] == [("baseline", "ok")]  # nothing lost, nothing half-recorded
    assert loop.ledger.get_run(summary.run_id).status == "finished"


@pytest.mark.slow
def test_dollar_cap_stops_the_run_and_says_so(tmp_path, tiny_dataset, monkeypatch):
    edit = {"path": "train_gpt.py", "search": '"TIED_EMBED_LR", 0.05', "replace": '"TIED_EMBED_LR", 0.04'}
    proposal = json.dumps({"title": "Lower the embedding LR", "category": "opt", "edits": [edit]})
    with FakeLLM([reply(proposal, prompt_tokens=2000, completion_tokens=10)] * 3) as llm:
        ws = _llm_workspace(tmp_path, tiny_dataset, llm.base_url, monkeypatch)
        loop = Loop(ws, ws.ledger(), ws.config.budget, console=_quiet(tmp_path))
        summary = loop.run(RunCaps(experiments=5, usd=1.0), "openai")  # one proposal costs $2
    rows = loop.ledger.experiments(run_id=summary.run_id)
    assert summary.stop_reason.startswith("LLM dollar cap reached")
    assert [e.kind for e in rows if e.kind != "control"] == ["baseline", "proposal"]
    assert rows[1].tokens == 2010 and rows[1].usd == pytest.approx(2.0, rel=1e-3)
    assert rows[1].status in ("ok", "inconclusive") and rows[1].val_bpb is not None
