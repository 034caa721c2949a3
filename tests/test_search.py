"""The offline search on a real ledger and a real git repository holding the real trainer: valid,
non-repeating, budget-respecting configs; resumable from the ledger alone; failures count, machine
failures do not; and the knob edits every proposer shares. No training."""

from __future__ import annotations

import shutil
from pathlib import Path

import git
import pytest

from agentgolf.agent.proposers import knobs
from agentgolf.agent.proposers.proposal import (
    Edit,
    ProposalContext,
    ProposalError,
    apply_edits,
    check_compiles,
    diff_fingerprint,
)
from agentgolf.agent.proposers.search import artifact_size, space
from agentgolf.agent.proposers.search import proposer as search
from agentgolf.agent.proposers.search.trials import gather
from agentgolf.experiments.ledger import Experiment, Ledger
from agentgolf.sandbox.budget import Budget

TRAINER = Path(__file__).resolve().parents[1] / "baseline" / "train_gpt.py"
ENV = {"PRESET": "cpu"}
NAMES = (search.NAME, *search.ALIASES)


class Bench:
    """A ledger and a repository that proposals are committed to, as the loop would, with made-up scores."""

    def __init__(self, root: Path, budget: Budget | None = None, artifact_bytes: int | None = None):
        self.root = root / "repo"
        self.repo = git.Repo.init(self.root)
        shutil.copy(TRAINER, self.root / "train_gpt.py")
        self.repo.index.add(["train_gpt.py"])
        sha = self.repo.index.commit("base").hexsha
        self.ledger = Ledger(root / "ledger.db", create=True)
        self.budget = budget or Budget()
        self.best = self.ledger.add_experiment(
            kind="baseline",
            status="ok",
            title="Baseline",
            val_bpb=2.5,
            commit_sha=sha,
            artifact_bytes=artifact_bytes,
        )

    def ctx(self) -> ProposalContext:
        source = search._source_at(str(self.root), self.best.commit_sha, "train_gpt.py")
        return ProposalContext(
            source=source,
            trainer="train_gpt.py",
            parent=self.best,
            history=self.ledger.experiments(),
            digest="",
            trainer_env=ENV,
            budget=self.budget,
            root=self.root,
        )

    def propose(self, cfg: search.SearchConfig | None = None):
        return search.propose(self.ctx(), cfg or search.SearchConfig(), 1337)

    def record(self, found, status: str = "ok", val_bpb: float | None = None, **fields) -> Experiment:
        """Commit the proposal on its parent and add its row; a better score becomes the parent."""
        proposal, candidate = found
        self.repo.git.checkout("-q", "--detach", self.best.commit_sha)
        (self.root / "train_gpt.py").write_text(candidate.source)
        self.repo.index.add(["train_gpt.py"])
        sha = self.repo.index.commit(proposal.title).hexsha
        row = self.ledger.add_experiment(
            kind="proposal",
            status=status,
            title=proposal.title,
            hypothesis=proposal.hypothesis,
            proposer=search.NAME,
            parent_id=self.best.id,
            commit_sha=sha,
            val_bpb=val_bpb,
            **fields,
        )
        if status == "ok" and val_bpb is not None and val_bpb < self.best.val_bpb:
            self.best = row
        return row

    def skip_first_moves(self) -> None:
        """Mark every fixed first move as tried (rows that never reached training, no commit)."""
        techniques = gather(self.ctx(), NAMES, 1.0, search._source_at).techniques
        for title in [m.title for m in space.LIBRARY] + [t.title for t in techniques]:
            self.ledger.add_experiment(kind="proposal", status="rejected", title=title, proposer=search.NAME)


def _score(config: dict) -> float:
    """A made-up landscape: lower matrix LR and a wider MLP help."""
    return 2.5 - 0.02 * (config.get("MLP_MULT", 2) - 2) + 2 * abs(config.get("MATRIX_LR", 0.04) - 0.03)


def test_proposals_are_valid_new_and_fit_the_budget(tmp_path):
    bench = Bench(tmp_path)
    seen, titles = set(), []
    techniques = gather(bench.ctx(), NAMES, 1.0, search._source_at).techniques
    for _ in range(len(space.LIBRARY) + len(techniques) + 3):
        found = bench.propose()
        assert found is not None
        proposal, candidate = found
        assert space.key(candidate.config) not in seen and candidate.size <= bench.budget.size_bytes
        seen.add(space.key(candidate.config))
        titles.append(proposal.title)
        assert proposal.set or "techniques: " in proposal.expected_effect
        assert all(f"{k}=" in proposal.expected_effect for k in proposal.set)
        bench.record(found, val_bpb=_score(candidate.config))
    assert titles[: len(space.LIBRARY)] == [m.title for m in space.LIBRARY]
    assert any(t.startswith("Search: ") for t in titles)
    # The last one applies to a worktree of its parent and passes the sandbox's import check.
    from agentgolf.agent.proposers.proposal import check_trainer

    tree = tmp_path / "tree"
    bench.repo.git.worktree("add", "--detach", str(tree), bench.best.commit_sha)
    proposal = search.SearchProposer(search.SearchConfig(), 1337)(bench.ctx(), tree)
    assert proposal is not None
    check_trainer(tree / "train_gpt.py", bench.budget, tmp_path / "check")


def test_an_oversize_config_is_not_proposed_and_a_recorded_one_moves_the_predictor(tmp_path):
    source = TRAINER.read_text()
    base = artifact_size.predict_bytes(source, ENV, 1.0)
    bench = Bench(tmp_path, Budget(size_bytes=base + 1000))
    titles = []
    for _ in range(len(space.LIBRARY)):
        found = bench.propose()
        assert found is not None and found[1].size <= base + 1000
        titles.append(found[0].title)
        bench.record(found, val_bpb=2.6)
    for grows in ("Wider MLP (3x)", "One more layer", "Wider model"):
        assert grows not in titles
    # A baseline recorded at its size calibrates the ratio; an oversize run recorded bigger raises it.
    bench = Bench(tmp_path / "b", artifact_bytes=base)
    before = gather(bench.ctx(), NAMES, 1.0, search._source_at)
    assert before.ratio == pytest.approx(1.0)
    found = bench.propose()
    bench.record(found, status="over_size", artifact_bytes=2 * base)
    after = gather(bench.ctx(), NAMES, 1.0, search._source_at)
    assert after.ratio > 1.5
    assert artifact_size.predict_bytes(source, ENV, after.ratio) > bench.budget.size_bytes / 10
    assert [p.status for p, _ in after.told(0.1)] == ["ok", "over_size"]  # learned as a failure too


def test_it_resumes_from_the_ledger_alone(tmp_path):
    bench = Bench(tmp_path)
    bench.skip_first_moves()
    for _ in range(3):
        found = bench.propose()
        bench.record(found, val_bpb=_score(found[1].config))
    one = search.SearchProposer(search.SearchConfig(), 1337)
    two = search.SearchProposer(search.SearchConfig(), 1337)
    ctx = bench.ctx()
    (tmp_path / "t1").mkdir()
    (tmp_path / "t2").mkdir()
    first, second = one(ctx, tmp_path / "t1"), two(ctx, tmp_path / "t2")
    assert first.title.startswith("Search: ") and first == second
    assert (tmp_path / "t1" / "train_gpt.py").read_text() == (tmp_path / "t2" / "train_gpt.py").read_text()
    again = one(ctx, tmp_path / "t1")  # the same proposer, before the row is in the ledger: another one
    assert again is not None and again.title != first.title
    bench.record(bench.propose(), val_bpb=2.45)
    assert bench.propose()[0].title != first.title


def test_failures_count_and_machine_failures_do_not(tmp_path):
    bench = Bench(tmp_path)
    first = bench.propose()
    bench.record(first, status="infra_error")
    retried = bench.propose()
    assert retried[0].title == first[0].title  # the machine failed, not the idea
    bench.record(retried, status="crash")
    evidence = gather(bench.ctx(), NAMES, 1.0, search._source_at)
    told = evidence.told(0.1)
    assert [(p.status, v) for p, v in told] == [("ok", 2.5), ("crash", pytest.approx(2.6))]
    assert space.key(retried[1].config) in evidence.seen
    assert bench.propose()[0].title != first[0].title


def test_another_proposers_row_counts_when_knobs_and_techniques_explain_it(tmp_path):
    bench = Bench(tmp_path)
    base = bench.ctx().source
    setting = knobs.apply_in_memory(base, knobs.set_edits(base, {"MATRIX_LR": 0.02}, ENV))
    for text, title in ((setting, "LLM: lower LR"), (setting + "# more\n", "LLM: lower LR and code")):
        bench.repo.git.checkout("-q", "--detach", bench.best.commit_sha)
        (bench.root / "train_gpt.py").write_text(text)
        bench.repo.index.add(["train_gpt.py"])
        sha = bench.repo.index.commit(title).hexsha
        bench.ledger.add_experiment(
            kind="proposal",
            status="ok",
            title=title,
            proposer="openai",
            parent_id=1,
            commit_sha=sha,
            val_bpb=2.4,
        )
    points = gather(bench.ctx(), NAMES, 1.0, search._source_at).points
    assert [p.id for p in points] == [1, 2] and points[1].config["MATRIX_LR"] == 0.02


def test_the_hypothesis_names_the_trials_it_builds_on(tmp_path):
    bench = Bench(tmp_path)
    bench.skip_first_moves()
    rows = []
    for _ in range(4):
        found = bench.propose()
        rows.append(bench.record(found, val_bpb=_score(found[1].config)))
    proposal = bench.propose()[0]
    assert "TPE over 5 trials" in proposal.hypothesis, proposal.hypothesis
    assert f"best so far #{bench.best.id}" in proposal.hypothesis
    assert f"on top of #{bench.best.id}" in proposal.hypothesis
    assert "which #" in proposal.hypothesis or "(untried)" in proposal.hypothesis


def test_gains_that_were_not_kept_are_combined_on_the_best(tmp_path):
    bench = Bench(tmp_path)
    bench.skip_first_moves()
    a = bench.record(bench.propose(), status="inconclusive", val_bpb=2.49)
    b = bench.record(bench.propose(), status="inconclusive", val_bpb=2.48)
    proposal, candidate = bench.propose()
    assert proposal.title == f"Combine #{a.id}, #{b.id}", proposal.title
    assert f"#{a.id} (-0.0100 bpb)" in proposal.hypothesis
    evidence = gather(bench.ctx(), NAMES, 1.0, search._source_at)
    wanted = {}
    for row in (a, b):  # b scored better, so its values win where both moved a knob
        moved = space.changes(evidence.base_config, evidence.by_id[row.id].config)
        wanted.update({k: new for k, (_, new) in moved.items()})
    assert all(candidate.config[k] == v for k, v in wanted.items())
    bench.record((proposal, candidate), status="ok", val_bpb=2.6)
    assert not bench.propose()[0].title.startswith("Combine")  # tried once, then back to TPE


def test_playbook_is_an_alias_of_the_search(tmp_path):
    from agentgolf.agent.proposers.registry import make_proposer
    from agentgolf.agent.workspace import init_workspace

    ws = init_workspace(tmp_path / "ws")
    assert ws.config.proposer == search.NAME
    assert isinstance(make_proposer("playbook", ws), search.SearchProposer)
    assert isinstance(make_proposer("search", ws), search.SearchProposer)


SOURCE = """import os
PRESETS = {
    "cpu": {
        "MODEL_DIM": 128,
        "MATRIX_LR": 0.05,
    },
}


class Hyperparameters:
    model_dim = int(os.environ.get("MODEL_DIM", 512))
    matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))
    scalar_lr = float(os.environ.get("SCALAR_LR", 0.04))
"""


def test_edits_hit_the_value_in_force():
    assert knobs.current_value(SOURCE, "MATRIX_LR", "cpu") == 0.05
    assert knobs.current_value(SOURCE, "MATRIX_LR", None) == 0.04
    assert knobs.current_value(SOURCE, "SCALAR_LR", "cpu") == 0.04
    new = knobs.apply_in_memory(SOURCE, knobs.set_edits(SOURCE, {"MATRIX_LR": 0.025}, {"PRESET": "cpu"}))
    assert '"MATRIX_LR": 0.025,' in new and 'os.environ.get("MATRIX_LR", 0.04)' in new
    new = knobs.apply_in_memory(SOURCE, knobs.hparam_edits(SOURCE, {"MODEL_DIM": 160.4}, None))
    assert 'os.environ.get("MODEL_DIM", 160)' in new and '"MODEL_DIM": 128,' in new
    assert knobs.value_in_force(SOURCE, "MODEL_DIM", {"PRESET": "cpu", "MODEL_DIM": "64"}) == 64
    with pytest.raises(ProposalError, match="trainer_env sets MATRIX_LR"):
        knobs.set_edits(SOURCE, {"MATRIX_LR": 0.01}, {"MATRIX_LR": "0.02"})
    compile(new, "train_gpt.py", "exec")


def test_apply_edits_is_all_or_nothing(tmp_path):
    path = tmp_path / "train_gpt.py"
    path.write_text("a = 1\nb = 2\n")
    good = Edit(search="a = 1", replace="a = 3")
    with pytest.raises(ProposalError, match="edit 2: search text not found"):
        apply_edits(tmp_path, [good, Edit(search="c = 4", replace="c = 5")])
    assert path.read_text() == "a = 1\nb = 2\n"
    with pytest.raises(ProposalError, match="outside"):
        apply_edits(tmp_path, [Edit(path="../outside.py", search="a", replace="b")])
    apply_edits(tmp_path, [good])
    assert path.read_text() == "a = 3\nb = 2\n"
    path.write_text("def broken(:\n")
    with pytest.raises(ProposalError, match="no longer compiles"):
        check_compiles([path])


def test_fingerprint_ignores_offsets_and_whitespace():
    a = "--- a/t.py\n+++ b/t.py\n@@ -1,3 +1,3 @@\n-lr = 0.04\n+lr = 0.02\n"
    b = "--- a/t.py\n+++ b/t.py\n@@ -10,3 +10,3 @@\n-lr  =  0.04\n+lr = 0.02  \n"
    c = "--- a/t.py\n+++ b/t.py\n@@ -1,3 +1,3 @@\n-lr = 0.04\n+lr = 0.03\n"
    assert diff_fingerprint(a) == diff_fingerprint(b) != diff_fingerprint(c)
