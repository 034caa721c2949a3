"""What the openai proposer's model is told, against a local OpenAI-compatible server that records every
request (tests/fake_llm.py), over a real workspace: git, SQLite ledger, the sandbox's import check.

The rules of measurement with the ledger's numbers, rung labels and verdict words in the digest, the data
from the manifest, the techniques with their outcomes here, a refresh that sees a verdict reached after the
session began, the notebook across proposals and after the workspace is opened again (as --resume does),
two sessions prepared at once that see each other, apply_technique, and cached tokens at their price."""

from __future__ import annotations

import json
import threading
import time

import pytest

from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.controller.notes import agent_notebook
from agentgolf.agent.judge.acceptance import AcceptanceConfig
from agentgolf.agent.judge.fidelity import Rung
from agentgolf.agent.proposers.briefing import board
from agentgolf.agent.proposers.briefing.context import build_context
from agentgolf.agent.proposers.briefing.data_facts import data_description
from agentgolf.agent.proposers.llm.proposer import LLMProposer
from agentgolf.agent.proposers.prepare import prepare_proposal
from agentgolf.agent.workspace import DEMO_DATASET, find_workspace, save_config
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Run
from agentgolf.prompts.render import proposal_messages
from tests.fake_llm import FakeLLM, llm_config, tool_reply
from tests.test_cli import agentgolf
from tests.tiny import make_workspace

SUBMIT = {
    "title": "Lower the tied embedding LR",
    "hypothesis": "h",
    "category": "opt",
    "expected_effect": "-0.01",
}


def _lab(tmp_path, tiny_dataset, experiments: int = 6) -> tuple[Lab, dict]:
    """A workspace with a screen rung and a ledger of every kind of verdict, written by hand."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    ws.config.fidelity.screen = Rung(name="screen", train_seconds=20)
    ws.config.acceptance = AcceptanceConfig(noise_seeds=3, max_runs=4)
    ws.config.budget = ws.config.budget.model_copy(update={"train_seconds": 60})
    save_config(ws.config_path, ws.config)
    lab = Lab(ws, ws.ledger(), ws.config.budget)
    base = wt.head_commit(lab.repo)
    lab.ledger.add_run(
        Run(id="r1", created_at=time.time(), base_commit=base, settings={"experiments": experiments})
    )
    add = lab.ledger.add_experiment
    common = {"run_id": "r1", "commit_sha": base, "parent_commit": base}
    rows = {"base": add(kind="baseline", status="ok", title="Baseline", val_bpb=2.0, kept=True, **common)}
    for rung, values in (("", (2.1, 2.2)), ("screen", (3.0, 3.2, 3.1))):
        for v in values:
            add(kind="calibration", status="ok", replay_of=rows["base"].id, rung=rung, val_bpb=v, **common)
    other = {"run_id": "r1", "parent_id": rows["base"].id, "parent_commit": base, "commit_sha": "a" * 40}
    rows["full"] = add(kind="proposal", status="running", title="EMA at full budget", **other)
    rows["screened"] = add(
        kind="proposal",
        status="ok",
        rung="screen",
        title="Export an EMA of the weights",
        val_bpb=2.9,
        hypothesis="Technique ema: average the weights",
        decision={"decision": "promote", "runs": 1},
        reason=f"screen: better; measured at the full budget as experiment {rows['full'].id}",
        **other,
    )
    rows["full"] = lab.ledger.update(
        rows["full"].id,
        status="inconclusive",
        screen_of=rows["screened"].id,
        val_bpb=1.99,
        decision={"decision": "inconclusive", "runs": 2, "design": "paired", "p_value": 0.014},
        reason="-0.01 bpb, undecided after 2 pairs",
    )
    rows["dead"] = add(
        kind="proposal",
        status="ok",
        rung="screen",
        title="Widen the MLP",
        val_bpb=3.3,
        decision={"decision": "dead_end", "runs": 1, "p_value": 0.8},
        reason="screen: no better",
        **other,
    )
    rows["late"] = add(kind="proposal", status="running", title="Shorter warmdown", **other)
    return lab, rows


def _proposer(llm: FakeLLM, monkeypatch, **overrides) -> LLMProposer:
    return LLMProposer(
        llm_config(llm.base_url, monkeypatch, **{"api": "chat", "request_timeout_s": 30.0, **overrides})
    )


def _tool_results(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def test_the_prompt_states_the_rules_the_digest_the_data_and_the_techniques(
    tmp_path, tiny_dataset, monkeypatch
):
    lab, rows = _lab(tmp_path, tiny_dataset)
    history = lab.ledger.experiments()

    def verdict_arrives():  # a verdict reached after the session's prompt was built
        lab.ws.ledger().update(
            rows["late"].id,
            status="ok",
            val_bpb=2.5,
            finished_at=time.time(),
            decision={"decision": "dead_end", "runs": 1, "p_value": 0.9},
        )
        return tool_reply([("refresh", {})])

    script = [
        verdict_arrives,
        tool_reply([("note_to_self", {"text": "the warmdown outlasts the budget at this step time"})]),
        tool_reply([("set", {"values": {"TIED_EMBED_LR": 0.04}})]),
        tool_reply([("submit", SUBMIT)]),
    ]
    with FakeLLM(script, tools=True) as llm:
        prepared = prepare_proposal(lab, rows["base"], history, _proposer(llm, monkeypatch), "pending-a")
        system, user = (m["content"] for m in llm.requests[0]["messages"][:2])
        refreshed = _tool_results(llm.requests[1])[-1]
    assert not prepared.error, prepared.error
    # The rules of measurement, with the noise the ledger holds: sqrt(2) x stdev(2.0, 2.1, 2.2), stdev of 3.0-3.2.
    for said in (
        "measured first on the screen rung (screen 20 s of training",
        "run again at the full 60 s budget",
        "σ of a candidate-minus-control difference 0.1414 bpb (2 degrees of freedom)",
        "1 to 4 paired rounds",
        "Screen (screen 20 s): σ of one run 0.1000 bpb (2 degrees of freedom)",
        "promoted with probability 0.01 at most",
        "at most 16,000,000 bytes",
        "Budget: 4 of 6 experiments charged",
        "1 proposal(s) being prepared now, yours included; 1 more after these.",
    ):
        assert said in user, said
    # Rung labels, with the screen's own reference, and the verdict words.
    lines = {int(t.split()[2]): t for t in user.splitlines() if t.startswith("- exp ")}
    assert "[screen 20 s]" in lines[rows["screened"].id]
    assert "vs the parent's screen 3.1000" in lines[rows["screened"].id]
    assert f"passed the screen → full run #{rows['full'].id}" in lines[rows["screened"].id]
    assert "reverted" not in lines[rows["screened"].id]
    assert (
        "[full 60 s]" in lines[rows["full"].id]
        and "inconclusive: 2 pairs, p = 0.014" in lines[rows["full"].id]
    )
    assert "dead end on the screen (1 run, p = 0.8)" in lines[rows["dead"].id]
    # The data, from the manifest: the demo's Python sources, not FineWeb.
    assert "FineWeb" not in system and "The text is dataset tiny (its manifest does not say" in system
    assert f"{tiny_dataset.train_tokens:,} tokens in {tiny_dataset.train_docs:,} documents" in system
    # The catalogue, with this workspace's outcome of each technique.
    assert "- ema (opt): Export an EMA of the weights." in user
    assert (
        f"Here: tried 1x here: exp {rows['screened'].id} passed the screen → full run #{rows['full'].id}"
        in user
    )
    assert "- sliding_eval (eval): " in user and "Here: not tried here yet." in user
    # The refresh sees the verdict that came after the prompt.
    assert f"exp {rows['late'].id} Shorter warmdown" in refreshed and "dead end" in refreshed
    assert "Shorter warmdown" in user and "training now, not decided yet" in user

    # The notebook: in the next proposal's prompt, and after the workspace is opened anew (--resume).
    again = build_context(lab, rows["base"], lab.ledger.experiments(), "pending-b")
    assert "- the warmdown outlasts the budget at this step time (on exp 1)" in again.notebook
    ws = find_workspace(lab.ws.root)
    fresh = Lab(ws, ws.ledger(), ws.config.budget)
    resumed = build_context(fresh, rows["base"], fresh.ledger.experiments(), "pending-c")
    assert "the warmdown outlasts the budget" in proposal_messages(resumed, tools=True)[1]["content"]
    # One fewer experiment in the cap: this proposal is the run's last, and the prompt says so.
    lab.ledger.update_run("r1", settings={"experiments": 5})
    last = build_context(lab, rows["base"], lab.ledger.experiments(), "pending-d")
    assert "This is the last proposal of the run" in last.rules


def test_the_demo_data_is_described_as_python_source_from_its_manifest(tiny_dataset):
    manifest = json.loads((tiny_dataset.dataset_dir / "manifest.json").read_text())
    said = data_description({**manifest, "name": DEMO_DATASET}, 1024)
    assert said.startswith(
        "The text is the offline demo corpus: source files of this Python's standard library"
    )
    assert f"{tiny_dataset.val_tokens:,} tokens in {tiny_dataset.val_docs:,} documents" in said
    official = data_description({**manifest, "source": "https://hf.co/fineweb"}, 1024)
    assert official.startswith("The text is https://hf.co/fineweb (dataset tiny)")


SEE_SUBMITTED_S = 180  # how long B's scripted reply waits for A's submission (a loaded machine is slow)


def test_two_sessions_prepared_at_once_see_each_other(tmp_path, tiny_dataset, monkeypatch):
    lab, rows = _lab(tmp_path, tiny_dataset)
    history = lab.ledger.experiments()
    root = lab.ws.root
    for name in ("pending-a", "pending-b"):  # as the pipeline opens them, before any prompt is built
        board.open_entry(root, name, rows["base"].id)

    seen = threading.Event()  # B's session saw A's submission on the board before it refreshed

    def after_a_submitted():  # runs in the fake server's thread: it reports through `seen`, not by raising
        deadline = time.monotonic() + SEE_SUBMITTED_S
        while time.monotonic() < deadline:
            if any(e.title for e in board.others(root, "pending-b", [])):
                seen.set()
                break
            time.sleep(0.1)
        return tool_reply([("refresh", {})])

    a_script = [tool_reply([("set", {"values": {"TIED_EMBED_LR": 0.04}})]), tool_reply([("submit", SUBMIT)])]
    b_submit = {**SUBMIT, "title": "Raise the Muon momentum"}
    b_script = [
        after_a_submitted,
        tool_reply([("set", {"values": {"MUON_MOMENTUM": 0.97}})]),
        tool_reply([("submit", b_submit)]),
    ]
    wait = {"request_timeout_s": SEE_SUBMITTED_S + 60}  # B's request is held while it waits: no retry
    with FakeLLM(a_script, tools=True) as a, FakeLLM(b_script, tools=True) as b:
        out = {}
        threads = [
            threading.Thread(
                target=lambda n=n, llm=llm: out.__setitem__(
                    n, prepare_proposal(lab, rows["base"], history, _proposer(llm, monkeypatch, **wait), n)
                )
            )
            for n, llm in (("pending-a", a), ("pending-b", b))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SEE_SUBMITTED_S + 120)
        assert seen.is_set(), f"A's submission was not on B's board within {SEE_SUBMITTED_S} s"
        assert not any(t.is_alive() for t in threads), "a session did not finish"
        a_prompt, b_prompt = (llm.requests[0]["messages"][1]["content"] for llm in (a, b))
        b_refresh = _tool_results(b.requests[1])[-1]
    assert not out["pending-a"].error and not out["pending-b"].error
    assert a_prompt != b_prompt
    assert "- pending-b on exp 1, started " in a_prompt and "- pending-a on exp 1, started " in b_prompt
    assert "pending-a on exp 1, submitted: Lower the tied embedding LR; changes: " in b_refresh
    assert "TIED_EMBED_LR" in b_refresh


def test_apply_technique_uses_the_tested_patch(tmp_path, tiny_dataset, monkeypatch):
    lab, rows = _lab(tmp_path, tiny_dataset)
    script = [
        tool_reply(
            [("apply_technique", {"name": "no_such_thing"}), ("apply_technique", {"name": "leaky_relu2"})]
        ),
        tool_reply([("submit", {**SUBMIT, "title": "LeakyReLU squared", "hypothesis": "fewer dead units"})]),
    ]
    with FakeLLM(script, tools=True) as llm:
        prepared = prepare_proposal(
            lab, rows["base"], lab.ledger.experiments(), _proposer(llm, monkeypatch), "p"
        )
        unknown, applied = _tool_results(llm.requests[1])
    assert unknown.startswith("no technique 'no_such_thing'; the catalogue has sliding_eval")
    assert applied == "applied technique leaky_relu2 (LeakyReLU(0.5)^2 MLP activation)"
    assert not prepared.error, prepared.error
    assert prepared.proposal.hypothesis == "Technique leaky_relu2: fewer dead units"
    diff = wt.diff(lab.repo, rows["base"].commit_sha, prepared.commit)
    assert "leaky_relu" in diff


def test_cached_prompt_tokens_are_charged_at_their_price(tmp_path, tiny_dataset, monkeypatch):
    lab, rows = _lab(tmp_path, tiny_dataset)
    reply = tool_reply([("set", {"values": {"TIED_EMBED_LR": 0.04}})], prompt_tokens=10_000)
    reply[1]["usage"]["prompt_tokens_details"] = {"cached_tokens": 8_000}
    script = [reply, tool_reply([("submit", SUBMIT)], prompt_tokens=1_000)]
    with FakeLLM(script, tools=True) as llm:
        proposer = _proposer(llm, monkeypatch, usd_per_mtok_cached_in=0.5)
        prepared = prepare_proposal(lab, rows["base"], lab.ledger.experiments(), proposer, "p")
    usage = prepared.usage
    assert usage.prompt_tokens == 11_000 and usage.cached_tokens == 8_000
    assert usage.usd == pytest.approx((3_000 * 2.0 + 8_000 * 0.5 + 100 * 8.0) / 1e6)


@pytest.mark.slow
def test_try_runs_a_few_steps_of_the_edited_trainer_in_the_sandbox(tmp_path, tiny_dataset, monkeypatch):
    lab, rows = _lab(tmp_path, tiny_dataset)
    run_dir = lab.ws.run_dir(rows["base"].id)  # the baseline's log, as the sandbox writes it
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").write_text(
        "step:1/6 train_loss:6.9000\nstep:6/6 train_loss:5.1000 step_avg:40.0ms\n"
    )
    script = [
        tool_reply([("set", {"values": {"TIED_EMBED_LR": 0.04}}), ("try", {"steps": 2})]),
        tool_reply([("show_experiment", {"id": rows["base"].id})]),
        tool_reply([("submit", SUBMIT)]),
    ]
    with FakeLLM(script, tools=True) as llm:
        proposer = _proposer(llm, monkeypatch, request_timeout_s=300.0)
        prepared = prepare_proposal(lab, rows["base"], lab.ledger.experiments(), proposer, "p")
        _, tried = _tool_results(llm.requests[1])
        shown = _tool_results(llm.requests[2])[-1]
    assert not prepared.error, prepared.error
    assert "status: ok" in tried, tried
    assert "train loss: step 1 " in tried and ", step 2 " in tried
    assert "step time: " in tried and " ms/step" in tried
    assert "artifact after export: " in tried and "(cap 16,000,000)" in tried
    assert "load_model reads the artifact back: yes" in tried
    assert (
        "train loss: step 1 6.9000, step 6 5.1000" in shown
        and "ran all 6 planned steps, 40.0 ms/step" in shown
    )
    assert (
        lab.ledger.experiments() == lab.ledger.experiments() and len(lab.ledger.experiments()) == 10
    )  # uncharged


def test_the_notebook_is_readable_for_the_user(tmp_path, tiny_dataset):
    lab, rows = _lab(tmp_path, tiny_dataset)
    lab.ledger.add_notebook("r1", "warmdown too long", rows["base"].id, author="pending-a")
    assert agent_notebook(lab.ws.state) == ["1: warmdown too long (exp 1, pending-a)"]
    shown = agentgolf("note", "--agent", cwd=lab.ws.root, check=True).stdout
    assert shown.strip() == "1: warmdown too long (exp 1, pending-a)", shown
    wrong = agentgolf("note", "--agent", "more text", cwd=lab.ws.root)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr + wrong.stdout
