"""Hill climbing with several slots, on real runs: wins carried onto a newer best (rebase-and-retest),
proposals prepared while slots train, the noise pooled or known, and how busy the slots were.

Two loop runs train real models (the CPU preset on the tiny dataset) in real git repositories; each is
run once per module and read by several tests. The proposers are scripted, so the changes (and which
one wins) are known: more training steps always win here, by far more than the seed noise.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import git
import pytest
from rich.console import Console

from agentgolf.agent.controller.loop import Loop, RunCaps
from agentgolf.agent.judge.acceptance import AcceptanceConfig
from agentgolf.agent.proposers.proposal import Proposal, ProposalContext
from agentgolf.agent.report.report import write_report
from agentgolf.agent.report.summary import slot_utilization
from agentgolf.agent.report.tables import ledger_json
from agentgolf.agent.workspace import save_config
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import SCHEMA_VERSION, Experiment, Ledger, Run
from tests.tiny import TINY_ENV, make_workspace, old_ledger

# The baseline's steps: the preset's count (6 here), plus EXTRA, a second knob on a line of its own.
EXTRA = '    os.environ["ITERATIONS"] = str(int(os.environ["ITERATIONS"]) + 0)  # EXTRA\n'


def _workspace(root: Path, dataset, acceptance: AcceptanceConfig):
    """The tiny workspace with its steps in the trainer (not the env), so that proposals can change them."""
    ws = make_workspace(root, dataset, env={k: v for k, v in TINY_ENV.items() if k != "ITERATIONS"})
    trainer = ws.root / "train_gpt.py"
    text, n = re.subn(r'"ITERATIONS": \d+,', '"ITERATIONS": 6,', trainer.read_text(), count=1)
    assert n == 1 and text.count("    apply_preset()\n") == 1
    trainer.write_text(text.replace("    apply_preset()\n", "    apply_preset()\n" + EXTRA))
    repo = git.Repo(ws.root)
    repo.index.add(["train_gpt.py"])
    repo.index.commit("a 6-step baseline with a second step knob", author=wt.AUTHOR, committer=wt.AUTHOR)
    ws.config.acceptance = acceptance
    save_config(ws.config_path, ws.config)
    return ws


def _edit(tree: Path, old: str, new: str) -> None:
    path = tree / "train_gpt.py"
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def _steps(tree: Path, n: int) -> None:
    _edit(tree, '"ITERATIONS": 6,', f'"ITERATIONS": {n},')


def _extra(tree: Path, old: int, new: int) -> None:
    _edit(tree, f"]) + {old})  # EXTRA", f"]) + {new})  # EXTRA")


class Scripted:
    """A proposer that makes the changes `script` lists, in call order, from any number of threads.

    The first `together` calls wait for each other before they answer: they only get past the barrier
    if that many preparations are in flight at once. They then answer in call order: call k answers only
    once `ledger` holds call k-1's row (the scheduler registered it), so the rounds launch in the script's
    order however long each preparation's checks take and whichever thread the OS runs first. `most` is
    the most calls seen at once; `out_of_order` is set when such a wait ran out (the tests assert it is not).
    """

    def __init__(self, script: list, together: int = 1, ledger: Path | None = None):
        self.script, self.lock = list(script), threading.Lock()
        self.calls = self.active = self.most = 0
        self.barrier = threading.Barrier(together, timeout=120) if together > 1 else None
        self.together, self.barrier_broken, self.out_of_order = together, False, False
        assert together == 1 or ledger is not None, "calls answered in order wait on the ledger"
        self.ledger = ledger

    def _registered(self, title: str, timeout: float = 180) -> bool:
        """Wait until the ledger holds a row titled `title`: the earlier answer was prepared and registered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with closing(sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True, timeout=10)) as conn:
                    if conn.execute("SELECT 1 FROM experiments WHERE title = ?", (title,)).fetchone():
                        return True
            except sqlite3.OperationalError:  # locked, or not made yet: look again
                pass
            time.sleep(0.2)
        return False

    def __call__(self, ctx: ProposalContext, tree: Path) -> Proposal | None:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.most = max(self.most, self.active)
            call = self.calls
        try:
            if self.barrier is not None and call <= self.together:
                try:
                    self.barrier.wait()
                except threading.BrokenBarrierError:
                    self.barrier_broken = True
                if call > 1 and not self._registered(self.script[call - 2][0]):
                    self.out_of_order = True  # the earlier answer was never registered
            if call > len(self.script):
                return None
            title, change = self.script[call - 1]
            change(tree)
            return Proposal(title=title, category="sched")
        finally:
            with self.lock:
                self.active -= 1


def _two_commits(tree: Path) -> None:
    """Two more steps, in two commits: the second edits the line the first wrote."""
    _extra(tree, 0, 3)
    wt.commit_all(tree, "three more steps\n")
    _extra(tree, 3, 6)  # committed by the preparation


class HoldBack:
    """The real local executor on two slots; the run of the two-commit change returns only after the
    12-step one has, so the 12-step change is promoted first and the other is decided after the best moved."""

    def __init__(self, real):
        self.real, self.first_done = real, threading.Event()

    def slots(self, gpus, per_experiment):
        return [None, None]

    def run(self, trainer: Path, run_dir: Path, seed, env, slot, budget):
        source = trainer.read_text()
        result = self.real.run(trainer, run_dir, seed, env, slot, budget)
        if '"ITERATIONS": 12,' in source and "]) + 0)" in source:
            self.first_done.set()
        elif '"ITERATIONS": 6,' in source and "]) + 6)" in source:
            # Rounds of two runs fill both slots, so A's round is over by now (Scripted answers in order);
            # no wait that could hold the slot if it is not: the tests then fail on what they read.
            self.first_done.wait(5)
            time.sleep(2.0)  # several polls: its decision comes after the 12-step one's
        return result

    def __getattr__(self, name):
        return getattr(self.real, name)


def _loop_run(ws, tmp_path: Path, proposer, experiments: int, machine=None):
    out = tmp_path / "out.txt"
    loop = Loop(ws, ws.ledger(), ws.config.budget, console=Console(file=open(out, "w"), width=200))
    if machine is not None:
        loop.lab.executor = machine(loop.lab.executor)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agentgolf.agent.controller.loop.make_proposer", lambda name, ws: proposer)
        summary = loop.run(RunCaps(experiments=experiments), "scripted")
    return summary, loop.ledger.experiments(run_id=summary.run_id), out.read_text()


@pytest.fixture(scope="module")
def two_slots(tmp_path_factory, tiny_dataset):
    """Two slots, a known sigma, one run per candidate. Proposals A (12 steps) and B (12 steps, in two
    commits on another line) are prepared together and train together; A is promoted first, so B's win
    over the baseline is carried onto A and re-tested there. C (9 steps, on A's line) is prepared on the
    baseline, no longer applies to A, and wins over the baseline: its reason says it cannot be carried."""
    tmp_path = tmp_path_factory.mktemp("two_slots")
    acceptance = AcceptanceConfig(noise_seeds=1, known_sigma_bpb=0.001, confirm=False)
    ws = _workspace(tmp_path / "ws", tiny_dataset, acceptance)
    script = [
        ("Twelve steps", lambda tree: _steps(tree, 12)),
        ("Six more steps in two commits", _two_commits),
        ("Nine steps", lambda tree: _steps(tree, 9)),
    ]
    proposer = Scripted(script, together=2, ledger=ws.root / ".agentgolf" / "ledger.db")
    summary, rows, said = _loop_run(ws, tmp_path, proposer, experiments=4, machine=HoldBack)
    return ws, proposer, summary, rows, said


def _titled(rows: list[Experiment], title: str) -> Experiment:
    (row,) = [e for e in rows if e.title == title and e.retest_of is None]
    return row


@pytest.mark.slow
def test_two_slots_keep_two_proposals_in_flight(two_slots):
    ws, proposer, summary, rows, said = two_slots
    assert proposer.most == 2 and not proposer.barrier_broken  # both were being prepared at once
    assert not proposer.out_of_order  # and B was answered after A was registered
    a, b = _titled(rows, "Twelve steps"), _titled(rows, "Six more steps in two commits")
    assert a.parent_id == b.parent_id == rows[0].id  # each knows its parent: the best when asked
    for run in (a, b):  # each trains beside its round's control, on the other slot (test_paired.py)
        (ctrl,) = [e for e in rows if e.kind == "control" and e.paired_with == [run.id]]
        assert (
            {run.slot, ctrl.slot} == {0, 1}
            and run.started_at < ctrl.finished_at
            and ctrl.started_at < run.finished_at
        )


@pytest.mark.slow
def test_a_win_after_the_best_moved_on_is_rebased_and_retested(two_slots):
    ws, proposer, summary, rows, said = two_slots
    repo = git.Repo(ws.root)
    a, b = _titled(rows, "Twelve steps"), _titled(rows, "Six more steps in two commits")
    assert a.kept and a.decision["decision"] == "promote"
    (again,) = [e for e in rows if e.retest_of == b.id]
    # The original keeps its evidence (it beat the baseline) and says where its change went.
    assert b.status == "inconclusive" and not b.kept and b.decision["decision"] == "promote"
    assert f"best moved on to experiment {a.id}" in b.reason
    assert f"re-tested there as experiment {again.id}" in b.reason
    # The re-test: B's whole change (both commits) on A, measured and decided against A.
    assert again.kind == "proposal" and again.parent_id == a.id and again.parent_commit == a.commit_sha
    assert len(wt.chain(repo, a.commit_sha, again.commit_sha)) == 2
    source = repo.git.show(f"{again.commit_sha}:train_gpt.py")
    assert '"ITERATIONS": 12,' in source and "]) + 6)  # EXTRA" in source
    assert again.status in ("ok", "inconclusive") and again.val_bpb is not None and again.decision
    (pair,) = again.decision["pairs"]  # judged beside a control of A, with one seed
    (ctrl,) = [e for e in rows if e.id == pair["control"]]
    assert ctrl.replay_of == a.id and ctrl.commit_sha == a.commit_sha and ctrl.seed == again.seed
    assert again.branch and repo.commit(again.branch).hexsha == again.commit_sha
    # Not a new idea: the budget counted the baseline, A, B and C.
    assert summary.experiments == 4 and summary.stop_reason == "budget spent"


@pytest.mark.slow
def test_a_win_whose_change_no_longer_applies_says_so(two_slots):
    ws, proposer, summary, rows, said = two_slots
    a, c = _titled(rows, "Twelve steps"), _titled(rows, "Nine steps")
    # Prepared on the baseline while A trained; A's change to the same line is in the way, so it ran
    # on the parent it was made for.
    assert c.parent_id == rows[0].id and "not moved onto the new best" in said
    assert c.decision["decision"] == "promote" and c.status == "inconclusive" and not c.kept
    assert "not carried over: its change no longer applies" in c.reason, c.reason
    assert not [e for e in rows if e.retest_of == c.id]
    assert a.kept


@pytest.mark.slow
def test_a_known_sigma_is_tested_as_known_in_the_loop(two_slots):
    ws, proposer, summary, rows, said = two_slots
    decided = [e for e in rows if e.kind == "proposal" and e.decision]
    assert len(decided) == 4
    for e in decided:
        d = e.decision
        assert (d["noise"], d["dof"], d["design"]) == ("known", None, "paired"), d
        assert d["sigma_bpb"] == pytest.approx(0.001 * 2**0.5)  # of a difference of two runs
        assert d["p_value"] is not None and d["statistic"] is not None


@pytest.mark.slow
def test_slot_utilization_is_recorded_and_shown(two_slots, tmp_path):
    ws, proposer, summary, rows, said = two_slots
    ran = [e for e in rows if e.started_at is not None]
    assert {e.slot for e in ran} == {0, 1} and all(e.finished_at >= e.started_at for e in ran)
    busy = summary.utilization
    assert busy is not None and set(busy.slots) == {0, 1} and 0 < busy.overall <= 1
    assert busy.line() in said and said.count("slot utilization: ") == 1
    ledger = Ledger(ws.state / "ledger.db")
    files = write_report(ledger, summary.run_id, tmp_path / "reports")
    report = files.markdown.read_text()
    assert "slot utilization: " in report
    b = _titled(rows, "Six more steps in two commits")
    (again,) = [e for e in rows if e.retest_of == b.id]
    assert f"(re-test of #{b.id})" in report and f"re-tested as #{again.id}" in report
    listed = {r["id"]: r for r in json.loads(ledger_json(ledger.experiments(run_id=summary.run_id)))}
    assert listed[again.id]["retest_of"] == b.id and listed[again.id]["slot"] in (0, 1)


@pytest.mark.slow
def test_calibration_and_confirmations_are_pooled_into_the_noise(tmp_path, tiny_dataset):
    """One slot: two baseline seeds (1 dof, the prior), X (12 steps) confirmed and promoted in two pairs;
    then Y is judged on the prior and X's two differences pooled: 1 + 1 = 2 degrees of freedom (its own
    pairs left out), each of its rounds beside a control of X."""
    ws = _workspace(tmp_path / "ws", tiny_dataset, AcceptanceConfig(noise_seeds=2, max_runs=2, alpha=0.05))
    script = [("Twelve steps", lambda tree: _steps(tree, 12)), ("One more step", lambda t: _extra(t, 0, 1))]
    summary, rows, said = _loop_run(ws, tmp_path, Scripted(script), experiments=3)
    (seed,) = [e for e in rows if e.kind == "calibration"]  # with the baseline's run: the noise prior
    assert seed.replay_of == rows[0].id and seed.seed == rows[0].seed + 1
    x, y = _titled(rows, "Twelve steps"), _titled(rows, "One more step")
    (x_again,) = [e for e in rows if e.kind == "confirm" and e.replay_of == x.id]
    assert x.kept, x.reason
    assert (x.decision["noise"], x.decision["dof"], len(x.decision["pairs"])) == ("pooled", 1, 2)
    assert {p["candidate"] for p in x.decision["pairs"]} == {x.id, x_again.id}
    assert y.parent_id == x.id and y.decision, y.reason
    assert (y.decision["noise"], y.decision["dof"]) == ("pooled", 2)
    controls = {e.id: e for e in rows if e.kind == "control"}
    assert all(controls[p["control"]].replay_of == x.id for p in y.decision["pairs"])
    assert summary.utilization is not None and set(summary.utilization.slots) == {0}


def _row(exp_id: int, slot: int | None, start: float | None, end: float | None) -> Experiment:
    return Experiment(
        id=exp_id, kind="proposal", status="ok", slot=slot, started_at=start, finished_at=end, created_at=0.0
    )


def test_slot_utilization_is_each_slots_busy_share_of_the_window():
    rows = [
        _row(1, 0, 100.0, 150.0),
        _row(2, 1, 100.0, 190.0),
        _row(3, 0, 160.0, 200.0),  # slot 0 idle from 150 to 160
        _row(4, 1, 195.0, None),  # not finished: left out
        _row(5, None, None, None),  # rejected: never ran
    ]
    busy = slot_utilization(rows, slots=3)  # slot 2 never ran anything
    assert busy.window_seconds == 100.0
    assert busy.slots == {0: 0.9, 1: 0.9, 2: 0.0}
    assert busy.overall == pytest.approx(0.6)
    assert busy.line() == "slot utilization: 60% (slot 0 90%, slot 1 90%, slot 2 0%)"
    assert slot_utilization([_row(5, None, None, None)]) is None


def test_the_whole_change_is_rebased_not_only_its_tip(tmp_path):
    """Two commits, the second editing the first's line: the tip alone does not apply, the whole change
    does; a change to the line the new best changed does not, and a change the best holds is no change."""
    repo = git.Repo.init(tmp_path / "repo", initial_branch="main")
    path = tmp_path / "repo" / "train_gpt.py"
    path.write_text("lr = 0.04\n" + "# ...\n" * 5 + "layers = 9\n")
    repo.index.add(["train_gpt.py"])
    base = repo.index.commit("base", author=wt.AUTHOR, committer=wt.AUTHOR).hexsha

    def commit_on(start: str, *edits: tuple[str, str]) -> str:
        tree = wt.add_worktree(repo, tmp_path / "tree", None, start)
        for old, new in edits:
            (tree / "train_gpt.py").write_text((tree / "train_gpt.py").read_text().replace(old, new))
            sha = wt.commit_all(tree, f"{new}\n")
        wt.remove_worktree(repo, tree)
        return sha

    best = commit_on(base, ("lr = 0.04", "lr = 0.02"))
    change = commit_on(base, ("layers = 9", "layers = 10"), ("layers = 10", "layers = 11"))
    scratch = tmp_path / "scratch"
    moved = wt.rebase_change(repo, base, change, best, scratch)
    assert repo.git.show(f"{moved}:train_gpt.py") == "lr = 0.02\n" + "# ...\n" * 5 + "layers = 11"
    assert wt.chain(repo, best, moved) and len(wt.chain(repo, best, moved)) == 2
    tip_only = wt.rebase_change(repo, repo.commit(change).parents[0].hexsha, change, best, scratch)
    assert tip_only is None  # what the old tip-only rebase did: a conflict
    assert wt.rebase_change(repo, base, commit_on(base, ("lr = 0.04", "lr = 0.03")), best, scratch) is None
    same = wt.rebase_change(repo, base, commit_on(base, ("lr = 0.04", "lr = 0.02")), best, scratch)
    assert same is not None and not wt.diff(repo, best, same)  # Lab.rebase: "already holds the same change"
    assert not scratch.exists() and repo.active_branch.name == "main" and not repo.is_dirty()


def test_a_v3_ledger_gains_the_retest_link_and_the_slot_columns(tmp_path):
    """v3 -> v4: old rows read with no link, slot or start; new rows store them."""
    ledger = Ledger(old_ledger(tmp_path / "ledger.db", 3))
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
    first = ledger.get(1)
    assert (first.retest_of, first.slot, first.started_at, first.val_bpb) == (None, None, None, 2.0)
    ledger.add_run(Run(id="r", created_at=1.0, base_commit="abc"))
    again = ledger.add_experiment(
        run_id="r", kind="proposal", status="running", retest_of=1, slot=1, started_at=5.0
    )
    assert (again.retest_of, again.slot, again.started_at) == (1, 1, 5.0)
    assert ledger.experiments()[1].retest_of == 1
