"""The offline proposer edits the default that is actually in effect, and never repeats itself."""

from __future__ import annotations

import time

from agentgolf.agent.proposers import playbook
from agentgolf.agent.proposers.proposal import (
    Edit,
    Proposal,
    ProposalError,
    apply_edits,
    check_compiles,
    diff_fingerprint,
)
from agentgolf.experiments.ledger import Experiment

SOURCE = """import os
PRESETS = {
    "cpu": {
        "MODEL_DIM": 128,
        "MATRIX_LR": 0.05,
    },
}
for _k, _v in PRESETS.get(os.environ.get("PRESET", ""), {}).items():
    os.environ.setdefault(_k, str(_v))


class Hyperparameters:
    model_dim = int(os.environ.get("MODEL_DIM", 512))
    matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))
    scalar_lr = float(os.environ.get("SCALAR_LR", 0.04))
"""
# Every other knob the library touches, with a default of the trainer's shape.
_KNOBS = {k: v for m in playbook.LIBRARY for k, v in {**m.scale, **m.set}.items()}
SOURCE += "".join(
    f'    k_{name.lower()} = float(os.environ.get("{name}", 1.0))\n' for name in _KNOBS if name not in SOURCE
)


def _apply(source: str, proposal: Proposal) -> str:
    for edit in proposal.edits:
        assert source.count(edit.search) == 1
        source = source.replace(edit.search, edit.replace)
    return source


def test_edits_hit_the_preset_line_when_a_preset_is_active():
    assert playbook.current_value(SOURCE, "MATRIX_LR", "cpu") == 0.05
    assert playbook.current_value(SOURCE, "MATRIX_LR", None) == 0.04
    assert playbook.current_value(SOURCE, "SCALAR_LR", "cpu") == 0.04
    new = _apply(
        SOURCE, Proposal(title="test", edits=playbook.hparam_edits(SOURCE, {"MATRIX_LR": 0.025}, "cpu"))
    )
    assert '"MATRIX_LR": 0.025,' in new and 'os.environ.get("MATRIX_LR", 0.04)' in new
    new = _apply(
        SOURCE, Proposal(title="test", edits=playbook.hparam_edits(SOURCE, {"MODEL_DIM": 160.4}, None))
    )
    assert 'os.environ.get("MODEL_DIM", 160)' in new and '"MODEL_DIM": 128,' in new
    compile(new, "train_gpt.py", "exec")


def _row(i: int, title: str, status: str = "ok") -> Experiment:
    return Experiment(
        id=i, kind="proposal", status=status, title=title, proposer="playbook", created_at=time.time()
    )


def test_never_repeats_and_skips_knobs_set_by_env():
    first = playbook.propose(SOURCE, [], {"PRESET": "cpu"})
    assert first is not None and first.title == playbook.LIBRARY[0].title
    second = playbook.propose(SOURCE, [_row(1, first.title, "crash")], {"PRESET": "cpu"})
    assert second is not None and second.title != first.title
    retried = playbook.propose(SOURCE, [_row(1, first.title, "infra_error")], {"PRESET": "cpu"})
    assert retried is not None and retried.title == first.title  # the machine failed, not the idea
    skipped = playbook.propose(SOURCE, [], {"PRESET": "cpu", "MATRIX_LR": "0.01"})
    assert skipped is not None and "MATRIX_LR" not in " ".join(e.search for e in skipped.edits)
    everything = [_row(i, m.title) for i, m in enumerate(playbook.LIBRARY)]
    assert playbook.propose(SOURCE, everything, {}) is None


def test_apply_edits_is_all_or_nothing(tmp_path):
    path = tmp_path / "train_gpt.py"
    path.write_text("a = 1\nb = 2\n")
    good = Edit(search="a = 1", replace="a = 3")
    try:
        apply_edits(tmp_path, [good, Edit(search="c = 4", replace="c = 5")])
    except ProposalError as exc:
        assert "edit 2: search text not found" in str(exc)
    else:
        raise AssertionError("a missing search text must be refused")
    assert path.read_text() == "a = 1\nb = 2\n"
    try:
        apply_edits(tmp_path, [Edit(path="../outside.py", search="a", replace="b")])
    except ProposalError as exc:
        assert "outside" in str(exc)
    else:
        raise AssertionError("paths outside the trainer folder must be refused")
    apply_edits(tmp_path, [good])
    assert path.read_text() == "a = 3\nb = 2\n"
    path.write_text("def broken(:\n")
    try:
        check_compiles([path])
    except ProposalError as exc:
        assert "no longer compiles" in str(exc)
    else:
        raise AssertionError("a syntax error must be caught before training")


def test_fingerprint_ignores_offsets_and_whitespace():
    a = "--- a/t.py\n+++ b/t.py\n@@ -1,3 +1,3 @@\n-lr = 0.04\n+lr = 0.02\n"
    b = "--- a/t.py\n+++ b/t.py\n@@ -10,3 +10,3 @@\n-lr  =  0.04\n+lr = 0.02  \n"
    c = "--- a/t.py\n+++ b/t.py\n@@ -1,3 +1,3 @@\n-lr = 0.04\n+lr = 0.03\n"
    assert diff_fingerprint(a) == diff_fingerprint(b) != diff_fingerprint(c)


def test_check_trainer_imports_in_the_sandbox(tmp_path):
    from agentgolf.agent.proposers.proposal import check_trainer
    from agentgolf.sandbox.budget import Budget

    path = tmp_path / "train_gpt.py"
    path.write_text("import os\nx = undefined_name\n")
    try:
        check_trainer(path, Budget(), tmp_path / "check")
    except ProposalError as exc:
        assert "NameError" in str(exc)
    else:
        raise AssertionError("a trainer that fails at import must be refused")
    path.write_text("def load_model(artifact_path, device='cpu'):\n    return None\n")
    check_trainer(path, Budget(), tmp_path / "check")
