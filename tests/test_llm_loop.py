"""The openai proposer in a real run: a local OpenAI-compatible server (a real HTTP server on 127.0.0.1,
tests/fake_llm.py) records every request while the real scheduler trains the real trainer in the sandbox.
The prompt carries the parent's run facts read from the baseline's run folder; a capped tool session
edits the worktree and ends in a commit; its cost lands in the ledger; the endpoint's mode in the manifest."""

from __future__ import annotations

import pytest
from rich.console import Console

from agentgolf.agent.controller.loop import Loop, RunCaps
from agentgolf.agent.proposers.briefing.digest import build_digest
from agentgolf.agent.proposers.briefing.facts import outcome
from agentgolf.agent.workspace import save_config
from agentgolf.experiments import worktree as wt
from tests.fake_llm import FakeLLM, llm_config, tool_reply
from tests.tiny import make_workspace


@pytest.mark.slow
def test_a_capped_tool_session_sees_the_parents_facts_and_ends_in_a_commit(
    tmp_path, tiny_dataset, monkeypatch
):
    submit = {
        "title": "Lower the tied embedding LR",
        "hypothesis": "the parent ran all its steps; a smaller embedding step suits a short run",
        "category": "opt",
        "expected_effect": "-0.01 bpb",
    }
    script = [
        tool_reply([("search", {"pattern": "TIED_EMBED_LR"})]),
        tool_reply([("set", {"values": {"TIED_EMBED_LR": 0.04}})]),
        tool_reply([("submit", submit)]),  # the third turn is the last: only submit is offered
    ]
    with FakeLLM(script, tools=True) as llm:
        ws = make_workspace(tmp_path / "ws", tiny_dataset)
        ws.config.llm = llm_config(llm.base_url, monkeypatch, request_timeout_s=5.0, max_turns=3)
        save_config(ws.config_path, ws.config)
        loop = Loop(ws, ws.ledger(), ws.config.budget, console=Console(file=open(tmp_path / "out.txt", "w")))
        summary = loop.run(RunCaps(experiments=2), "openai")
        requests = list(llm.requests)

    # What the model was told: the parent's facts, from the baseline's real log and result.
    prompt = requests[0]["messages"][1]["content"]
    for fact in (
        "# The parent's run",
        "steps: ran all 6 planned steps, ",
        " ms/step",
        "training time: ",
        "of train_seconds 600",
        "train loss: step 1 ",
        "val_bpb: before the quantization roundtrip not measured",
        "bytes of headroom",
        "hardware: CPU only",
        "trainer_env in force (wins over the file): PRESET=cpu, NUM_LAYERS=2",
        "PRESET=cpu sets (over the Hyperparameters defaults): WARMDOWN_ITERS=",
        "the trainer printed its settings as: ",
        "iterations=6",
        "Your change will be applied to experiment 1 (Baseline",
    ):
        assert fact in prompt, fact
    assert requests[-1]["tool_choice"] == {"type": "function", "function": {"name": "submit"}}
    assert len(requests) == 3

    rows = loop.ledger.experiments(run_id=summary.run_id)
    base, proposal = [e for e in rows if e.kind != "control"]  # its round's control aside
    assert proposal.kind == "proposal" and proposal.status == "ok", proposal.reason
    assert proposal.title == submit["title"] and proposal.commit_sha != base.commit_sha
    diff = wt.diff(loop.lab.repo, base.commit_sha, proposal.commit_sha)
    assert '+    tied_embed_lr = float(os.environ.get("TIED_EMBED_LR", 0.04))' in diff
    message = loop.lab.repo.commit(proposal.commit_sha).message
    assert "set: TIED_EMBED_LR=0.04" in message
    assert proposal.tokens == 3 * 1050 and proposal.usd == pytest.approx((3000 * 2.0 + 150 * 8.0) / 1e6)
    session = loop.ledger.get(proposal.id).manifest["proposer_session"]
    assert session["mode"] == "chat_tools" and session["turns"] == 3
    assert session["endpoint"]["mode"] == "chat_tools" and session["endpoint"]["refused"]

    # The digest a later proposal reads says why this result came out as it did.
    digest = build_digest(
        loop.ledger.experiments(),
        base,
        why=lambda e: outcome(e, ws.run_dir(e.id), ws.config.budget.size_bytes),
    )
    line = next(t for t in digest.splitlines() if t.startswith(f"- exp {proposal.id} "))
    assert ("kept (" in line) or any(w in line for w in ("dead end", "inconclusive: ", "won (")), line
    assert "reverted" not in line  # the judge's words, not a bare revert
