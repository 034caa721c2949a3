"""The CLI-agent presets (`--agent codex|claude|aider`) against stand-in executables.

The real agents need accounts and a network, so each is replaced by a STAND-IN: a small Python program
on PATH named like the agent, which parses the same flags as that CLI documents (an unknown or missing
flag makes it fail, as the real one would), reads the prompt where the preset says it is given, edits the
trainer, and prints the output shapes the agent documents (codex's JSON Lines events, claude's `result`
object, aider's cost lines). Everything else, the proposer, git, the subprocesses, is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentgolf.agent.proposers.command import CommandConfig, CommandProposer
from agentgolf.agent.proposers.proposal import ProposalContext, ProposalError
from agentgolf.agent.workspace import save_config
from agentgolf.errors import AgentgolfError
from tests.tiny import make_workspace, proposal_tree

TRAINER = 'import os\nmatrix_lr = float(os.environ.get("MATRIX_LR", 0.04))\n'

COMMON = """#!{python}
# STAND-IN for the {name} CLI (tests/test_agent_presets.py): same flags and output shapes, no model.
import argparse, json, os, pathlib, sys
log = pathlib.Path(os.environ["STANDIN_LOG"])
def edit(prompt):
    assert "Rules that every change must respect" in prompt, "the prompt did not arrive"
    assert prompt == pathlib.Path(".agentgolf/prompt.md").read_text(), "the prompt file differs"
    assert prompt == pathlib.Path(os.environ["AGENTGOLF_PROMPT"]).read_text()
    text = pathlib.Path("train_gpt.py").read_text().replace("0.04", "0.03")
    pathlib.Path("train_gpt.py").write_text(text)
    log.write_text(json.dumps(sys.argv[1:]))
"""

CODEX = """
parser = argparse.ArgumentParser(prog="codex")
sub = parser.add_subparsers(dest="command", required=True)
ex = sub.add_parser("exec")
ex.add_argument("--json", action="store_true")
ex.add_argument("--full-auto", action="store_true")
ex.add_argument("--skip-git-repo-check", action="store_true")
ex.add_argument("-m", "--model")
ex.add_argument("prompt")
args = parser.parse_args()
assert args.json and args.full_auto, "the preset must ask for JSON Lines and workspace writes"
prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
events = [{"type": "thread.started", "thread_id": "th_1"}, {"type": "turn.started"}]
if os.environ.get("STANDIN_FAIL"):
    events.append({"type": "turn.failed", "error": {"message": "stream disconnected before completion"}})
else:
    edit(prompt)
    events.append({"type": "item.completed", "item": {"id": "i0", "type": "agent_message", "text": "Lowered the LR."}})
    for tokens in (9000, 3000):
        usage = {"input_tokens": tokens, "cached_input_tokens": 1000, "output_tokens": 400}
        events.append({"type": "turn.completed", "usage": usage})
for event in events:
    print(json.dumps(event))
"""

CLAUDE = """
parser = argparse.ArgumentParser(prog="claude")
parser.add_argument("-p", "--print", action="store_true")
parser.add_argument("--output-format", choices=["text", "json", "stream-json"], default="text")
parser.add_argument("--permission-mode", choices=["default", "acceptEdits", "bypassPermissions", "plan"])
parser.add_argument("--model")
parser.add_argument("prompt")
args = parser.parse_args()
assert args.print and args.output_format == "json", "the preset must run non-interactively with JSON"
assert ".agentgolf/prompt.md" in args.prompt, "the instruction names the prompt file"
failed = bool(os.environ.get("STANDIN_FAIL"))
if not failed:
    edit(pathlib.Path(".agentgolf/prompt.md").read_text())
print(json.dumps({
    "type": "result", "subtype": "error_during_execution" if failed else "success", "is_error": failed,
    "duration_ms": 21000, "duration_api_ms": 18000, "num_turns": 5, "session_id": "s-1",
    "result": "Credit balance is too low" if failed else "Lowered the Muon LR.",
    "total_cost_usd": 0.0423,
    "usage": {"input_tokens": 12, "cache_creation_input_tokens": 5000, "cache_read_input_tokens": 20000,
              "output_tokens": 700},
}))
"""

AIDER = """
parser = argparse.ArgumentParser(prog="aider")
parser.add_argument("--message-file", "-f", required=True)
for flag in ("--yes-always", "--no-auto-commits", "--no-stream", "--no-pretty", "--no-gitignore",
             "--no-check-update", "--analytics-disable"):
    parser.add_argument(flag, action="store_true")
parser.add_argument("--chat-history-file")
parser.add_argument("--input-history-file")
parser.add_argument("--model")
parser.add_argument("files", nargs="*")
args = parser.parse_args()
assert args.yes_always and args.no_auto_commits, "the preset must not ask or commit"
assert args.files == ["train_gpt.py"], "the trainer is added to the chat"
edit(pathlib.Path(args.message_file).read_text())
pathlib.Path(args.chat_history_file).write_text("# aider chat started\\n")
pathlib.Path(".aider.tags.cache.v4").mkdir(exist_ok=True)  # what aider leaves in the repository
(pathlib.Path(".aider.tags.cache.v4") / "cache.db").write_text("x")
print("Aider v0.86.1")
print("Tokens: 2.4k sent, 251 received. Cost: $0.0072 message, $0.0072 session.")
print("Applied edit to train_gpt.py")
print("Tokens: 3.1k sent, 1.2k cache write, 120 received. Cost: $0.0051 message, $0.0123 session.")
"""


@pytest.fixture
def standins(tmp_path: Path, monkeypatch) -> Path:
    """A bin folder with the three stand-ins, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("codex", CODEX), ("claude", CLAUDE), ("aider", AIDER)):
        path = bin_dir / name
        path.write_text(COMMON.format(python=sys.executable, name=name) + body)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_LOG", str(tmp_path / "argv.json"))
    # These tests check each preset's invocation and cost parsing; the stand-ins log to tmp_path, outside
    # what the agent's sandbox shows, so they run unsandboxed here. tests/test_command_proposer.py runs an
    # agent in the sandbox and checks what it cannot see.
    monkeypatch.setenv("AGENTGOLF_ISOLATION", "none")
    return tmp_path


PASS = ["STANDIN_LOG", "STANDIN_FAIL"]  # the stand-ins' own settings, passed like an API key would be


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, ProposalContext]:
    return tmp_path / "tree", proposal_tree(tmp_path / "tree", TRAINER)


def _untracked(tree: Path) -> list[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=tree, capture_output=True
    )
    return out.stdout.decode().split()


@pytest.mark.parametrize(
    ("agent", "tokens", "usd", "argv_has"),
    [
        ("codex", (12_000, 800), (12_000 * 1.25 + 800 * 10.0) / 1e6, ["exec", "--json", "--full-auto", "-"]),
        (
            "claude",
            (25_012, 700),
            0.0423,
            ["-p", "--output-format", "json", "--permission-mode", "acceptEdits"],
        ),
        ("aider", (5_500, 371), 0.0123, ["--message-file", ".agentgolf/prompt.md", "--yes-always"]),
    ],
)
def test_a_preset_runs_the_agent_as_documented_and_reads_its_cost(
    standins, tree, agent, tokens, usd, argv_has
):
    folder, ctx = tree
    proposal = CommandProposer(CommandConfig(agent=agent, model="some-model", env_pass=PASS))(ctx, folder)
    argv = json.loads((standins / "argv.json").read_text())
    assert all(flag in argv for flag in argv_has) and "some-model" in argv
    assert 'get("MATRIX_LR", 0.03)' in (folder / "train_gpt.py").read_text()
    assert (proposal.usage.prompt_tokens, proposal.usage.completion_tokens) == tokens
    assert proposal.usage.usd == pytest.approx(usd)
    assert proposal.session["mode"] == f"agent:{agent}"
    assert proposal.title == "Agent edit of train_gpt.py"
    assert _untracked(folder) == ["M", "train_gpt.py"]  # no prompt file, no aider cache: only the change


@pytest.mark.parametrize(("agent", "said"), [("codex", "stream disconnected"), ("claude", "Credit balance")])
def test_an_error_the_agent_reports_is_the_proposals_error(standins, tree, monkeypatch, agent, said):
    monkeypatch.setenv("STANDIN_FAIL", "1")
    folder, ctx = tree
    with pytest.raises(ProposalError, match=f"{agent} reported an error: {said}"):
        CommandProposer(CommandConfig(agent=agent, env_pass=PASS))(ctx, folder)
    assert not (folder / ".agentgolf").exists()


def test_a_missing_agent_is_a_clear_error(tree, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    folder, ctx = tree
    with pytest.raises(AgentgolfError, match="the agent 'codex' is not installed"):
        CommandProposer(CommandConfig(agent="codex"))(ctx, folder)


@pytest.mark.slow
def test_the_agents_cost_counts_against_the_runs_dollar_cap(standins, tmp_path, tiny_dataset):
    """`agentgolf run --agent claude --max-usd`: the stand-in's $0.0423 is charged and stops the run."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    ws.config.command.env_pass = PASS
    save_config(ws.config_path, ws.config)
    args = ["run", "--budget", "4", "--agent", "claude", "--max-usd", "0.04"]
    proc = subprocess.run(
        [sys.executable, "-m", "agentgolf.agent.cli.main", *args],
        cwd=ws.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = ws.ledger().experiments()
    assert [e.kind for e in rows if e.kind != "control"] == ["baseline", "proposal"]
    assert rows[1].usd == pytest.approx(0.0423) and rows[1].tokens == 25_712 and rows[1].proposer == "command"
    assert "LLM dollar cap reached ($0.04)" in ws.ledger().latest_run().stop_reason
