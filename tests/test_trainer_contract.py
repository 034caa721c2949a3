"""Bring your own trainer (#24): the contract's static points, `agentgolf check`, `init --trainer`, and a
trainer unlike ours (a GRU with an int6 export and a sliding eval) through the search and the whole loop."""

from __future__ import annotations

import base64
import json
import lzma
import re
import tempfile
from pathlib import Path

import git
import pytest

from agentgolf.agent.trainer.contract import read_source, static_points
from agentgolf.sandbox.budget import Budget
from tests.test_cli import agentgolf
from tests.tiny import make_workspace, proposal_tree

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "minimal_trainer.py"
FIXTURE = ROOT / "tests" / "sandbox_trainers" / "gru_int6.py"
CAP = 16_000_000


def on_tiny_data(root: Path, dataset):
    """A workspace made by `init --trainer`, set as tests/tiny.py sets its own: the tiny data, a short
    budget, plain comparisons."""
    from agentgolf.agent.judge.acceptance import AcceptanceConfig
    from agentgolf.agent.workspace import DataConfig, Workspace, save_config
    from agentgolf.sandbox.budget import Budget

    ws = Workspace(root)
    ws.config.data = DataConfig(
        dataset_dir=dataset.dataset_dir, tokenizer=dataset.tokenizer, vocab_size=dataset.vocab_size
    )
    ws.config.budget = Budget(train_seconds=4, train_grace_seconds=60, score_seconds=120)
    ws.config.acceptance = AcceptanceConfig(
        noise_seeds=1, known_sigma_bpb=0.001, confirm=False, min_delta_bpb=0.0
    )
    ws.config.scheduler.morning_rounds = 0
    save_config(ws.config_path, ws.config)
    return ws


def points(path: Path, siblings: set[str] = frozenset()) -> dict[str, str]:
    return {p.name: p.state for p in static_points(read_source(path), CAP, siblings)}


def mutated(tmp_path: Path, old: str, new: str, source: Path = EXAMPLE) -> Path:
    text = source.read_text()
    assert old in text, old
    path = tmp_path / "mutant.py"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("trainer", [EXAMPLE, FIXTURE], ids=["example", "gru_int6"])
def test_the_example_and_the_fixture_meet_every_static_point(trainer):
    found = points(trainer)
    assert set(found.values()) == {"met"}, found
    assert {"load_model", "forward_logits", "seq_len", "eval_mode", "data", "artifact", "clock"} <= set(found)


@pytest.mark.parametrize(
    ("old", "new", "point"),
    [
        (
            'def load_model(artifact_path, device="cpu"):',
            'def restore(artifact_path, device="cpu"):',
            "load_model",
        ),
        ('def load_model(artifact_path, device="cpu"):', "def load_model(artifact_path):", "load_model"),
        ("forward_logits=lambda x", "logits_of=lambda x", "forward_logits"),
        ('if __name__ == "__main__":\n    main()', "main()", "import"),
        ('eval_mode="windows"', 'eval_mode="lookahead"', "eval_mode"),
        ('eval_mode="windows"', 'eval_mode="stream"', "eval_mode"),  # stream needs adapt()
        ('os.environ.get("ARTIFACT_PATH", "final_model.int8.ptz")', '"model.bin"', "artifact"),
        ('_SECONDS"', '_BUDGET"', "clock"),
        ("CONTRACT_VERSION = 1", "CONTRACT_VERSION = 2", "contract"),
    ],
)
def test_a_missing_contract_point_is_named(tmp_path, old, new, point):
    found = points(mutated(tmp_path, old, new))
    assert found[point] == "missed", found
    assert [name for name, state in found.items() if state == "missed"] == [point]


def test_a_packed_trainer_is_checked_unpacked_and_counted_as_shipped(tmp_path):
    """The late records' self-extracting stub: its source is read through the lzma + base85 layer, while its
    code bytes are the stub's, as the challenge counts them."""
    packed = base64.b85encode(lzma.compress(EXAMPLE.read_bytes())).decode()
    stub = tmp_path / "stub.py"
    stub.write_text(f'import lzma as L, base64 as B\nexec(L.decompress(B.b85decode("{packed}")))\n')
    found = {p.name: p for p in static_points(read_source(stub), CAP)}
    assert all(p.state == "met" for p in found.values()), found
    assert "lzma of base85" in found["parses"].detail
    assert f"{stub.stat().st_size:,} bytes as shipped" in found["code bytes"].detail
    assert stub.stat().st_size < EXAMPLE.stat().st_size


def test_check_outside_a_workspace_is_static_and_fails_on_a_missing_load_model(tmp_path):
    bad = mutated(tmp_path, "def load_model(", "def restore(")
    proc = agentgolf("check", str(bad), cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(re.match(r"MISSED\s+load_model: no module-level load_model", line) for line in lines), (
        proc.stdout
    )
    assert any(line.startswith("not checked") and "static checks only" in line for line in lines)
    assert lines[-1].startswith("check: FAILED: 1 point(s) missed (load_model)")
    report = json.loads(agentgolf("check", str(EXAMPLE), "--json", cwd=tmp_path).stdout)
    assert report["passed"] is True and report["ran"] is False


def test_check_runs_the_example_and_shows_both_scores_and_their_gap(tmp_path, tiny_dataset):
    """A short sandboxed run: the harness's verified val_bpb of the artifact beside the trainer's own."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset, env={})
    proc = agentgolf("check", str(EXAMPLE), "--time-budget", "3", "--json", cwd=ws.root)
    report = json.loads(proc.stdout)
    states = {p["name"]: p for p in report["points"]}
    assert proc.returncode == 0 and report["passed"] and report["ran"], proc.stdout + proc.stderr
    result = report["result"]
    assert result["val_bpb"] > 0 and result["self_val_bpb"] > 0 and result["trust"] == "harness"
    # The same weights and layout: within the tolerance the check itself applies (seen up to 0.0012 apart on
    # the tiny set, a gap not yet explained: noted in the issue).
    assert abs(result["val_bpb"] - result["self_val_bpb"]) < Budget().metric_tolerance_bpb
    assert result["verification"]["positions"] >= 16
    assert states["score gap"]["state"] == "met" and "the harness measured" in states["score gap"]["detail"]
    size = states["size"]["detail"]
    assert f"code {EXAMPLE.stat().st_size:,} + model" in size and "of 16,000,000" in size
    assert "no experiments yet" in agentgolf("ledger", cwd=ws.root).stdout  # a check records nothing


def test_init_with_a_records_folder_commits_it_and_refuses_what_breaks_the_contract(tmp_path):
    record = tmp_path / "2026-04-01_GRU_int6"
    record.mkdir()
    (record / "train_gpt.py").write_bytes(FIXTURE.read_bytes())
    (record / "README.md").write_text("# GRU int6\n")
    (record / "submission.json").write_text('{"val_bpb": 3.9}\n')
    (record / "train_seed1337.log").write_text("step:20/300 train_loss:5.1\n")
    proc = agentgolf("init", "ws", "--trainer", str(record), cwd=tmp_path, check=True)
    ws = tmp_path / "ws"
    assert "check: passed" in proc.stdout and "static checks only" in proc.stdout, proc.stdout
    repo = git.Repo(ws)
    files = set(repo.git.ls_files().splitlines())
    assert files == {"train_gpt.py", "README.md", "submission.json", "train_seed1337.log"}
    assert repo.head.commit.message.startswith(f"agentgolf: baseline trainer from {record.name}")
    assert (ws / "train_gpt.py").read_bytes() == FIXTURE.read_bytes()
    assert (ws / ".agentgolf" / "config.json").is_file()

    helper = tmp_path / "record_with_helper"
    helper.mkdir()
    (helper / "train_gpt.py").write_text("import ngram_tilt\n" + FIXTURE.read_text())
    (helper / "ngram_tilt.py").write_text("X = 1\n")
    proc = agentgolf("init", "ws2", "--trainer", str(helper), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "one file: imports ngram_tilt from its folder" in proc.stderr, proc.stderr
    assert not (tmp_path / "ws2").exists()

    bad = mutated(tmp_path, "def load_model(", "def restore(")
    proc = agentgolf("init", "ws3", "--trainer", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and "refused" in proc.stderr and "load_model:" in proc.stderr
    assert not (tmp_path / "ws3").exists()


def test_the_search_finds_a_foreign_trainers_knobs_and_skips_techniques_that_do_not_apply():
    from agentgolf.agent.proposers.search import space
    from agentgolf.agent.proposers.search.proposer import SearchConfig, propose

    source = FIXTURE.read_text()
    knobs = {k.name: k.category for k in space.searched(source, {})}
    assert knobs == {
        "SEQ_LEN": "data",
        "EMBED": "arch",
        "HIDDEN": "arch",
        "LR": "opt",
        "BATCH": "opt",
        "STEPS": "sched",
    }
    assert not {"SEED", "VOCAB_SIZE", "DATA_PATH"} & set(knobs)  # the harness's, not knobs
    with tempfile.TemporaryDirectory() as folder:
        proposal, candidate = propose(proposal_tree(Path(folder), source), SearchConfig(), seed=3)
    assert candidate.changed and set(candidate.changed) <= set(knobs)
    for name, value in candidate.changed.items():  # written as the file wrote it: a quoted number
        written = rf'os\.environ\.get\("{name}", ["\']{re.escape(str(value))}["\']\)'
        assert re.search(written, candidate.source), (name, value)
    compile(candidate.source, "train_gpt.py", "exec")
    assert "Techniques skipped, their patch does not apply here:" in proposal.hypothesis


def test_a_foreign_trainer_passes_check_and_runs_the_loop_end_to_end(tmp_path, tiny_dataset):
    """The one slow test here: `init --trainer` with the GRU fixture, its check run in the workspace, then a
    loop of two experiments (the baseline, a search proposal beside its control); then the example trainer's
    loop, its baseline only (its check run has its own test above)."""
    agentgolf("init", "ws", "--trainer", str(FIXTURE), cwd=tmp_path, check=True)
    ws = on_tiny_data(tmp_path / "ws", tiny_dataset)
    proc = agentgolf("check", "train_gpt.py", "--time-budget", "3", cwd=ws.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"ok\s+evaluated: scored as sliding \(seq_len 32, stride 16, context 64\)", proc.stdout)
    agentgolf("run", "--budget", "2", cwd=ws.root, check=True)
    rows = json.loads(agentgolf("ledger", "--json", cwd=ws.root, check=True).stdout)
    shown = [(r["id"], r["kind"], r["status"], r["val_bpb"], r.get("reason")) for r in rows]
    assert [r["kind"] for r in rows if r["status"] == "ok"][:1] == ["baseline"], shown
    assert all(r["val_bpb"] and r["val_bpb"] > 0 for r in rows if r["status"] == "ok"), shown
    # the candidate is judged like any other (a longer SEQ_LEN can predict past the allowance: over_time)
    assert all(r["status"] not in ("rejected", "infra_error", "crash") for r in rows), shown
    proposal = next(r for r in rows if r["kind"] == "proposal")
    assert proposal["title"].startswith("Search: ") and any(
        k in proposal["title"] for k in ("SEQ_LEN", "EMBED", "HIDDEN", "LR", "BATCH", "STEPS")
    )

    agentgolf("init", "ws2", "--trainer", str(EXAMPLE), cwd=tmp_path, check=True)
    ws = on_tiny_data(tmp_path / "ws2", tiny_dataset)
    agentgolf("run", "--budget", "1", cwd=ws.root, check=True)
    rows = json.loads(agentgolf("ledger", "--json", cwd=ws.root, check=True).stdout)
    assert rows[0]["kind"] == "baseline" and rows[0]["status"] == "ok" and rows[0]["val_bpb"] > 0, rows


def test_adopt_ports_a_trainer_through_a_failed_try_to_an_accepted_one(tmp_path, tiny_dataset, monkeypatch):
    """`adopt` against the local OpenAI-compatible server: the first scripted port still misses a point, which
    goes back to the LLM in check's words; the second is run, scored, and accepted with its score gap."""
    from agentgolf.agent.workspace import save_config
    from tests.fake_llm import FakeLLM, llm_config, reply

    original = mutated(
        tmp_path, 'def load_model(artifact_path, device="cpu"):', "def restore(artifact_path):"
    )
    original.write_text(original.read_text().replace("v.float().to(device) for", "v.float() for"))
    before = original.read_bytes()
    first = {
        "edits": [{"search": "def restore(artifact_path):", "replace": "def load_model(artifact_path):"}]
    }
    second = {
        "edits": [
            {
                "search": "def load_model(artifact_path):",
                "replace": 'def load_model(artifact_path, device="cpu"):',
            },
            {"search": "v.float() for", "replace": "v.float().to(device) for"},
        ],
        "note": "load_model takes the device",
    }
    ws = make_workspace(tmp_path / "ws", tiny_dataset, env={})
    with FakeLLM([reply(json.dumps(first)), reply("Here it is:\n" + json.dumps(second))]) as fake:
        ws.config.llm = llm_config(fake.base_url, monkeypatch)
        save_config(ws.config_path, ws.config)
        proc = agentgolf("adopt", str(original), "--time-budget", "3", cwd=ws.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(fake.requests) == 2
    fed_back = fake.requests[1]["messages"][-1]["content"]
    assert "MISSED" in fed_back and "load_model takes 1 positional argument(s)" in fed_back
    assert "trainer contract" in fake.requests[0]["messages"][0]["content"]  # the contract's own text
    port = tmp_path / "mutant_adopted.py"
    assert 'def load_model(artifact_path, device="cpu"):' in port.read_text()
    assert original.read_bytes() == before
    assert re.search(r"ok\s+score gap: the trainer printed", proc.stdout) and "(2 tries)" in proc.stdout


def test_adopt_gives_up_after_its_tries_with_what_is_still_missed(tmp_path, tiny_dataset, monkeypatch):
    from agentgolf.agent.workspace import save_config
    from tests.fake_llm import FakeLLM, llm_config, reply

    original = mutated(tmp_path, "def load_model(", "def restore(")
    ws = make_workspace(tmp_path / "ws", tiny_dataset, env={})
    with FakeLLM(
        [reply("no JSON here"), reply('{"edits": [{"search": "absent text", "replace": "x"}]}')]
    ) as fake:
        ws.config.llm = llm_config(fake.base_url, monkeypatch)
        save_config(ws.config_path, ws.config)
        proc = agentgolf("adopt", str(original), "--tries", "2", cwd=ws.root)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "adopt gave up after 2 tries" in proc.stderr and "load_model" in proc.stderr
    assert "could not be applied" in fake.requests[1]["messages"][-1]["content"]


def test_what_a_run_tells_is_judged_from_its_result():
    """check's dynamic points from sandbox results, without a run: a CUDA-only trainer on a CPU workspace is
    'not checked here', not missed; an oversize artifact and a printed score better than the harness's are."""
    from agentgolf.agent.trainer.check import dynamic_points
    from agentgolf.sandbox.budget import Budget
    from agentgolf.sandbox.result import SandboxResult, Status

    budget = Budget(train_seconds=10)
    cuda = SandboxResult(
        status=Status.crash, reason="training exited with code 1", log_tail="AssertionError: CUDA is required"
    )
    found = dynamic_points(cuda, budget, 70.0, cpu_only=True)
    assert [(p.name, p.state) for p in found] == [("run", "unchecked")] and "need CUDA" in found[0].detail
    assert [p.state for p in dynamic_points(cuda, budget, 70.0, cpu_only=False)] == ["missed"]

    scored = dict(
        train_seconds=12.0,
        steps=40,
        code_bytes=7_000,
        val_bpb=4.0,
        val_tokens=3_000,
        eval_mode={"mode": "windows"},
    )
    big = SandboxResult(status=Status.over_size, model_bytes=16_000_000, artifact_bytes=16_007_000, **scored)
    states = {p.name: p.state for p in dynamic_points(big, budget, 70.0, cpu_only=True)}
    assert states["size"] == "missed" and states["runs"] == "met"
    liar = SandboxResult(
        status=Status.metric_mismatch, model_bytes=9_000, artifact_bytes=16_000, self_val_bpb=3.9, **scored
    )
    gap = next(p for p in dynamic_points(liar, budget, 70.0, cpu_only=True) if p.name == "score gap")
    assert gap.state == "missed" and "gap -0.100000" in gap.detail
    slow = SandboxResult(
        status=Status.ok, model_bytes=9_000, artifact_bytes=16_000, **{**scored, "train_seconds": 90.0}
    )
    assert {p.name: p.state for p in dynamic_points(slow, budget, 70.0, cpu_only=True)}["time"] == "missed"


def test_init_refuses_a_trainer_whose_check_run_fails_and_leaves_no_workspace(tmp_path, tiny_dataset):
    """With data already where a new workspace looks for it, `init --trainer` runs the check: a trainer whose
    source is fine but whose run leaves no artifact is refused with the point named, and the folder is no
    workspace (its commit stays)."""
    import shutil

    ws = tmp_path / "ws"
    shards = ws / "data" / "datasets" / "fineweb10B_sp1024"
    shards.mkdir(parents=True)
    for shard in tiny_dataset.dataset_dir.glob("fineweb_*.bin"):
        shutil.copy(shard, shards / shard.name)
    (ws / "data" / "tokenizers").mkdir()
    shutil.copy(tiny_dataset.tokenizer, ws / "data" / "tokenizers" / "fineweb_1024_bpe.model")
    lost = mutated(
        tmp_path, "save_artifact(params, artifact, vocab)", 'save_artifact(params, artifact + ".tmp", vocab)'
    )
    lost.write_text(
        lost.read_text().replace("os.path.getsize(artifact)", "0").replace("if val is not None:", "if 0:")
    )
    proc = agentgolf("init", str(ws), "--trainer", str(lost), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert re.search(r"MISSED\s+artifact: training wrote no artifact at ARTIFACT_PATH", proc.stdout), (
        proc.stdout
    )
    assert "refused" in proc.stderr and "is not a workspace" in proc.stderr
    assert not (ws / ".agentgolf" / "config.json").exists()
    assert git.Repo(ws).head.commit.message.startswith("agentgolf: baseline trainer from mutant.py")
