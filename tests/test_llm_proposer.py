"""The openai proposer against a local OpenAI-compatible server with scripted replies and failures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import git
import pytest

from agentgolf.agent.proposers.briefing.digest import build_digest
from agentgolf.agent.proposers.llm.proposer import LLMConfig, LLMProposer, LLMUnavailable, parse_proposal
from agentgolf.agent.proposers.llm.session import LAST_TURN
from agentgolf.agent.proposers.llm.tools import NAMES as TOOL_NAMES
from agentgolf.agent.proposers.proposal import ProposalContext, ProposalError
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.budget import Budget
from tests.fake_llm import FakeLLM, Stall, error, llm_config, reply, responses_reply, tool_reply

TRAINER = """import os
matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))


def load_model(artifact_path, device="cpu"):
    raise NotImplementedError
"""


def proposal_json(
    search: str = 'get("MATRIX_LR", 0.04)',
    replace: str = 'get("MATRIX_LR", 0.02)',
    title: str = "Halve the Muon LR",
) -> str:
    return json.dumps(
        {
            "title": title,
            "hypothesis": "a smaller step suits a short run",
            "category": "opt",
            "expected_effect": "-0.003 bpb",
            "edits": [{"path": "train_gpt.py", "search": search, "replace": replace}],
        }
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    repo = git.Repo.init(tmp_path / "tree")
    (tmp_path / "tree" / "train_gpt.py").write_text(TRAINER)
    repo.index.add(["train_gpt.py"])
    repo.index.commit("base")
    return tmp_path / "tree"


def _ctx(history: list[Experiment] | None = None) -> ProposalContext:
    parent = Experiment(
        id=1, kind="baseline", status="ok", title="Baseline", val_bpb=2.5, created_at=time.time()
    )
    history = history or [parent]
    return ProposalContext(
        source=TRAINER,
        trainer="train_gpt.py",
        parent=parent,
        history=history,
        digest=build_digest(history, parent),
        trainer_env={},
        budget=Budget(),
    )


def _proposer(url: str, monkeypatch, **overrides) -> LLMProposer:
    return LLMProposer(llm_config(url, monkeypatch, **{"repairs": 2, **overrides}))


def test_retries_transient_failures_then_applies(tree, monkeypatch):
    script = [error(429, "rate limited"), error(500), Stall(2.0), reply(proposal_json())]
    with FakeLLM(script) as llm:
        proposal = _proposer(llm.base_url, monkeypatch)(_ctx(), tree)
        assert len(llm.requests) == 4
        first = llm.requests[0]
        assert first["model"] == "test-model"
        assert "Rules that every change must respect" in first["messages"][0]["content"]
        assert "16,000,000" in first["messages"][0]["content"]
        assert "exp 1" in first["messages"][1]["content"]  # the digest reaches the model
    assert proposal.title == "Halve the Muon LR"
    assert 'get("MATRIX_LR", 0.02)' in (tree / "train_gpt.py").read_text()
    assert proposal.usage.prompt_tokens == 1000 and proposal.usage.completion_tokens == 200
    assert proposal.usage.usd == pytest.approx((1000 * 2.0 + 200 * 8.0) / 1e6)


def test_bad_replies_go_back_with_the_reason(tree, monkeypatch):
    script = [
        reply("I think we should lower the LR."),  # no JSON
        reply(proposal_json(search="not in the file")),  # edit does not apply
        reply(proposal_json()),
    ]
    with FakeLLM(script) as llm:
        proposal = _proposer(llm.base_url, monkeypatch)(_ctx(), tree)
        repairs = [r["messages"][-1]["content"] for r in llm.requests[1:]]
    assert "contains no JSON object" in repairs[0]
    assert "search text not found" in repairs[1]
    assert proposal.usage.prompt_tokens == 3000


def test_gives_up_after_bounded_repairs_without_touching_the_tree(tree, monkeypatch):
    script = [
        reply("{not json"),
        reply('{"title": "x"}'),
        reply(proposal_json(replace='get("MATRIX_LR", ((((')),
    ]
    with FakeLLM(script) as llm:
        with pytest.raises(ProposalError, match="no usable proposal after 3 replies") as info:
            _proposer(llm.base_url, monkeypatch)(_ctx(), tree)
        assert len(llm.requests) == 3
    assert info.value.usage.prompt_tokens == 3000
    assert (tree / "train_gpt.py").read_text() == TRAINER


def test_persistent_outage_is_a_clean_stop(tree, monkeypatch):
    with FakeLLM([error(503)] * 10) as llm:
        with pytest.raises(LLMUnavailable, match="failed 4 times"):
            _proposer(llm.base_url, monkeypatch)(_ctx(), tree)
        assert len(llm.requests) == 4
    with FakeLLM([error(401, "bad key")]) as llm:
        with pytest.raises(LLMUnavailable, match="refused"):
            _proposer(llm.base_url, monkeypatch)(_ctx(), tree)
        assert len(llm.requests) == 1  # a 4xx is not retried


def test_similar_past_experiment_is_shown_before_running(tree, monkeypatch):
    old = Experiment(
        id=37,
        kind="proposal",
        status="ok",
        title="Halve the Muon LR",
        hypothesis="smaller step",
        delta_bpb=0.004,
        val_bpb=2.504,
        parent_id=1,
        created_at=time.time(),
    )
    with FakeLLM(
        [reply(proposal_json()), reply(proposal_json(title="Halve the Muon LR, with longer warmdown"))]
    ) as llm:
        proposal = _proposer(llm.base_url, monkeypatch)(_ctx([_ctx().parent, old]), tree)
        note = llm.requests[1]["messages"][-1]["content"]
    assert "exp 37" in note and "+0.0040" in note and "reverted" in note
    assert proposal.title.endswith("longer warmdown")


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(AgentgolfError, match=r"\$NO_SUCH_KEY"):
        LLMProposer(LLMConfig(api_key_env="NO_SUCH_KEY"))


def test_parse_proposal_accepts_fenced_json_and_names_bad_fields():
    assert parse_proposal("Here:\n```json\n" + proposal_json() + "\n```").category == "opt"
    with pytest.raises(ProposalError, match="field edits"):
        parse_proposal(json.dumps({"title": "abc", "edits": []}))
    with pytest.raises(ProposalError, match="field title"):
        parse_proposal(json.dumps({"title": "", "edits": [{"search": "a", "replace": "b"}]}))


PRESET_TRAINER = """import os
PRESETS = {
    "cpu": {
        "MATRIX_LR": 0.05,
        "ITERATIONS": 200,
    },
}


class Hyperparameters:
    iterations = int(os.environ.get("ITERATIONS", 20000))
    matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))
    scalar_lr = float(os.environ.get("SCALAR_LR", 0.04))
    warmup_steps = int(os.environ.get("WARMUP_STEPS", 3))
"""


def _set_json(values: dict, title: str = "Lower the Muon LR") -> str:
    return json.dumps({"title": title, "category": "opt", "set": values})


def test_a_set_edit_changes_the_value_in_force(tmp_path, monkeypatch):
    repo = git.Repo.init(tmp_path / "tree")
    (tmp_path / "tree" / "train_gpt.py").write_text(PRESET_TRAINER)
    repo.index.add(["train_gpt.py"])
    repo.index.commit("base")
    ctx = _ctx().model_copy(
        update={"source": PRESET_TRAINER, "trainer_env": {"PRESET": "cpu", "SCALAR_LR": "0.1"}}
    )
    script = [
        reply(_set_json({"SCALAR_LR": 0.02})),  # the workspace's env wins over the file: refused
        reply(_set_json({"MATRIX_LRR": 0.02})),  # no such setting: the closest names come back
        reply(_set_json({"WARMUP_STEPS": 2.5})),  # an integer setting
        reply(_set_json({"MATRIX_LR": 0.01, "WARMUP_STEPS": 0})),
    ]
    with FakeLLM(script) as llm:
        proposal = _proposer(llm.base_url, monkeypatch, repairs=3)(ctx, tmp_path / "tree")
        repairs = [r["messages"][-1]["content"] for r in llm.requests[1:]]
        assert (
            '"set": {"MATRIX_LR": 0.01}' in llm.requests[0]["messages"][0]["content"]
        )  # the format is taught
    assert "trainer_env sets SCALAR_LR=0.1, which wins over the file" in repairs[0]
    assert "reads no setting MATRIX_LRR; did you mean MATRIX_LR" in repairs[1]
    assert "WARMUP_STEPS is an integer (3), not 2.5" in repairs[2]
    text = (tmp_path / "tree" / "train_gpt.py").read_text()
    assert '"MATRIX_LR": 0.01,' in text  # the preset's line: that is the value in force under PRESET=cpu
    assert 'os.environ.get("MATRIX_LR", 0.04)' in text  # the default, not in force, is left alone
    assert 'os.environ.get("WARMUP_STEPS", 0)' in text  # not in the preset: the default is in force
    assert proposal.set == {"MATRIX_LR": 0.01, "WARMUP_STEPS": 0}
    assert "set: MATRIX_LR=0.01, WARMUP_STEPS=0" in proposal.commit_message()


def test_a_failed_edit_says_why_and_shows_the_closest_lines(tree, monkeypatch):
    script = [
        reply(proposal_json(search='matrix_lr = float(os.environ.get("MATRIX_LR", 0.05))')),
        reply(proposal_json(search='matrix_lr  =  float(os.environ.get("MATRIX_LR", 0.04))')),
        reply(proposal_json()),
    ]
    with FakeLLM(script) as llm:
        _proposer(llm.base_url, monkeypatch)(_ctx(), tree)
        repairs = [r["messages"][-1]["content"] for r in llm.requests[1:]]
    assert "search text not found in train_gpt.py (no such text)" in repairs[0]
    assert '    2: matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))' in repairs[0]
    assert "differs from the file only in whitespace or indentation" in repairs[1]


def test_a_search_text_found_twice_names_the_lines(tmp_path):
    from agentgolf.agent.proposers.proposal import Edit, apply_edits

    (tmp_path / "train_gpt.py").write_text("a = 1\nb = 2\na = 1\n")
    with pytest.raises(
        ProposalError, match=r"found 2 times in train_gpt.py \(lines 1, 3\); it must be unique"
    ):
        apply_edits(tmp_path, [Edit(search="a = 1", replace="a = 2")])


def _tool_results(body: dict) -> list[str]:
    """What our side answered to the model's tool calls, in a chat request."""
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def test_a_tool_session_over_chat_reads_edits_and_submits(tree, monkeypatch):
    submit = {"title": "Halve the Muon LR", "hypothesis": "h", "category": "opt", "expected_effect": "-0.003"}
    script = [
        tool_reply(
            [("view", {"path": "train_gpt.py", "start": 1, "end": 3}), ("search", {"pattern": "MATRIX_L."})]
        ),
        tool_reply([("edit", {"path": "train_gpt.py", "search": "MATRIX_LR, 0.04", "replace": "x"})]),
        tool_reply([("set", {"values": {"MATRIX_LR": 0.02}})]),
        tool_reply([("submit", submit)]),
    ]
    with FakeLLM(script, tools=True) as llm:
        proposer = _proposer(llm.base_url, monkeypatch)
        proposal = proposer(_ctx(), tree)
        assert [path for path, _ in llm.log] == ["/v1/responses"] + ["/v1/chat/completions"] * 4
        first, *later = llm.requests
        assert {t["function"]["name"] for t in first["tools"]} == set(TOOL_NAMES)
        assert "finish with `submit`" in first["messages"][0]["content"]
        view, search = _tool_results(later[0])
        assert '    2: matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))' in view
        assert search.startswith('train_gpt.py:2: matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))')
        assert "not applied: edit 1: search text not found" in _tool_results(later[1])[-1]
        assert "    2: matrix_lr" in _tool_results(later[1])[-1]  # the closest lines come back
        assert _tool_results(later[2])[-1].startswith("applied: ")
    assert 'get("MATRIX_LR", 0.02)' in (tree / "train_gpt.py").read_text()
    assert proposal.title == "Halve the Muon LR" and proposal.set == {"MATRIX_LR": 0.02}
    assert proposal.usage.prompt_tokens == 4000 and proposal.usage.completion_tokens == 200
    assert proposal.usage.usd == pytest.approx((4000 * 2.0 + 200 * 8.0) / 1e6)
    session = proposal.session
    assert session["mode"] == "chat_tools" and session["turns"] == 4
    assert session["tool_calls"] == {"view": 1, "search": 1, "edit": 1, "set": 1, "submit": 1}
    assert session["endpoint"]["mode"] == "chat_tools" and "404" in session["endpoint"]["refused"][0]


def test_a_tool_session_over_responses_is_capped_and_the_last_turn_offers_only_submit(tree, monkeypatch):
    edit = {"path": "train_gpt.py", "search": 'get("MATRIX_LR", 0.04)', "replace": 'get("MATRIX_LR", 0.03)'}
    submit = {"title": "Lower the LR", "hypothesis": "h", "category": "opt", "expected_effect": "e"}
    script = [
        responses_reply([("edit", edit)], text="Lowering the LR."),
        responses_reply([("view", {"path": "train_gpt.py", "start": 1, "end": 2})]),
        responses_reply([("submit", submit)]),
    ]
    with FakeLLM(script, responses=True, tools=True) as llm:
        proposal = _proposer(llm.base_url, monkeypatch, max_turns=3)(_ctx(), tree)
        assert [path for path, _ in llm.log] == ["/v1/responses"] * 3
        first, second, last = llm.requests
        assert "Rules that every change must respect" in first["instructions"]
        assert first["tool_choice"] == "auto" and {t["name"] for t in first["tools"]} == set(TOOL_NAMES)
        outputs = [i for i in second["input"] if i.get("type") == "function_call_output"]
        assert outputs == [{"type": "function_call_output", "call_id": "call_0", "output": "applied"}]
        assert last["tool_choice"] == {"type": "function", "name": "submit"}
        assert last["input"][-1] == {"role": "user", "content": LAST_TURN}
    assert proposal.title == "Lower the LR" and proposal.session["mode"] == "responses"
    assert proposal.usage.prompt_tokens == 3000

    # A session that never submits ends at its cap, with its cost, and sends nothing more.
    looping = [responses_reply([("view", {"path": "train_gpt.py", "start": 1, "end": 1})])] * 5
    with FakeLLM(looping, responses=True, tools=True) as llm:
        with pytest.raises(ProposalError, match="ended after 3 turns without a usable submit") as info:
            _proposer(llm.base_url, monkeypatch, max_turns=3)(_ctx(), tree)
        assert len(llm.requests) == 3
    assert info.value.usage.prompt_tokens == 3000


def test_the_dollar_cap_of_a_session_forces_the_submit(tree, monkeypatch):
    edit = {"path": "train_gpt.py", "search": 'get("MATRIX_LR", 0.04)', "replace": 'get("MATRIX_LR", 0.03)'}
    submit = {"title": "Lower the LR", "hypothesis": "h", "category": "opt", "expected_effect": "e"}
    script = [tool_reply([("edit", edit)], prompt_tokens=600_000), tool_reply([("submit", submit)])]
    with FakeLLM(script, tools=True) as llm:
        proposal = _proposer(llm.base_url, monkeypatch, max_session_usd=1.0)(_ctx(), tree)
        assert llm.requests[1]["tool_choice"] == {"type": "function", "function": {"name": "submit"}}
    assert proposal.usage.usd > 1.0 and proposal.session["turns"] == 2


def test_an_endpoint_without_tools_falls_back_to_json_once_per_run(tree, monkeypatch):
    with FakeLLM([reply(proposal_json()), reply(proposal_json(title="Again"))]) as llm:
        proposer = _proposer(llm.base_url, monkeypatch)
        first = proposer(_ctx(), tree)
        _reset(tree)
        proposer(_ctx(), tree)
        paths = [path for path, _ in llm.log]
        assert paths == [
            "/v1/responses",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions",
        ]
        assert "tools" in llm.log[1][1] and all("tools" not in r for r in llm.requests)
        assert "Reply with one JSON object" in llm.requests[0]["messages"][0]["content"]
    endpoint = first.session["endpoint"]
    assert endpoint["mode"] == "json" and len(endpoint["refused"]) == 2
    assert "404" in endpoint["refused"][0] and "400" in endpoint["refused"][1]


def test_a_model_that_ignores_the_tools_still_gets_its_json_tried(tree, monkeypatch):
    script = [reply("I would lower the learning rate."), reply(proposal_json())]
    with FakeLLM(script, tools=True) as llm:
        proposal = _proposer(llm.base_url, monkeypatch)(_ctx(), tree)
        assert llm.requests[1]["messages"][-1]["content"].startswith("Use the tools")
    assert proposal.title == "Halve the Muon LR" and proposal.session["mode"] == "chat_tools"
    assert 'get("MATRIX_LR", 0.02)' in (tree / "train_gpt.py").read_text()


def _reset(tree: Path) -> None:
    git.Repo(tree).git.checkout("--", ".")
