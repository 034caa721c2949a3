"""The command proposer runs a real external program in the worktree; whatever it changed is the patch."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from agentgolf.agent.proposers.command import CommandConfig, CommandProposer
from agentgolf.agent.proposers.proposal import ProposalContext, ProposalError
from agentgolf.errors import AgentgolfError
from agentgolf.sandbox.isolation.bwrap import find_bwrap
from tests.tiny import proposal_tree

TRAINER = 'import os\nmatrix_lr = float(os.environ.get("MATRIX_LR", 0.04))\n'

AGENT = """
import json, os, sys
prompt = sys.stdin.read()
assert "Rules that every change must respect" in prompt and prompt == open(os.environ["AGENTGOLF_PROMPT"]).read()
text = open("train_gpt.py").read().replace("0.04", "0.03")
open("train_gpt.py", "w").write(text)
if "--describe" in sys.argv:
    json.dump({"title": "Lower the Muon LR", "hypothesis": "smaller steps", "category": "opt"},
              open(os.environ["AGENTGOLF_PROPOSAL"], "w"))
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, ProposalContext, Path]:
    ctx = proposal_tree(tmp_path / "tree", TRAINER)
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    return tmp_path / "tree", ctx, agent


def test_agent_edit_becomes_the_patch(setup):
    tree, ctx, agent = setup
    proposal = CommandProposer(CommandConfig(cmd=f"{sys.executable} {agent} --describe"))(ctx, tree)
    assert proposal.title == "Lower the Muon LR" and proposal.category == "opt"
    assert "0.03" in (tree / "train_gpt.py").read_text()


def test_undescribed_edit_gets_a_title_from_the_files(setup):
    tree, ctx, agent = setup
    proposal = CommandProposer(CommandConfig(cmd=f"{sys.executable} {agent}"))(ctx, tree)
    assert proposal.title == "Agent edit of train_gpt.py"


def test_failures_are_reported(setup):
    tree, ctx, _ = setup
    with pytest.raises(ProposalError, match="changed no file"):
        CommandProposer(CommandConfig(cmd="true"))(ctx, tree)
    with pytest.raises(ProposalError, match="exited with code 3: boom"):
        CommandProposer(CommandConfig(cmd="echo boom; exit 3"))(ctx, tree)
    start = time.monotonic()
    with pytest.raises(ProposalError, match="ran past"):
        CommandProposer(CommandConfig(cmd="sleep 30 & sleep 30", timeout_s=1))(ctx, tree)
    assert time.monotonic() - start < 10
    with pytest.raises(AgentgolfError, match="--agent-cmd"):
        CommandProposer(CommandConfig())


SNOOP = """
import os, pathlib, sys
target = pathlib.Path(sys.argv[1])
try:
    data = target.read_bytes()
    found = f"READ {len(data)} bytes of the validation shard"
except OSError as e:
    found = f"blocked: {type(e).__name__}"
secrets = [k for k in os.environ if k.startswith("AGENTGOLF_TEST_SECRET")]
pathlib.Path("train_gpt.py").write_text(pathlib.Path("train_gpt.py").read_text() + f"# {found}; env {secrets}\\n")
"""


@pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")
@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_the_agent_cannot_read_validation_data_or_the_users_secrets(
    setup, tmp_path, tiny_dataset, monkeypatch, isolation
):
    """The attack: an agent reads a val shard (to bake it into its patch) and looks for the user's secrets.
    Sandboxed, it sees neither; the positive control, unsandboxed (isolation none), shows the attack works."""
    tree, ctx, _ = setup
    snoop = tmp_path / "snoop.py"
    snoop.write_text(SNOOP)
    shard = tiny_dataset.val_files[0]
    monkeypatch.setenv("AGENTGOLF_TEST_SECRET", "hunter2")
    monkeypatch.setenv("AGENTGOLF_ISOLATION", isolation)
    config = CommandConfig(cmd=f"{sys.executable} {snoop} {shard}")
    CommandProposer(config, hidden=[shard.parent])(ctx, tree)
    said = (tree / "train_gpt.py").read_text()
    if isolation == "bwrap":
        assert "blocked: FileNotFoundError" in said and "env []" in said, said
    else:
        assert "READ" in said, said
    assert "hunter2" not in said
