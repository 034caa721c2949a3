"""What `submit` checks before a records folder claims a challenge result: each check, one reason line.

A records folder says that its trainer trained in the challenge's 600 s on GPUs, on the challenge's data,
and beat the record at p < 0.01 over its seeds. A row that cannot say so is refused, every reason at once:
a row outside the best chain (kept.py), a calibration row or a screen-rung seed, a run on the CPU or on fewer GPUs than 8xH100, data
that is not one of the challenge's exports (the demo's corpus and tokenizer, or a dataset built here) or
whose data check was let fail, a training budget other than 600 s, fewer seeds than the significance rule
is shown over. `--force` writes the folder anyway, with the same reasons as its warnings.

What each check reads is the row's manifest (experiments/manifest.py): `gpus` (or the SLURM job's
`slurm_gpus`), `data_check` (the variant the run's data check recognised, and whether a failure was let
through), `budget` (the budget in force for it, its rung's included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agentgolf.agent.results import kept
from agentgolf.challenge import CHALLENGE_GPU_MODEL, CHALLENGE_GPUS, RECORD_SEEDS, TRAIN_SECONDS
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind

FORCE_HINT = "use --force to submit anyway, with these warnings in the record's README"


def reasons(
    exp: Experiment, seeds: Sequence[Experiment], find: Callable[[int], Experiment | None]
) -> list[str]:
    """Every reason the submission of `exp` with `seeds` (exp first) is not a challenge result; [] if none.
    `find` looks a row up by id."""
    found = [
        kept.refusal(exp, find),
        calibration(exp),
        screen_seeds(seeds[1:]),
        cpu(seeds),
        hardware(seeds),
        data(seeds),
        data_check_failed(seeds),
        budget(seeds),
        seed_count(seeds),
    ]
    return [r for r in found if r]


def refusal(why: Sequence[str]) -> str:
    """The one line a refusal prints."""
    return f"submit refused: {'; '.join(why)} ({FORCE_HINT})"


def calibration(exp: Experiment) -> str:
    if exp.kind != Kind.calibration:
        return ""
    of = f" of #{exp.replay_of}" if exp.replay_of is not None else ""
    return f"#{exp.id} is a calibration row (a noise seed{of}), not a result: submit the row it measures"


def screen_seeds(extra: Sequence[Experiment]) -> str:
    """Extra seeds on a screen rung (the submitted row's own rung is kept.refusal's)."""
    screened = [e for e in extra if e.rung]
    if not screened:
        return ""
    return f"extra seed {_ids(screened)} ran on the screen rung, a shorter training than the full budget"


def cpu(seeds: Sequence[Experiment]) -> str:
    on_cpu = [e for e in seeds if not (e.manifest.get("gpus") or e.manifest.get("slurm_gpus"))]
    if not on_cpu:
        return ""
    return f"{_ids(on_cpu)} ran on the CPU (no GPU in the manifest), not on the challenge's GPUs"


def hardware(seeds: Sequence[Experiment]) -> str:
    """GPU runs on fewer GPUs than the challenge's, or on another model (a proxy, not a record's timing)."""
    found: dict[str, list[Experiment]] = {}
    for e in seeds:
        count = len(e.manifest.get("gpus") or []) or int(e.manifest.get("slurm_gpus") or 0)
        model = str(e.manifest.get("gpu_model") or "")
        if count and count < CHALLENGE_GPUS:
            found.setdefault(f"{count} GPU{'s' * (count != 1)}", []).append(e)
        elif count and model and model != "unavailable" and CHALLENGE_GPU_MODEL not in model:
            found.setdefault(model, []).append(e)
    if not found:
        return ""
    parts = [f"{_ids(rows)} ran on {what}" for what, rows in found.items()]
    return f"{', '.join(parts)}, where the challenge trains on {CHALLENGE_GPUS}x{CHALLENGE_GPU_MODEL}"


def data(seeds: Sequence[Experiment]) -> str:
    """The challenge's data: a known export, as the run's data check named it from its dataset."""
    unknown = [e for e in seeds if not _data_check(e).get("variant")]
    if not unknown:
        return ""
    return (
        f"{_ids(unknown)} trained on data that is not one of the challenge's exports (the demo's corpus and "
        "tokenizer, or a dataset built here: `agentgolf data fetch` gets them)"
    )


def data_check_failed(seeds: Sequence[Experiment]) -> str:
    """A failed data check let through: a validation leak, a tokenizer other than the shards' own."""
    let_through = [e for e in seeds if _data_check(e).get("allowed")]
    if not let_through:
        return ""
    return f"{_ids(let_through)} ran with its data check failing (let through by --allow-data-warnings)"


def budget(seeds: Sequence[Experiment]) -> str:
    """The training budget in force for each seed (a rung's included) against the challenge's."""
    by_seconds: dict[float | None, list[Experiment]] = {}
    for e in seeds:
        seconds = (e.manifest.get("budget") or {}).get("train_seconds")
        if seconds != TRAIN_SECONDS:
            by_seconds.setdefault(seconds, []).append(e)
    if not by_seconds:
        return ""
    parts = [
        f"{_ids(rows)} trained {seconds:g} s" if seconds is not None else f"{_ids(rows)} records no budget"
        for seconds, rows in by_seconds.items()
    ]
    return f"{' and '.join(parts)}, where the challenge trains {TRAIN_SECONDS:g} s"


def seed_count(seeds: Sequence[Experiment]) -> str:
    n = len(seeds)
    if n >= RECORD_SEEDS:
        return ""
    return (
        f"{n} seed{'s' * (n != 1)} submitted, where the challenge's p < 0.01 is shown over {RECORD_SEEDS} "
        "(add --seeds ID ... or --with-confirmations)"
    )


def _data_check(e: Experiment) -> dict:
    return e.manifest.get("data_check") or {}


def _ids(rows: Sequence[Experiment]) -> str:
    return ", ".join(f"#{e.id}" for e in rows)
