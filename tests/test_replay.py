"""A replay's verdict: on CPU the same seed must give the same score; where runs are not bit-reproducible
(GPU, or a CPU run that the wall clock cut) the gap is weighed against the seed noise its run measured.

Real rows: a real run on the tiny workspace (a baseline and two calibration seeds, so a measured noise
floor), and a real replay. This machine has no GPU, so the GPU itself is stood in: the rows ran on CPU and
a copy of the original says in its manifest that it ran on GPU 0, which is all the verdict reads of it.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from agentgolf.agent.controller.loop import Loop, RunCaps, not_bit_exact, replay_experiment, replay_verdict
from agentgolf.agent.judge.acceptance import AcceptanceConfig, noise_floor
from agentgolf.agent.workspace import save_config
from tests.tiny import make_workspace


@pytest.fixture(scope="module")
def measured(tmp_path_factory, tiny_dataset):
    """A workspace whose run measured its seed noise: the baseline and two calibration seeds (then one
    proposal)."""
    root = tmp_path_factory.mktemp("replay")
    ws = make_workspace(root / "ws", tiny_dataset)
    ws.config.acceptance = AcceptanceConfig(noise_seeds=3, confirm=False, min_delta_bpb=0.0)
    save_config(ws.config_path, ws.config)
    console = Console(file=open(root / "out.txt", "w"))
    # Calibration seeds are measured once a proposal is to follow: two experiments, the baseline first.
    summary = Loop(ws, ws.ledger(), ws.config.budget, console=console).run(RunCaps(experiments=2))
    rows = ws.ledger().experiments(run_id=summary.run_id)
    assert [e.kind for e in rows][:3] == ["baseline", "calibration", "calibration"], [
        (e.kind, e.status, e.reason) for e in rows
    ]
    return ws, rows, console


@pytest.mark.slow
def test_a_cpu_replay_must_reproduce_exactly(measured):
    ws, rows, console = measured
    base = rows[0]
    replay = replay_experiment(ws, base.id, 1, console)
    assert replay.verdict == "reproduced exactly", replay.verdict  # real: the CPU trainer is deterministic
    cfg, noise = ws.config.acceptance, noise_floor(rows)
    assert noise.sigma > 0 and noise.runs == 3
    # The same CPU row a hair off: not within noise but a failure, whatever the noise.
    nudged = replay.copies[0].model_copy(update={"val_bpb": base.val_bpb + noise.sigma / 10})
    verdict = replay_verdict(base, nudged, rows, cfg)
    assert verdict.startswith("DOES NOT REPRODUCE") and "CPU run with the same seed" in verdict, verdict
    assert "0.1 sigma" in verdict


@pytest.mark.slow
def test_a_gpu_replay_is_weighed_against_the_seed_noise(measured):
    ws, rows, _ = measured
    cfg = ws.config.acceptance
    base = rows[0]
    noise = noise_floor(rows)
    on_gpu = base.model_copy(update={"manifest": {**base.manifest, "gpus": [0]}})  # the stand-in
    assert "not bit-reproducible" in not_bit_exact(on_gpu, base)

    def replayed(gap_sigma: float):
        return base.model_copy(
            update={"id": base.id + 100, "val_bpb": base.val_bpb + gap_sigma * noise.sigma}
        )

    near = replay_verdict(on_gpu, replayed(1.3), rows, cfg)
    assert near.startswith("reproduced within noise") and "within 1.3 sigma of the recorded score" in near
    assert f"sigma {noise.sigma:.4f} from 3 runs" in near and "1 GPU(s)" in near, near
    far = replay_verdict(on_gpu, replayed(-5.0), rows, cfg)
    assert far.startswith("DOES NOT REPRODUCE") and "5.0 sigma from the recorded score" in far, far
    assert replay_verdict(on_gpu, replayed(0.0), rows, cfg) == "reproduced exactly"
    # A known sigma wins over the run's estimate, as in acceptance.
    known = cfg.model_copy(update={"known_sigma_bpb": 10 * noise.sigma})
    assert "within 0.5 sigma" in replay_verdict(on_gpu, replayed(5.0), rows, known)
    # Without a measured noise floor there is nothing to weigh the gap against: no verdict is invented.
    alone = replay_verdict(on_gpu, replayed(1.0), rows[:1], cfg)
    assert alone.startswith("cannot tell") and "no seed noise" in alone, alone


@pytest.mark.slow
def test_a_cpu_run_cut_by_the_clock_is_weighed_against_the_noise(measured):
    """The demo's CPU preset trains until its wall clock: its step count follows the machine's speed."""
    ws, rows, _ = measured
    base = ws.ledger().get(rows[0].id)  # with its manifest (listings leave it out)
    cap = base.manifest["budget"]["train_seconds"]
    cut = base.model_copy(update={"train_seconds": cap + 1.0})
    again = base.model_copy(update={"val_bpb": base.val_bpb + noise_floor(rows).sigma})
    assert "wall clock ended its training" in not_bit_exact(cut, again)
    verdict = replay_verdict(cut, again, rows, ws.config.acceptance)
    assert verdict.startswith("reproduced within noise") and "within 1.0 sigma" in verdict, verdict
    assert not_bit_exact(base, again) == ""  # the tiny run ends far before its clock
