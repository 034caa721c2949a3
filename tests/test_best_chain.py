"""A best chain that holds up: it ends at the last promotion, its scores are means over each row's runs,
"Δ vs parent" is one definition everywhere (paired, else means), `pick` and `submit` take only the kept
chain at the full budget (unless --force, said loudly), and a replay or the report weighs a gap against
the noise of the row's own rung.

Real components throughout: the SQLite ledger, a real workspace and git repository for the commands (run
as subprocesses, as a user runs them), and the report written to disk.
"""

from __future__ import annotations

import time
from pathlib import Path

import git
import pytest

from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.controller.loop import replay_verdict
from agentgolf.agent.judge.acceptance import AcceptanceConfig, noise_floor
from agentgolf.agent.judge.deltas import Scores, score_of, vs_parent
from agentgolf.agent.judge.screening import lane
from agentgolf.agent.proposers.briefing.digest import build_digest
from agentgolf.agent.report.report import write_report
from agentgolf.agent.report.summary import best, best_chain, summarize
from agentgolf.agent.results.submit import run_folder, write_submission
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Ledger, Run
from agentgolf.sandbox.result import SandboxResult, Status
from tests.test_cli import agentgolf, one_line_error
from tests.tiny import make_workspace

WHO = dict(author="Ada", github_id="ada", blurb="A change.")


def _lucky_ledger(path: Path) -> Ledger:
    """The baseline (3 seeds, mean 1.300); #4 kept on a lucky first run (1.200, then 1.270 and 1.272: mean
    1.2473); #7 kept after it (1.230 and 1.232: mean 1.231), the last promotion. The lowest single first
    run is #4's, so a chain picked by first runs would end at #4, an ancestor of the real best."""
    ledger = Ledger(path, create=True)
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="b" * 40))
    add = ledger.add_experiment
    base = add(
        run_id="r1", kind="baseline", status="ok", title="Baseline", val_bpb=1.300, kept=True,
        commit_sha="b" * 40, branch="agentgolf/r1/1-baseline", seed=1337,
    )  # fmt: skip
    for v in (1.302, 1.298):
        add(run_id="r1", kind="calibration", status="ok", replay_of=base.id, val_bpb=v, commit_sha="b" * 40)
    lucky = add(
        run_id="r1", kind="proposal", status="ok", parent_id=base.id, title="Lucky", val_bpb=1.200,
        kept=True, commit_sha="a" * 40, branch="agentgolf/r1/4-lucky", delta_bpb=-0.100, seed=1337,
    )  # fmt: skip
    for v in (1.270, 1.272):
        add(
            run_id="r1", kind="confirm", status="ok", replay_of=lucky.id, parent_id=base.id, val_bpb=v,
            commit_sha="a" * 40,
        )  # fmt: skip
    last = add(
        run_id="r1", kind="proposal", status="ok", parent_id=lucky.id, title="Real", val_bpb=1.230,
        kept=True, commit_sha="c" * 40, branch="agentgolf/r1/7-real", delta_bpb=0.030, seed=1337,
    )  # fmt: skip
    add(
        run_id="r1", kind="confirm", status="ok", replay_of=last.id, parent_id=lucky.id, val_bpb=1.232,
        commit_sha="c" * 40,
    )  # fmt: skip
    return ledger


def test_the_report_chain_ends_at_the_last_promotion_with_means(tmp_path):
    ledger = _lucky_ledger(tmp_path / "ledger.db")
    rows = ledger.experiments(run_id="r1")
    assert min((e for e in rows if e.kept), key=lambda e: e.val_bpb).id == 4  # the trap
    assert [e.id for e in best_chain(rows)] == [1, 4, 7] and best(rows).id == 7
    summary = summarize(ledger.get_run("r1"), rows)
    assert summary.scores[7].bpb == pytest.approx(1.231) and summary.scores[7].runs == 2
    assert summary.scores[4].bpb == pytest.approx((1.200 + 1.270 + 1.272) / 3)
    # Δ vs parent: #7's mean against #4's mean, a gain, where first runs say +0.030 (a loss).
    assert summary.scores[7].delta == pytest.approx(1.231 - (1.200 + 1.270 + 1.272) / 3)
    md = write_report(ledger, "r1", tmp_path / "reports").markdown.read_text()
    assert "best: #7 Real, val_bpb **1.2310** (mean of 2 runs; -0.0690 vs baseline 1.3000), branch " in md
    assert "branch `agentgolf/r1/7-real`" in md
    chain = md.split("## Best chain")[1].split("##")[0]
    assert "| 4 | Lucky |  | 1.2473 | 3 | -0.0527 | -0.0527 |" in chain
    assert "| 7 | Real |  | 1.2310 | 2 | -0.0163 | -0.0690 |" in chain


def test_delta_vs_parent_is_the_mean_difference_everywhere(tmp_path, tiny_dataset):
    """The parent has three runs (mean 1.310) and the candidate two (mean 1.280): Δ -0.030, where first run
    against first run says -0.010. The ledger's column (Lab._delta), the report and the digest agree."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    ledger = ws.ledger()
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="b" * 40))
    add = ledger.add_experiment
    base = add(
        run_id="r1", kind="baseline", status="ok", title="Baseline", val_bpb=1.300, kept=True,
        commit_sha="b" * 40,
    )  # fmt: skip
    for v in (1.310, 1.320):
        add(run_id="r1", kind="calibration", status="ok", replay_of=base.id, val_bpb=v, commit_sha="b" * 40)
    cand = add(
        run_id="r1", kind="proposal", status="running", parent_id=base.id, title="Cand", commit_sha="c" * 40,
        seed=1337,
    )  # fmt: skip
    lab = Lab(ws, ledger, ws.config.budget)
    recorded = lab.record(cand, SandboxResult(status=Status.ok, val_bpb=1.290), None)
    assert recorded.delta_bpb == pytest.approx(1.290 - 1.310)  # its run against the parent's mean
    conf = add(
        run_id="r1", kind="confirm", status="running", replay_of=cand.id, parent_id=base.id,
        commit_sha="c" * 40, seed=2337,
    )  # fmt: skip
    lab.record(conf, SandboxResult(status=Status.ok, val_bpb=1.270), None)
    rows = ledger.experiments(run_id="r1")
    assert vs_parent(rows, ledger.get(cand.id)) == pytest.approx(1.280 - 1.310)
    md = write_report(ledger, "r1", tmp_path / "reports").markdown.read_text()
    assert "| 4 | Cand |  | 1.2800 | -0.0300 |" in md.split("## Dead ends")[1]
    digest = build_digest(rows, ledger.get(base.id))
    assert "exp 4 Cand: val_bpb 1.2800 (mean of 2 runs), -0.0300 vs parent" in digest


def test_delta_vs_parent_is_paired_when_the_row_has_rounds(tmp_path):
    """With controls of the parent beside each run (same seed), Δ is the mean of the differences."""
    ledger = Ledger(tmp_path / "ledger.db", create=True)
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="b" * 40))
    add = ledger.add_experiment
    base = add(run_id="r1", kind="baseline", status="ok", val_bpb=1.300, kept=True, commit_sha="b" * 40)
    cand = add(
        run_id="r1", kind="proposal", status="ok", parent_id=base.id, val_bpb=1.295, commit_sha="c" * 40,
        seed=1337,
    )  # fmt: skip
    conf = add(
        run_id="r1", kind="confirm", status="ok", replay_of=cand.id, parent_id=base.id, val_bpb=1.305,
        commit_sha="c" * 40, seed=2337,
    )  # fmt: skip
    for run, seed, v in ((cand, 1337, 1.299), (conf, 2337, 1.311)):
        add(
            run_id="r1", kind="control", status="ok", replay_of=base.id, val_bpb=v, commit_sha="b" * 40,
            seed=seed, paired_with=[run.id],
        )  # fmt: skip
    rows = ledger.experiments(run_id="r1")
    score = score_of(rows, ledger.get(cand.id))
    assert score.rounds == 2 and score.delta == pytest.approx(((1.295 - 1.299) + (1.305 - 1.311)) / 2)
    assert score.bpb == pytest.approx(1.300)  # the mean of its own runs, unpaired
    # Without the controls' pairing it is the difference of the means (the controls are parent runs).
    unpaired = [e.model_copy(update={"paired_with": []}) for e in rows]
    parent_mean = (1.300 + 1.299 + 1.311) / 3
    assert Scores(unpaired).delta(ledger.get(cand.id)) == pytest.approx(1.300 - parent_mean)


def test_ledger_and_show_print_the_paired_delta_as_it_stands(tmp_path, tiny_dataset):
    """The row recorded Δ -0.004 from its first round; a confirmation's round came in after (-0.006): the
    ledger and `show` print the mean over both pairs, and `show` says what was recorded, even when the
    ledger is filtered down to the candidate alone (its controls are read from the whole run)."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    ledger = ws.ledger()
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="b" * 40))
    add = ledger.add_experiment
    base = add(run_id="r1", kind="baseline", status="ok", val_bpb=1.300, kept=True, commit_sha="b" * 40)
    cand = add(
        run_id="r1", kind="proposal", status="inconclusive", parent_id=base.id, val_bpb=1.295,
        commit_sha="c" * 40, seed=1337, delta_bpb=-0.004, title="Cand",
    )  # fmt: skip
    conf = add(
        run_id="r1", kind="confirm", status="ok", replay_of=cand.id, parent_id=base.id, val_bpb=1.305,
        commit_sha="c" * 40, seed=2337,
    )  # fmt: skip
    for run, seed, v in ((cand, 1337, 1.299), (conf, 2337, 1.311)):
        add(
            run_id="r1", kind="control", status="ok", replay_of=base.id, val_bpb=v, commit_sha="b" * 40,
            seed=seed, paired_with=[run.id],
        )  # fmt: skip
    table = agentgolf("ledger", "--status", "inconclusive", cwd=ws.root, check=True).stdout
    (line,) = [x for x in table.splitlines() if "Cand" in x]
    assert "-0.0050 (2 pairs)" in line and "-0.0040" not in line, table
    shown = agentgolf("show", str(cand.id), cwd=ws.root, check=True).stdout
    assert "delta vs parent: -0.005000 (2 pairs) (when recorded: -0.004000)" in shown, shown


def _gpu_ledger(path: Path) -> Ledger:
    """Full-budget seeds a hair apart (sd 0.0003) and screen seeds far apart (sd 0.3), one run."""
    ledger = Ledger(path, create=True)
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="b" * 40))
    add = ledger.add_experiment
    base = add(
        run_id="r1", kind="baseline", status="ok", title="Baseline", val_bpb=1.3000, kept=True,
        commit_sha="b" * 40, manifest={"gpus": [0]}, seed=1337,
    )  # fmt: skip
    for v in (1.3003, 1.2997):
        add(run_id="r1", kind="calibration", status="ok", replay_of=base.id, val_bpb=v, commit_sha="b" * 40)
    for v in (1.50, 1.80, 1.20):
        add(
            run_id="r1", kind="calibration", status="ok", replay_of=base.id, val_bpb=v, rung="screen",
            commit_sha="b" * 40,
        )  # fmt: skip
    add(
        run_id="r1", kind="proposal", status="ok", parent_id=base.id, title="Full jump", val_bpb=1.2900,
        commit_sha="c" * 40,
    )  # fmt: skip
    add(
        run_id="r1", kind="proposal", status="ok", parent_id=base.id, title="Screen", val_bpb=1.30,
        rung="screen", commit_sha="d" * 40,
    )  # fmt: skip
    return ledger


def test_a_replay_is_weighed_against_its_own_rungs_noise(tmp_path):
    ledger = _gpu_ledger(tmp_path / "ledger.db")
    rows = ledger.experiments(run_id="r1")
    original = ledger.get(1)
    full_sigma = noise_floor(lane(rows, "")).sigma
    assert full_sigma == pytest.approx(0.0003) and noise_floor(rows).sigma > 100 * full_sigma  # pooled: wrong
    again = original.model_copy(update={"id": 99, "val_bpb": original.val_bpb + 5 * full_sigma})
    verdict = replay_verdict(original, again, rows, AcceptanceConfig())
    assert verdict.startswith("DOES NOT REPRODUCE") and "5.0 sigma" in verdict, verdict
    near = original.model_copy(update={"id": 99, "val_bpb": original.val_bpb + full_sigma})
    assert replay_verdict(original, near, rows, AcceptanceConfig()).startswith("reproduced within noise")


def test_the_reports_jump_threshold_is_the_rows_own_rung(tmp_path):
    ledger = _gpu_ledger(tmp_path / "ledger.db")
    summary = summarize(ledger.get_run("r1"), ledger.experiments(run_id="r1"))
    assert summary.noise_bpb == pytest.approx(0.0003) and summary.rung_noise["screen"] == pytest.approx(0.3)
    jumps = [a.exp_id for a in summary.anomalies if a.kind == "suspicious_jump"]
    assert jumps == [7]  # -0.01 is 33 full-rung sigmas; the screen row's gain is within its noise
    md = write_report(ledger, "r1", tmp_path / "reports").markdown.read_text()
    assert "on rung screen: above 1.5000 bpb, noise floor 0.3000 bpb" in md


# --- pick and submit take the kept chain only ---------------------------------------------------------


@pytest.fixture
def chain_workspace(tmp_path: Path, tiny_dataset) -> tuple[Path, dict[str, int]]:
    """A real workspace: the baseline (kept), a kept change, a dead end and a screen-rung row, each with
    its own commit and the run folder files that `submit` copies."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    repo = git.Repo(ws.root)
    base = repo.head.commit.hexsha
    trainer = ws.root / "train_gpt.py"
    commits = {}
    for name in ("kept", "dead", "screen"):
        repo.git.checkout("-b", name, base)
        trainer.write_text(trainer.read_text() + f"\n# {name} change\n")
        repo.index.add(["train_gpt.py"])
        commits[name] = repo.index.commit(f"{name} change").hexsha
        repo.git.checkout("-")
    ledger = Ledger(ws.state / "ledger.db")
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit=base))
    add = ledger.add_experiment
    common = dict(run_id="r1", status="ok", artifact_bytes=1000, val_loss=2.0)
    ids = {"base": add(kind="baseline", kept=True, commit_sha=base, val_bpb=1.30, seed=1, **common).id}
    rows = (("kept", True, "", 1.25), ("dead", False, "", 1.31), ("screen", False, "screen", 1.2))
    for name, kept, rung, bpb in rows:
        ids[name] = add(
            kind="proposal", parent_id=ids["base"], kept=kept, rung=rung, commit_sha=commits[name],
            parent_commit=base, val_bpb=bpb, seed=1, title=f"{name} idea", **common,
        ).id  # fmt: skip
    for exp_id in ids.values():
        folder = run_folder(ledger, exp_id)
        folder.mkdir(parents=True)
        (folder / "train_gpt.py").write_text("print('trainer')\n")
        (folder / "train.log").write_text("val_bpb:1.3\n")
    ledger.close()
    return ws.root, ids


def test_pick_refuses_unkept_and_screen_rows_unless_forced(chain_workspace):
    root, ids = chain_workspace
    one_line_error(agentgolf("pick", str(ids["dead"]), "--onto", "x", cwd=root), "was never kept")
    one_line_error(agentgolf("pick", str(ids["screen"]), "--onto", "x", cwd=root), "screen rung 'screen'")
    repo = git.Repo(root)
    assert "x" not in {h.name for h in repo.heads}
    agentgolf("pick", str(ids["kept"]), "--onto", "good", cwd=root, check=True)
    forced = agentgolf("pick", str(ids["dead"]), "--onto", "forced", "--force", cwd=root, check=True)
    assert "WARNING: --force" in forced.stderr and "was never kept" in forced.stderr, forced.stderr
    assert "# dead change" in repo.commit("forced").tree["train_gpt.py"].data_stream.read().decode()


def test_submit_refuses_unkept_and_screen_rows_unless_forced(chain_workspace):
    root, ids = chain_workspace
    who = ["--author", "Ada", "--github-id", "ada", "--out", "records"]
    one_line_error(agentgolf("submit", str(ids["dead"]), "--name", "Dead", *who, cwd=root), "was never kept")
    one_line_error(agentgolf("submit", str(ids["screen"]), "--name", "S", *who, cwd=root), "screen rung")
    assert not (root / "records").exists()
    # A kept row, but a CPU row of one seed (test_submit_guard.py): --force, and its lineage is a kept chain.
    done = agentgolf("submit", str(ids["kept"]), "--name", "Kept", "--force", *who, cwd=root, check=True)
    readme = (Path(done.stdout.split("submission folder:")[1].strip()) / "README.md").read_text()
    assert "The chain of kept ideas" in readme and "never kept" not in done.stderr
    forced = agentgolf("submit", str(ids["dead"]), "--name", "Forced", "--force", *who, cwd=root, check=True)
    assert "WARNING: --force" in forced.stderr and "never kept" in forced.stderr, forced.stderr
    readme = (Path(forced.stdout.split("submission folder:")[1].strip()) / "README.md").read_text()
    assert "The chain of kept ideas" not in readme and "It is not a chain of kept ideas" in readme
    assert f"#{ids['dead']} was never promoted" in readme


def test_write_submission_itself_refuses_without_force(tmp_path):
    (tmp_path / "state").mkdir()
    ledger = _lucky_ledger(tmp_path / "state" / "ledger.db")
    dead = ledger.add_experiment(
        run_id="r1", kind="proposal", status="ok", parent_id=7, val_bpb=1.24, commit_sha="e" * 40,
        artifact_bytes=1000, seed=1,
    )  # fmt: skip
    folder = run_folder(ledger, dead.id)  # the files it would copy: what --force cannot mend is said first
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_text("print('trainer')\n")
    (folder / "train.log").write_text("val_bpb:1.24\n")
    with pytest.raises(AgentgolfError, match=rf"experiment #{dead.id} was never kept .*--force"):
        write_submission(ledger, dead.id, tmp_path / "out", name="x", **WHO)
    assert not (tmp_path / "out").exists()
