"""Similar past attempts, by BM25 (bm25s) over titles, hypotheses and the diffs in the workspace's git."""

from __future__ import annotations

import time
from pathlib import Path

import git

from agentgolf.agent.proposers.briefing.retrieval import GitDiffs, search, similar_attempts
from agentgolf.agent.proposers.llm.tools import Workbench
from agentgolf.agent.proposers.proposal import ProposalContext
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.budget import Budget

TRAINER = 'import os\ntied = float(os.environ.get("TIED_EMBED_LR", 0.05))\nlayers = int(os.environ.get("NUM_LAYERS", 9))\n'


def _commit(repo: git.Repo, text: str, message: str) -> str:
    Path(repo.working_dir, "train_gpt.py").write_text(text)
    repo.index.add(["train_gpt.py"])
    return repo.index.commit(message).hexsha


def _history(tmp_path):
    repo = git.Repo.init(tmp_path / "repo")
    base = _commit(repo, TRAINER, "base")
    lr = _commit(repo, TRAINER.replace("0.05", "0.03"), "edit")
    repo.git.checkout(base)
    depth = _commit(repo, TRAINER.replace("9))", "11))"), "edit")
    rows = [
        Experiment(
            id=1, kind="baseline", status="ok", title="Baseline", commit_sha=base, created_at=time.time()
        ),
        Experiment(
            id=2,
            kind="proposal",
            status="ok",
            title="Agent edit of train_gpt.py",
            parent_id=1,
            parent_commit=base,
            commit_sha=lr,
            delta_bpb=0.01,
            val_bpb=2.51,
            reason="no better",
            created_at=time.time(),
        ),
        Experiment(
            id=3,
            kind="proposal",
            status="crash",
            title="Agent edit of train_gpt.py",
            parent_id=1,
            parent_commit=base,
            commit_sha=depth,
            reason="exit code 1",
            created_at=time.time(),
        ),
        Experiment(
            id=4,
            kind="proposal",
            status="ok",
            title="Wider MLP",
            hypothesis="MLP 3x helped on the leaderboard",
            parent_id=1,
            created_at=time.time(),
        ),
    ]
    return tmp_path / "repo", rows


def test_the_diff_is_searched_not_only_the_title(tmp_path):
    root, rows = _history(tmp_path)
    hits = search(rows, "lower the TIED_EMBED_LR", root)
    assert [e.id for e, _ in hits] == [2] and 0 < hits[0][1] <= 1
    assert [e.id for e, _ in search(rows, "more layers: NUM_LAYERS 11", root)][0] == 3
    assert (
        similar_attempts(rows, "lower the TIED_EMBED_LR") == []
    )  # without the diffs there is nothing to find
    assert [e.id for e, _ in similar_attempts(rows, "a wider MLP")] == [4]
    assert search(rows, "the the of", root) == []  # only stopwords: no query
    assert (
        GitDiffs(root).prefetch(rows)(rows[1])
        == 'tied = float(os.environ.get("TIED_EMBED_LR", 0.05))\ntied = float(os.environ.get("TIED_EMBED_LR", 0.03))'
    )


def test_the_tool_shows_similar_attempts_with_their_outcomes(tmp_path):
    root, rows = _history(tmp_path)
    ctx = ProposalContext(
        source=TRAINER,
        trainer="train_gpt.py",
        parent=rows[0],
        history=rows,
        digest="",
        trainer_env={},
        budget=Budget(),
        root=root,
        runs_dir=tmp_path / "runs",
    )
    text = Workbench(ctx, root).call("similar", '{"query": "TIED_EMBED_LR lower"}')
    assert text.startswith(
        "- exp 2 Agent edit of train_gpt.py: val_bpb 2.5100, +0.0100 vs parent; reverted: no better"
    )
    assert "(similarity " in text
    assert "nothing tried so far" in Workbench(ctx, root).call("similar", '{"query": "tokenizer"}')
