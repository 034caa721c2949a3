"""The leaderboard's techniques as patches (agent/proposers/techniques.py): the catalogue is consistent, every
patch applies to the baseline trainer and passes the import check, and every patched trainer trains and scores
`ok` on a tiny CPU run through the real sandbox, with a check that fails unless the patch did its own thing."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from agentgolf.agent.proposers.proposal import CATEGORIES, ProposalError, check_compiles, check_trainer
from agentgolf.agent.proposers.techniques import (
    PATCH_FOLDER,
    apply_technique,
    catalogue,
    catalogue_text,
    patch_text,
    to_proposal,
)
from agentgolf.challenge import TRAINER_FILE
from agentgolf.sandbox.result import SandboxResult, Status
from agentgolf.sandbox.runner import run_sandboxed
from tests.sandbox_support import TEST_BUDGET, TOY, data_spec
from tests.tiny import TINY_ENV

BASELINE = Path(__file__).resolve().parents[1] / "baseline" / TRAINER_FILE
PATCHES = Path(__file__).resolve().parents[1] / "agent" / "proposers" / PATCH_FOLDER
BY_NAME = {t.name: t for t in catalogue()}
# Room for a busy machine: the tiny run itself trains in about 3 s.
BUDGET = TEST_BUDGET.model_copy(update={"train_seconds": 60, "train_grace_seconds": 30, "score_seconds": 60})
RUN_ENV = {**TINY_ENV, "ITERATIONS": "4"}
KNOB_RE = re.compile(r'^\+    [a-z0-9_]+ = (int|float|str)\(os\.environ\.get\("[A-Z0-9_]+", [^()]+\)\)$')
KNOB_DEFAULT_RE = re.compile(
    r'^(    [a-z0-9_]+ = (?:int|float|str)\(os\.environ\.get\("([A-Z0-9_]+)", )(.*)(?=\)\)$)', re.M
)
INT6_MAX = 31
WIDE = {"MODEL_DIM": "192"}  # the MLP's matrices pass INT8_MIN_NUMEL, so the export quantizes them


def presets_block(text: str) -> str:
    return text[text.index("PRESETS = {") : text.index("def apply_preset")]


def patched(tree: Path, name: str) -> Path:
    tree.mkdir(parents=True, exist_ok=True)
    trainer = tree / TRAINER_FILE
    trainer.write_text(BASELINE.read_text())
    apply_technique(tree, BY_NAME[name])
    return trainer


def import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"agentgolf_technique_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------
# The catalogue


def test_catalogue_is_consistent():
    techniques = catalogue()
    names = [t.name for t in techniques]
    assert len(names) == len(set(names)) and len(names) >= 9
    assert sorted(p.stem for p in PATCHES.glob("*.patch")) == sorted(names)  # no patch without an entry
    for t in techniques:
        assert re.fullmatch(r"[a-z0-9_]+", t.name) and t.category in CATEGORIES
        assert t.title and t.hypothesis and t.reported_effect.strip()
        assert t.reported_bpb is None or -0.1 < t.reported_bpb < 0.1
        assert patch_text(t).startswith(f"--- a/{TRAINER_FILE}\n+++ b/{TRAINER_FILE}\n")


def test_to_proposal_and_the_prompt_lines_carry_the_reported_effect():
    t = BY_NAME["ema"]
    proposal = to_proposal(t)
    assert proposal.title == t.title and proposal.category == t.category
    assert t.reported_effect in proposal.hypothesis and proposal.expected_effect == t.reported_effect
    lines = catalogue_text().splitlines()
    assert len(lines) == len(BY_NAME) and any(t.reported_effect in line for line in lines)


def test_patches_apply_with_git_and_add_only_regex_editable_knobs(tmp_path):
    """git apply --check in a fresh repository; no patch touches PRESETS; every new knob is one
    `name = type(os.environ.get("ENV", default))` line, as the search edits them."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / TRAINER_FILE).write_text(BASELINE.read_text())
    for t in catalogue():
        text = patch_text(t)
        done = subprocess.run(
            ["git", "apply", "--check", "-"], cwd=tmp_path, input=text, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{t.name}: {done.stderr}"
        for line in text.splitlines():
            if "os.environ.get(" in line and line.startswith("+"):
                assert KNOB_RE.match(line), f"{t.name}: knob not in the trainer's style: {line}"
        trainer = patched(tmp_path / t.name, t.name)
        check_compiles([trainer])
        patched_text = trainer.read_text()
        assert presets_block(patched_text) == presets_block(BASELINE.read_text()), t.name


def test_a_patch_that_does_not_apply_raises_and_leaves_the_file(tmp_path):
    (tmp_path / TRAINER_FILE).write_text(TOY.read_text())
    with pytest.raises(ProposalError, match="technique muon_weight_decay conflicts") as caught:
        apply_technique(tmp_path, BY_NAME["muon_weight_decay"])
    assert "\n" not in str(caught.value)
    assert (tmp_path / TRAINER_FILE).read_text() == TOY.read_text()
    with pytest.raises(ProposalError, match="missing"):
        apply_technique(tmp_path / "empty", BY_NAME["ema"])


def test_patches_apply_to_a_parent_whose_knob_defaults_were_all_tuned(tmp_path):
    """The search edits knob defaults, some of them in a patch's context lines: every patch still applies,
    with the same result as on the baseline, tuned defaults kept."""

    knobs = {m.group(2) for m in KNOB_DEFAULT_RE.finditer(BASELINE.read_text())}

    def tune(text: str) -> str:  # the baseline's knobs only, not the ones a patch adds
        def new_default(m: re.Match) -> str:
            if m.group(2) not in knobs:
                return m.group(0)
            return m.group(1) + ('"tuned"' if m.group(3).startswith('"') else "7")

        return KNOB_DEFAULT_RE.sub(new_default, text)

    assert tune(BASELINE.read_text()).count('"tuned"') > 3
    for t in catalogue():
        trainer = tmp_path / t.name / TRAINER_FILE
        trainer.parent.mkdir()
        trainer.write_text(tune(BASELINE.read_text()))
        apply_technique(trainer.parent, t)
        plain = patched(tmp_path / f"{t.name}_plain", t.name).read_text()
        assert trainer.read_text() == tune(plain) != plain, t.name


def test_every_pair_of_techniques_stacks_in_either_order(tmp_path):
    """The search combines kept changes: a technique applies on a parent that already has another one."""
    trainer = tmp_path / TRAINER_FILE
    for first in catalogue():
        for second in catalogue():
            if second.name != first.name:
                trainer.write_text(BASELINE.read_text())
                apply_technique(tmp_path, first)
                apply_technique(tmp_path, second)
                check_compiles([trainer])
                assert not re.search(
                    r"^(<{7}|={7}|>{7}|\|{7})", trainer.read_text(), re.M
                )  # no conflict left


def all_techniques(tree: Path) -> Path:
    """Every technique applied in catalogue order, each on top of the ones before."""
    tree.mkdir(parents=True, exist_ok=True)
    (tree / TRAINER_FILE).write_text(BASELINE.read_text())
    for t in catalogue():
        apply_technique(tree, t)
    return tree / TRAINER_FILE


def test_a_patch_applies_inside_a_git_worktree_subfolder(tmp_path):
    """Proposers apply in a worktree: git must not read the patch's paths against the repository's root."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    tree = tmp_path / "sub"
    trainer = patched(tree, "leaky_relu2")
    assert "F.leaky_relu(" in trainer.read_text() and not (tmp_path / TRAINER_FILE).exists()


# --------------------------------------------------------------------------------------------------
# Each patch, trained and scored in the sandbox


def artifact_of(module, result: SandboxResult) -> dict:
    return module.read_artifact(str(result.run_dir / "train" / "final_model.int8.ptz"))


def log_of(result: SandboxResult) -> str:
    return (result.run_dir / "train.log").read_text()


def check_sliding(module, result: SandboxResult) -> None:
    assert result.eval_mode == {"mode": "sliding", "seq_len": 64, "stride": 16, "context": 64}


def check_muon_wd(module, result: SandboxResult) -> None:
    assert "muon_weight_decay:0.04" in log_of(result)


def check_ema(module, result: SandboxResult) -> None:
    assert "ema: exporting the moving average of the weights (decay 0.997, 4 updates)" in log_of(result)


def check_int6(module, result: SandboxResult) -> None:
    assert "qat:on step:0" in log_of(result)
    codes = {k: q for k, q in artifact_of(module, result)["quantized"].items() if k.startswith("blocks.")}
    assert codes and all(int(q.abs().max()) <= INT6_MAX for q in codes.values())
    assert any(int(q.abs().max()) == INT6_MAX for q in codes.values())


def check_trained_from_zero(*names: str) -> Callable:
    """New tensors that start at zero are in the artifact and moved: the patch trained and exported them."""

    def check(module, result: SandboxResult) -> None:
        state = module.dequantize_state_dict(artifact_of(module, result))
        for name in names:
            assert name in state and float(state[name].abs().max()) > 0, name

    return check


def check_config(**expected) -> Callable:
    def check(module, result: SandboxResult) -> None:
        config = artifact_of(module, result)["config"]
        assert {k: config.get(k) for k in expected} == expected

    return check


def check_partial_rope(module, result: SandboxResult) -> None:
    check_config(rope_dims=16)(module, result)
    model = module.load_model(str(result.run_dir / "train" / "final_model.int8.ptz"))
    assert model.blocks[0].attn.rotary.inv_freq.numel() == 8  # 16 of the head's 32 dimensions rotate


def check_recurrence(module, result: SandboxResult) -> None:
    assert "recurrence:on step:2 layers:2" in log_of(result)
    check_config(recur_layers=2)(module, result)


def check_long_context(module, result: SandboxResult) -> None:
    check_config(seq_len=128)(module, result)
    assert result.eval_mode["seq_len"] == 128


def check_fp16_embed(module, result: SandboxResult) -> None:
    obj = artifact_of(module, result)
    emb = obj["passthrough"]["tok_emb.weight"]
    assert emb.dtype == torch.float16 and emb.numel() >= module.INT8_MIN_NUMEL
    assert "tok_emb.weight" not in obj["quantized"]


# name -> (env on top of RUN_ENV, check on the patched trainer's module and the sandbox result)
RUNS: dict[str, tuple[dict[str, str], Callable]] = {
    "sliding_eval": ({"EVAL_STRIDE": "16"}, check_sliding),
    "muon_weight_decay": ({}, check_muon_wd),
    "ema": ({}, check_ema),
    "int6_qat": (WIDE, check_int6),
    "smear_gate": ({}, check_trained_from_zero("smear")),
    "bigram_hash": ({}, check_trained_from_zero("bigram_proj.weight", "bigram.weight")),
    "partial_rope": ({}, check_partial_rope),
    "value_embed": ({}, check_trained_from_zero("blocks.0.attn.ve_scale", "value_embed.weight")),
    "layer_recurrence": ({"RECUR_START_FRAC": "0.5"}, check_recurrence),
    "long_context": ({}, check_long_context),
    "leaky_relu2": ({}, check_config(mlp_leaky_slope=0.5)),
    "fp16_embed": ({"MODEL_DIM": "264"}, check_fp16_embed),  # 256 x 264 passes INT8_MIN_NUMEL
}


def test_every_technique_has_a_run():
    assert sorted(RUNS) == sorted(BY_NAME)


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_patched_trainer_imports_trains_and_scores_ok(name: str, data, tmp_path):
    env, check = RUNS[name]
    trainer = patched(tmp_path / "tree", name)
    check_trainer(trainer, BUDGET, tmp_path / "import_check")
    result = run_sandboxed(trainer, tmp_path / "run", data, BUDGET, env={**RUN_ENV, **env})
    assert result.status is Status.ok, result.reason
    assert math.isfinite(result.val_bpb) and result.code_bytes == len(trainer.read_bytes())
    check(import_file(trainer, name), result)


@pytest.mark.slow
def test_all_techniques_stacked_train_and_score_ok(data, tmp_path):
    trainer = all_techniques(tmp_path / "tree")
    env = {**RUN_ENV, "EVAL_STRIDE": "16", "RECUR_START_FRAC": "0.5"}
    result = run_sandboxed(trainer, tmp_path / "run", data, BUDGET, env=env)
    assert result.status is Status.ok, result.reason
    log = log_of(result)
    for marker in ("muon_weight_decay:0.04", "qat:on step:0", "recurrence:on step:2", "ema: exporting"):
        assert marker in log
    assert result.eval_mode["mode"] == "sliding" and result.eval_mode["seq_len"] == 128
    check_trained_from_zero("smear", "bigram_proj.weight", "blocks.0.attn.ve_scale")(
        import_file(trainer, "all"), result
    )
