"""`submit` says what it submits: it refuses what is not a challenge result (every reason in one line, each
check beside an honest control that passes it), `--force` writes the reasons into the record's README,
submission.json and stderr, and the row's trainer_env is baked into the submitted train_gpt.py, whose
settings, run bare, are those the scored run had.

Rows live in a real SQLite ledger with real run folders. No GPU exists here, so a challenge run's manifest
is crafted: the fields a GPU run on the challenge's data records (experiments/manifest.py, lab.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agentgolf.agent.results import submit_checks
from agentgolf.agent.results.bake import BEGIN, bake, settings
from agentgolf.agent.results.submit import run_folder, submission_seeds, write_submission
from agentgolf.agent.workspace import init_workspace
from agentgolf.challenge import RECORD_SEEDS
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Ledger, Run
from tests import test_submit as submit_test
from tests.test_cli import agentgolf, one_line_error

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "baseline" / "train_gpt.py"
WHO = dict(author="Ada", github_id="ada", name="An idea", blurb="What it does.")
ENV = {"PRESET": "cpu", "MATRIX_LR": "0.02"}
# What an 8-GPU run at the challenge's budget on sp1024's data records (crafted: no GPU here).
GPU_RUN = submit_test.GPU_RUN | {"gpu_model": "NVIDIA H100 80GB HBM3", "env": ENV}
# What the demo's CPU run records: no GPU, its 60 s budget, a data check that names no export.
DEMO_RUN = {"gpus": [], "budget": {"train_seconds": 60.0}, "data_check": {"variant": None}, "env": ENV}


def _ledger(state: Path, manifest: dict, code: bytes = b"print('trainer')\n") -> Ledger:
    """#1 the baseline (kept), #2 its calibration seed, #3 a kept win, #4 and #5 its replays (seeds 2 and 3),
    #6 the win on the screen rung (200 s), #7 a dead end, #8 another calibration seed (3) of the baseline,
    #9 a calibration seed of the baseline on the screen rung: each with its run folder's trainer and log."""
    state.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(state / "ledger.db", create=True)
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="b" * 40))
    common = dict(run_id="r1", status="ok", val_loss=2.0, artifact_bytes=15_000_000, manifest=manifest)
    add = ledger.add_experiment
    base = add(kind="baseline", kept=True, commit_sha="b" * 40, val_bpb=1.30, seed=1, **common).id
    add(kind="calibration", replay_of=base, commit_sha="b" * 40, val_bpb=1.301, seed=2, **common)
    win = dict(parent_id=base, commit_sha="c" * 40, title="Win", **common)
    kept = add(kind="proposal", kept=True, val_bpb=1.20, seed=1, **win).id
    add(kind="replay", replay_of=kept, val_bpb=1.201, seed=2, **win)
    add(kind="replay", replay_of=kept, val_bpb=1.199, seed=3, **win)
    screen = {**manifest, "budget": {"train_seconds": 200.0}}
    add(kind="proposal", rung="screen", val_bpb=1.25, seed=1, **win | {"manifest": screen})
    add(kind="proposal", val_bpb=1.31, seed=1, **win | {"commit_sha": "d" * 40})
    add(kind="calibration", replay_of=base, commit_sha="b" * 40, val_bpb=1.299, seed=3, **common)
    screened = common | {"manifest": screen}
    add(
        kind="calibration",
        replay_of=base,
        commit_sha="b" * 40,
        rung="screen",
        val_bpb=1.4,
        seed=4,
        **screened,
    )
    for exp in ledger.experiments():
        folder = run_folder(ledger, exp.id)
        folder.mkdir(parents=True)
        (folder / "train_gpt.py").write_bytes(code)
        (folder / "train.log").write_text(f"log of #{exp.id}\n")
    return ledger


def _submit(ledger: Ledger, exp_id: int, seeds: list[int], out: Path, **kw) -> Path:
    return write_submission(ledger, exp_id, out, extra_seeds=[ledger.get(i) for i in seeds], **WHO | kw)


def _reasons(ledger: Ledger, exp_id: int, seeds: list[int]) -> list[str]:
    exp = ledger.get(exp_id)
    return submit_checks.reasons(exp, [exp, *(ledger.get(i) for i in seeds)], ledger.find)


def _set(**fields) -> Callable[[dict], dict]:
    return lambda m: {**m, **fields}


def test_the_honest_submission_passes_every_check(tmp_path):
    """The control of every refusal below: a kept GPU row at 600 s on sp1024, with two more seeds."""
    ledger = _ledger(tmp_path / "state", GPU_RUN)
    assert RECORD_SEEDS == 3 and _reasons(ledger, 3, [4, 5]) == []
    assert _reasons(ledger, 1, [2, 8]) == []  # calibration seeds are seeds of the baseline they measure
    seeds = submission_seeds(ledger, 1, [], with_confirmations=True)  # on its rung: not #9
    assert [e.id for e in seeds] == [2, 8]
    assert [e.id for e in submission_seeds(ledger, 3, [], with_confirmations=True)] == [4, 5]
    _submit(ledger, 1, [2, 8], tmp_path / "baseline")
    folder = _submit(ledger, 3, [4, 5], tmp_path / "records")
    info = json.loads((folder / "submission.json").read_text())
    assert "warnings" not in info and "## Warnings" not in (folder / "README.md").read_text()
    on_slurm = _ledger(tmp_path / "slurm", GPU_RUN | {"gpus": [], "slurm_gpus": 8})  # SLURM places the GPUs
    assert _reasons(on_slurm, 3, [4, 5]) == []


SCREEN_BUDGET = "#6 trained 200 s, where the challenge trains 600 s"  # a screen row also trained less


CASES = [  # what is submitted, how its rows' manifests differ from a challenge run's, the reason said
    ("cpu", 3, [4, 5], _set(gpus=[]), "#3, #4, #5 ran on the CPU (no GPU in the manifest)"),
    ("one GPU", 3, [4, 5], _set(gpus=[0]), "#3, #4, #5 ran on 1 GPU, where the challenge trains on 8xH100"),
    (
        "another GPU",
        3,
        [4, 5],
        _set(gpu_model="NVIDIA A100-SXM4-40GB"),
        "#3, #4, #5 ran on NVIDIA A100-SXM4-40GB, where",
    ),
    ("demo data", 3, [4, 5], _set(data_check={"variant": None}), "not one of the challenge's exports"),
    ("no data check", 3, [4, 5], _set(data_check=None), "#3, #4, #5 trained on data that is not one"),
    (
        "data check let fail",
        3,
        [4, 5],
        _set(data_check={"variant": "sp1024", "allowed": True}),
        "ran with its data check failing (let through by --allow-data-warnings)",
    ),
    (
        "budget",
        3,
        [4, 5],
        _set(budget={"train_seconds": 300.0}),
        "#3, #4, #5 trained 300 s, where the challenge trains 600 s",
    ),
    (
        "too few seeds",
        3,
        [4],
        _set(),
        "2 seeds submitted, where the challenge's p < 0.01 is shown over 3",
    ),
    ("calibration row", 2, [1, 8], _set(), "#2 is a calibration row (a noise seed of #1)"),
    ("screen row", 6, [4, 5], _set(), "experiment #6 ran on the screen rung 'screen'"),
    ("never kept", 7, [], _set(), "experiment #7 was never kept"),
]


@pytest.mark.parametrize(
    ("case", "exp_id", "seeds", "change", "reason"), [pytest.param(*c, id=c[0]) for c in CASES]
)
def test_each_check_refuses_alone_and_force_writes_it_down(tmp_path, case, exp_id, seeds, change, reason):
    ledger = _ledger(tmp_path / "state", change(GPU_RUN))
    if case == "never kept":  # its own commit: seeds of it would be seeds of a dead end
        for seed, i in ((2, 4), (3, 5)):
            ledger.update(i, commit_sha="d" * 40, replay_of=exp_id, seed=seed)
        seeds = [4, 5]
    found = _reasons(ledger, exp_id, seeds)
    assert reason in found[0] and found[1:] == ([SCREEN_BUDGET] if case == "screen row" else []), found
    with pytest.raises(AgentgolfError) as refused:
        _submit(ledger, exp_id, seeds, tmp_path / "records")
    line = str(refused.value)
    assert line.startswith("submit refused: ") and reason in line and "\n" not in line
    assert line.endswith("(use --force to submit anyway, with these warnings in the record's README)")
    assert not (tmp_path / "records").exists()

    warned: list[str] = []
    folder = _submit(ledger, exp_id, seeds, tmp_path / "records", force=True, warn=warned.append)
    assert warned == found
    readme = (folder / "README.md").read_text()
    top = readme.split(WHO["blurb"])[0]  # the warnings come first, above the blurb
    assert "## Warnings" in top and all(f"- {r}" in top for r in found), readme
    assert json.loads((folder / "submission.json").read_text())["warnings"] == found


def test_a_screen_seed_and_every_reason_at_once(tmp_path):
    ledger = _ledger(tmp_path / "state", DEMO_RUN)
    assert "extra seed #6 ran on the screen rung" in " ".join(_reasons(ledger, 3, [4, 6]))
    ledger.update(6, rung="")
    assert not any("screen" in r for r in _reasons(ledger, 3, [4, 6]))
    # The demo's own row: every reason in the one line, none left for a second try to find.
    with pytest.raises(AgentgolfError) as refused:
        _submit(ledger, 2, [], tmp_path / "records")
    line = str(refused.value)
    for reason in (
        "#2 is a calibration row",
        "#2 ran on the CPU",
        "#2 trained on data that is not one of the challenge's exports (the demo's corpus and tokenizer",
        "#2 trained 60 s, where the challenge trains 600 s",
        "1 seed submitted",
    ):
        assert reason in line, line
    assert line.count("; ") == 4 and "\n" not in line


def test_what_force_cannot_mend_is_said_first(tmp_path):
    """A missing log or an artifact over the limit is refused before the checks --force could wave through."""
    ledger = _ledger(tmp_path / "state", DEMO_RUN)
    (run_folder(ledger, 4) / "train.log").unlink()
    with pytest.raises(AgentgolfError, match=r"missing .*runs/4/train.log"):
        _submit(ledger, 3, [4], tmp_path / "records")
    code = len(bake(b"print('trainer')\n", ENV)) - len(b"print('trainer')\n")
    with pytest.raises(
        AgentgolfError, match=r"with its settings baked in, train_gpt.py puts the artifact at"
    ):
        _submit(ledger, 3, [], tmp_path / "records", size_limit=15_000_000 + code - 1, force=True)
    folder = _submit(ledger, 3, [], tmp_path / "records", size_limit=15_000_000 + code, force=True)
    assert json.loads((folder / "submission.json").read_text())["bytes_total"] == 15_000_000 + code


def test_seeds_of_other_settings_are_refused(tmp_path):
    ledger = _ledger(tmp_path / "state", GPU_RUN)
    ledger.update(5, manifest={**GPU_RUN, "env": {**ENV, "MATRIX_LR": "0.03"}})
    with pytest.raises(AgentgolfError, match=r"extra seed #5 ran with other settings \(trainer_env\)"):
        _submit(ledger, 3, [4, 5], tmp_path / "records", force=True)


# --- the settings baked into the submitted trainer ----------------------------------------------------

HYPERPARAMETERS = """
import json, os, sys
def args(path, env):
    os.environ.clear()
    os.environ.update(env)
    source = open(path).read()
    head, main, _ = source.rpartition('\\nif __name__ == "__main__":\\n    main()')
    assert main, "the baseline ends by calling main()"
    scope = {"__name__": "__main__", "__file__": path}
    exec(compile(head, path, "exec"), scope)  # as `python train_gpt.py` does, up to training
    return {k: v for k, v in vars(scope["Hyperparameters"]).items() if not k.startswith("_")}
scored, baked = sys.argv[1], sys.argv[2]
print(json.dumps([args(scored, json.loads(sys.argv[3])), args(baked, {}), args(scored, {})], default=str))
"""


def test_the_submitted_trainer_run_bare_sees_the_scored_settings(tmp_path):
    """Our baseline trainer, scored with PRESET=cpu and MATRIX_LR=0.02: the submitted file, run with an empty
    environment, parses the hyperparameters the scored run parsed; the file as scored would not have."""
    env = {**ENV, "DATA_PATH": "/set/by/the/harness"}  # a harness variable in trainer_env: never baked
    ledger = _ledger(tmp_path / "state", GPU_RUN | {"env": env}, code=TRAINER.read_bytes())
    assert settings(ledger.get(3)) == ENV
    folder = _submit(ledger, 3, [4, 5], tmp_path / "records")
    submitted = folder / "train_gpt.py"
    assert BEGIN in submitted.read_text() and "/set/by/the/harness" not in submitted.read_text()
    proc = subprocess.run(
        [sys.executable, "-c", HYPERPARAMETERS, str(TRAINER), str(submitted), json.dumps(ENV)],
        capture_output=True,
        text=True,
        env={},  # clean: nothing of this process's environment
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    as_scored, as_submitted, unbaked = json.loads(proc.stdout)
    assert as_submitted == as_scored
    assert as_scored["preset"] == "cpu" and as_scored["matrix_lr"] == 0.02 and as_scored["num_layers"] == 4
    assert unbaked != as_scored and unbaked["num_layers"] == 9  # what the file alone would have trained
    readme = (folder / "README.md").read_text()
    assert "## Settings baked in" in readme and "MATRIX_LR=0.02\nPRESET=cpu\n" in readme
    info = json.loads((folder / "submission.json").read_text())
    assert info["agentgolf"]["baked_env"] == {"MATRIX_LR": "0.02", "PRESET": "cpu"}
    assert info["bytes_code"] == len(submitted.read_bytes()) > len(TRAINER.read_bytes())


TINY = '''#!/usr/bin/env python3
"""A trainer of another shape: a docstring, a __future__ import, settings read at import time."""
from __future__ import annotations

import os

LR = float(os.environ.get("LR", "0.1"))
'''


@pytest.mark.parametrize(
    "source",
    [
        TINY,
        TINY.replace("from __future__ import annotations\n", ""),
        "import os\nLR = os.environ.get('LR')\n",
    ],
)
def test_baking_goes_before_every_read_and_only_when_run(source, monkeypatch):
    baked = bake(source.encode(), {"LR": "0.5", "NOTE": 'it\'s "quoted"'}).decode()
    assert baked.startswith("#!/usr/bin/env python3\n" if source.startswith("#!") else "")
    assert baked.index(BEGIN) < baked.index("LR =")
    code = compile(baked, "train_gpt.py", "exec")  # a __future__ import after the block would not compile
    default = None if "get('LR')" in source else 0.1  # the file's own
    for name, env, lr in (
        ("__main__", {}, 0.5),
        ("__main__", {"LR": "0.7"}, 0.7),
        ("train_gpt", {}, default),
    ):
        monkeypatch.setattr(os, "environ", dict(env))
        scope = {"__name__": name}
        exec(code, scope)
        assert (None if scope["LR"] is None else float(scope["LR"])) == lr
        if name == "train_gpt":  # imported (the scorer): the environment is left alone
            assert os.environ == {}
        else:
            assert os.environ["NOTE"] == 'it\'s "quoted"'
    assert bake(source.encode(), {}) == source.encode()


# --- through the real command line ---------------------------------------------------------------------


def test_cli_refuses_in_one_line_and_force_warns(tmp_path):
    ws = init_workspace(tmp_path / "ws", progress=False)
    _ledger(ws.state, DEMO_RUN).close()  # the demo's rows, in the workspace's own ledger
    who = ["--author", "Ada", "--github-id", "ada", "--name", "Demo idea", "--blurb", "What it does."]
    who += ["--out", "records"]

    proc = agentgolf("submit", "best", *who, cwd=ws.root)  # `best`: #3, the last promotion
    one_line_error(proc, "submit refused: #3 ran on the CPU")
    for reason in ("#3 trained 60 s", "the demo's corpus and tokenizer", "1 seed submitted", "use --force"):
        assert reason in proc.stderr
    assert not (ws.root / "records").exists()

    forced = agentgolf("submit", "best", *who, "--force", cwd=ws.root, check=True)
    warnings = [line for line in forced.stderr.splitlines() if line.startswith("WARNING: --force: ")]
    assert len(warnings) == 4 and "ran on the CPU" in warnings[0], forced.stderr
    folder = Path(forced.stdout.split("submission folder:")[1].strip())
    readme = (folder / "README.md").read_text()
    assert readme.index("## Warnings") < readme.index("What it does.") and "- #3 trained 60 s" in readme
