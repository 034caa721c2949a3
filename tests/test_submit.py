"""Records folders from a real ledger and run folders; refusals; the standard-library t-test p-value."""

from __future__ import annotations

import json
import math
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agentgolf.agent.judge.stats import one_sided_t_test, regularized_beta, student_t_sf
from agentgolf.agent.results.bake import bake
from agentgolf.agent.results.submit import run_folder, write_submission
from agentgolf.challenge import margin_bpb
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Ledger, Run

NOW = datetime(2026, 3, 20, 9, 30, 5, tzinfo=timezone.utc)
CODE = b"print('a tiny trainer')\n" * 40
BASELINE_BPB, BASELINE_LOSS = 1.2244, 2.0727
WHO = dict(author="Ada", github_id="ada", name="Warmdown tweak (x2)!", blurb="Longer warmdown.")
ENV = {"WARMDOWN_ITERS": "2400"}
# What a challenge run's manifest records (crafted: no GPU here): 8 GPUs, the 600 s budget, sp1024's data.
GPU_RUN = {
    "gpus": list(range(8)),
    "gpu_model": "8xH100",
    "budget": {"train_seconds": 600.0},
    "data_check": {"variant": "sp1024", "allowed": False},
    "env": ENV,
}


def _files(ledger: Ledger, exp_id: int, code: bytes = CODE, log: str | None = None) -> None:
    folder = run_folder(ledger, exp_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_gpt.py").write_bytes(code)
    (folder / "train.log").write_text(log or f"log of experiment {exp_id}\nval_bpb:1.2\n")


def _ledger(tmp_path: Path, settings: dict | None = None) -> Ledger:
    """#1 baseline, #2 the win (seed 1337), #3 and #4 replays with seeds 42 and 7, #5 a crash."""
    (tmp_path / "state").mkdir(parents=True)
    ledger = Ledger(tmp_path / "state" / "ledger.db", create=True)
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="base", settings=settings or {}))
    add = ledger.add_experiment
    base = add(
        run_id="r1",
        kind="baseline",
        status="ok",
        title="Baseline",
        hypothesis="The reference.",
        val_bpb=BASELINE_BPB,
        val_loss=BASELINE_LOSS,
        kept=True,
        seed=1337,
        commit_sha="base",
        artifact_bytes=15_863_489,
    )
    common = dict(
        run_id="r1",
        status="ok",
        parent_id=base.id,
        title="Longer warmdown",
        commit_sha="c2" * 20,
        hypothesis="Warmdown | more steps helps the int8 roundtrip.",
        artifact_bytes=15_900_000,
        train_seconds=600.0,
    )
    win = add(
        kind="proposal",
        kept=True,
        seed=1337,
        val_bpb=1.2100,
        val_loss=2.0480,
        delta_bpb=-0.0144,
        manifest={"seed": 1337, **GPU_RUN},
        **common,
    )
    add(
        kind="replay",
        replay_of=win.id,
        seed=42,
        val_bpb=1.2110,
        val_loss=2.0497,
        manifest=GPU_RUN,
        **common | {"artifact_bytes": 15_900_100},
    )
    add(kind="replay", replay_of=win.id, seed=7, val_bpb=1.2090, val_loss=2.0463, manifest=GPU_RUN, **common)
    add(run_id="r1", kind="proposal", status="crash", parent_id=base.id, title="Broken", seed=1337)
    for exp_id in (2, 3, 4):
        _files(ledger, exp_id)
    return ledger


def _submit(ledger, tmp_path, exp_id=2, **kw):
    return write_submission(ledger, exp_id, tmp_path / "records", now=NOW, **WHO | kw)


def test_three_seed_submission(tmp_path):
    ledger = _ledger(tmp_path)
    folder = _submit(ledger, tmp_path, baseline_bpb=BASELINE_BPB, extra_seeds=[ledger.get(3), ledger.get(4)])
    assert folder == tmp_path / "records" / "2026-03-20_warmdown-tweak-x2"  # the branch names' slug rule
    files = sorted(p.name for p in folder.iterdir())
    assert files == [
        "README.md",
        "submission.json",
        "train_gpt.py",
        "train_seed1337.log",
        "train_seed42.log",
        "train_seed7.log",
    ]
    code = (folder / "train_gpt.py").read_bytes()  # the scored file, with its trainer_env baked in
    assert code == bake(CODE, ENV) and code.endswith(CODE) and len(code) > len(CODE)
    assert (folder / "train_seed42.log").read_text().startswith("log of experiment 3")

    info = json.loads((folder / "submission.json").read_text())
    scores = [1.2100, 1.2110, 1.2090]
    assert info["author"] == "Ada" and info["github_id"] == "ada" and info["name"] == WHO["name"]
    assert info["blurb"] == "Longer warmdown." and info["date"] == "2026-03-20T09:30:05Z"
    assert info["track"] == "10min_16mb"
    assert info["val_bpb"] == pytest.approx(statistics.fmean(scores))
    assert info["val_loss"] == pytest.approx((2.0480 + 2.0497 + 2.0463) / 3)
    assert info["val_bpb_std"] == pytest.approx(0.001)
    assert info["bytes_total"] == 15_900_100 + len(code) - len(CODE)  # the largest artifact, baked code
    assert info["bytes_code"] == len(code) and "warnings" not in info
    assert info["seeds"] == [1337, 42, 7]
    assert info["seed_results"]["42"] == {
        "val_loss": 2.0497,
        "val_bpb": 1.2110,
        "artifact_bytes": 15_900_100,
        "train_time_s": 600.0,
        "log": "train_seed42.log",
        "agentgolf_experiment": 3,
    }
    # The margin is 0.005 nats in bpb at this run's tokens/byte (val_bpb x ln2 / val_loss of #2).
    margin = 0.005 * 1.2100 / 2.0480
    assert info["margin_bpb"] == pytest.approx(margin, abs=1e-8)
    target = BASELINE_BPB - margin
    t = (target - statistics.fmean(scores)) / (0.001 / math.sqrt(3))
    assert info["t_statistic"] == pytest.approx(t, abs=1e-4)
    p_closed_form = 0.5 * (1 - t / math.sqrt(t * t + 2))  # Student t tail for df = 2
    assert info["p_value"] == pytest.approx(p_closed_form, rel=1e-2)
    assert info["p_value"] < 0.01

    readme = (folder / "README.md").read_text()
    assert "# Warmdown tweak (x2)!" in readme and "Longer warmdown." in readme
    assert "| 0 | Baseline | 1.2244 |" in readme
    assert "| 1 | Longer warmdown | 1.2100 | -0.0144 | Warmdown \\| more steps" in readme
    assert "| 42 | 2.049700 | 1.211000 | 15,900,100 | 600.0 | `train_seed42.log` |" in readme
    assert f"t = {t:.2f}, df = 2, p = " in readme
    assert "WARMDOWN_ITERS=2400" in readme


def test_single_seed_has_no_t_test(tmp_path):
    ledger = _ledger(tmp_path)
    folder = _submit(ledger, tmp_path, baseline_bpb=BASELINE_BPB, force=True)  # one seed: refused unforced
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "submission.json",
        "train.log",
        "train_gpt.py",
    ]
    info = json.loads((folder / "submission.json").read_text())
    assert info["val_bpb"] == 1.21 and info["val_loss"] == 2.048 and info["val_bpb_std"] is None
    assert info["seeds"] == [1337] and "t_statistic" not in info and "p_value" not in info
    assert "needs at least two seeds" in (folder / "README.md").read_text()


def test_a_replay_submits_the_chain_of_its_original(tmp_path):
    ledger = _ledger(tmp_path)
    folder = _submit(ledger, tmp_path, exp_id=3, force=True)
    readme = (folder / "README.md").read_text()
    assert "| 0 | Baseline |" in readme and "| 1 | Longer warmdown | 1.2100 | -0.0144 |" in readme
    info = json.loads((folder / "submission.json").read_text())
    grew = len(bake(CODE, ENV)) - len(CODE)
    assert info["val_bpb"] == 1.211 and info["seeds"] == [42] and info["bytes_total"] == 15_900_100 + grew


def test_margin_from_run_settings_and_fallback(tmp_path):
    ledger = _ledger(tmp_path / "a", settings={"tokens_per_byte": 0.40945})
    folder = _submit(ledger, tmp_path / "a", baseline_bpb=1.23, extra_seeds=[ledger.get(3)], force=True)
    info = json.loads((folder / "submission.json").read_text())
    assert info["margin_bpb"] == pytest.approx(0.002954, abs=1e-6)  # sp1024, as in the challenge notes
    assert info["margin_source"] == "run tokens_per_byte"

    ledger = _ledger(tmp_path / "b")
    for exp_id in (2, 3):
        ledger.update(exp_id, val_loss=None)
    folder = _submit(
        ledger,
        tmp_path / "b",
        baseline_bpb=1.23,
        extra_seeds=[ledger.get(3)],
        threshold_bpb=0.004,
        force=True,
    )
    info = json.loads((folder / "submission.json").read_text())
    assert info["margin_bpb"] == 0.004 and info["val_loss"] is None
    assert info["margin_source"].startswith("threshold_bpb")

    folder = _submit(ledger, tmp_path / "c", baseline_bpb=1.23, extra_seeds=[ledger.get(3)], force=True)
    info = json.loads((folder / "submission.json").read_text())  # no threshold: the challenge's, at sp1024
    assert info["margin_bpb"] == pytest.approx(margin_bpb(), abs=1e-8) == pytest.approx(0.002954, abs=1e-6)
    assert info["margin_source"].startswith("sp1024")


def test_refusals(tmp_path):
    ledger = _ledger(tmp_path)
    out = tmp_path / "records"
    refusals = [
        (dict(size_limit=15_000_000), r"15,900,000 bytes, over the 15,000,000-byte limit"),
        (dict(extra_seeds=[ledger.get(3)], size_limit=15_900_050), r"extra seed #3 .* over the"),
        (dict(extra_seeds=[ledger.get(5)]), r"extra seed #5 has status 'crash'"),
        (dict(extra_seeds=[ledger.get(2)]), r"extra seed #2 is the experiment itself"),
        (dict(name="!!!"), r"empty folder name"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(AgentgolfError, match=message):
            _submit(ledger, tmp_path, **kwargs)
    with pytest.raises(AgentgolfError, match=r"experiment #5 has status 'crash'; only an ok experiment"):
        _submit(ledger, tmp_path, exp_id=5)
    assert not out.exists()  # nothing written by a refusal

    ledger.update(4, seed=42)
    with pytest.raises(AgentgolfError, match=r"seeds must be distinct"):
        _submit(ledger, tmp_path, extra_seeds=[ledger.get(3), ledger.get(4)])
    ledger.update(4, seed=7, commit_sha="other")
    with pytest.raises(AgentgolfError, match=r"extra seed #4 ran commit other"):
        _submit(ledger, tmp_path, extra_seeds=[ledger.get(4)])
    ledger.update(4, commit_sha="c2" * 20)
    _files(ledger, 4, code=CODE + b"# changed\n")
    with pytest.raises(AgentgolfError, match=r"extra seed #4 trained a different train_gpt.py"):
        _submit(ledger, tmp_path, extra_seeds=[ledger.get(4)])
    (run_folder(ledger, 3) / "train.log").unlink()
    with pytest.raises(AgentgolfError, match=r"missing .*runs/3/train.log"):
        _submit(ledger, tmp_path, extra_seeds=[ledger.get(3)])
    (run_folder(ledger, 2) / "train_gpt.py").unlink()
    with pytest.raises(AgentgolfError, match=r"missing .*runs/2/train_gpt.py"):
        _submit(ledger, tmp_path)
    assert not out.exists()

    _files(ledger, 2)
    _submit(ledger, tmp_path, force=True)
    with pytest.raises(AgentgolfError, match=r"already exists"):
        _submit(ledger, tmp_path, force=True)


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (31.42, 2, 0.00051),  # records/…_LongContextSeq2048
        (9.06, 2, 0.006),  # records/…_TrainingOptSeq4096
        (2.5, 7, 0.02049611),  # t-table value
        (1.96, 1_000_000, 0.0249979),  # the normal limit
        (0.0, 4, 0.5),
    ],
)
def test_student_t_tail_known_values(t, df, p):
    assert student_t_sf(t, df) == pytest.approx(p, rel=2e-2 if p in (0.00051, 0.006) else 1e-5)


def test_student_t_tail_closed_forms():
    for t in (-3.0, -0.4, 0.7, 2.0, 12.0, 150.0):
        assert student_t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-10)  # Cauchy
        assert student_t_sf(t, 2) == pytest.approx(0.5 * (1 - t / math.sqrt(t * t + 2)), rel=1e-10)
        assert student_t_sf(t, 5) + student_t_sf(-t, 5) == pytest.approx(1.0, abs=1e-14)
    assert student_t_sf(math.inf, 3) == 0.0 and student_t_sf(-math.inf, 3) == 1.0


def test_regularized_beta():
    x = 0.3  # I_x(2, 3) = sum_{j=2..4} C(4, j) x^j (1-x)^(4-j) for integer a, b
    exact = sum(math.comb(4, j) * x**j * (1 - x) ** (4 - j) for j in range(2, 5))
    assert regularized_beta(x, 2, 3) == pytest.approx(exact, rel=1e-12)
    assert regularized_beta(0.9, 2, 3) == pytest.approx(1 - regularized_beta(0.1, 3, 2), rel=1e-12)
    assert regularized_beta(0.0, 2, 3) == 0.0 and regularized_beta(1.0, 2, 3) == 1.0
    with pytest.raises(ValueError):
        regularized_beta(1.5, 2, 3)


def test_one_sided_t_test():
    assert one_sided_t_test([1.2], 1.3) is None
    assert one_sided_t_test([1.2, 1.2], 1.3) is None  # no spread: no t statistic
    test = one_sided_t_test([1.20, 1.21, 1.19], 1.22)
    assert test.df == 2 and test.t_statistic == pytest.approx(0.02 / (0.01 / math.sqrt(3)))
    worse = one_sided_t_test([1.20, 1.21, 1.19], 1.19)  # the mean is above the target: no evidence
    assert worse.t_statistic < 0 and worse.p_value > 0.5
