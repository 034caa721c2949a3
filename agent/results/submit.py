"""Turn a ledger experiment into a records folder the Parameter Golf challenge accepts.

The folder (`YYYY-MM-DD_<slug>`) holds README.md, submission.json, the train log(s) and train_gpt.py. With a
baseline and two or more seeds, submission.json carries the one-sided one-sample t-test the challenge asks
for: are the seed scores below (baseline - 0.005 nats) at p < 0.01? The p-value is computed here with the
standard library (Student t tail via the regularized incomplete beta function), so no scipy is needed.

What is not a challenge result (a CPU run, the demo's data, another budget, too few seeds...: submit_checks.py)
is refused, every reason in one line; `force` writes it anyway, the reasons at the top of its README and in
submission.json's `warnings`. The row's trainer_env is baked into train_gpt.py (bake.py), so the file trains
what was scored, and its bytes are counted as submitted.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from agentgolf.agent.judge.deltas import Score, Scores
from agentgolf.agent.judge.stats import TTest, one_sided_t_test
from agentgolf.agent.results import bake, morning, submit_checks
from agentgolf.challenge import (
    RECORD_MARGIN_NATS,
    SIZE_LIMIT_BYTES,
    TRAINER_FILE,
    margin_bpb,
    tokens_per_byte,
)
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment, Ledger, LedgerError
from agentgolf.experiments.status import Kind, RowStatus
from agentgolf.experiments.worktree import slugify

DEFAULT_TRACK = "10min_16mb"
RUNS_DIR = "runs"
TRAIN_LOG = "train.log"
ROUND_DIGITS = 8
FOLDER_SLUG_MAX = 80  # the folder is named YYYY-MM-DD_<slug of the submission's name>
KEPT_CHAIN = (
    "The chain of kept ideas, from the unmodified baseline; each step was measured against its parent."
)
WARNED = "Submitted with `--force`: this is not a challenge result as it stands, because"
BAKED = (
    "The harness trained and scored it with these settings in its environment (the run's trainer_env). "
    f"The submitted `{TRAINER_FILE}` sets them as defaults when run as a script (`os.environ.setdefault`, "
    "an explicit variable still wins), so run bare it trains what was scored; that block adds {grew:,} "
    "bytes of code, counted in bytes_code and bytes_total."
)
CHAIN_SCORES = (
    "val_bpb: the mean of each step's runs in its run (it and its confirmations). Δ vs parent: the mean "
    "paired difference against controls of its parent, or else its mean minus its parent's mean."
)


class SubmissionError(AgentgolfError):
    """The experiment cannot become a records folder as it is; the message says why."""


# --- the folder -----------------------------------------------------------------------------------


def run_folder(ledger: Ledger, exp_id: int) -> Path:
    return ledger.path.parent / RUNS_DIR / str(exp_id)


def seed_of(e: Experiment) -> int | None:
    seed = e.seed if e.seed is not None else e.manifest.get("seed")
    return int(seed) if seed is not None else None


def submission_seeds(
    ledger: Ledger, exp_id: int, seed_ids: Sequence[int], with_confirmations: bool = False
) -> list[Experiment]:
    """The rows `seed_ids` and, with `with_confirmations`, every ok confirmation, replay or (of a baseline)
    calibration seed of `exp_id` on its rung: the same commit again with other seeds."""
    seeds = [ledger.get(i) for i in seed_ids]
    if with_confirmations:
        rung = ledger.get(exp_id).rung
        seeds += [
            e
            for e in ledger.experiments(full=True)
            if e.replay_of == exp_id
            and e.kind in (Kind.confirm, Kind.replay, Kind.calibration)
            and e.rung == rung
            and e.status == RowStatus.ok
            and e.id not in seed_ids
        ]
    return seeds


def _check_scored(e: Experiment, size_limit: int, what: str) -> None:
    if e.status != RowStatus.ok:
        raise SubmissionError(
            f"{what} #{e.id} has status '{e.status}'; only an ok experiment can be submitted"
        )
    if e.val_bpb is None:
        raise SubmissionError(f"{what} #{e.id} has no val_bpb")
    if e.artifact_bytes is None:
        raise SubmissionError(f"{what} #{e.id} has no recorded artifact size")
    if e.artifact_bytes > size_limit:
        raise SubmissionError(
            f"{what} #{e.id} artifact is {e.artifact_bytes:,} bytes, over the {size_limit:,}-byte limit"
        )


def _need(path: Path) -> Path:
    if not path.is_file():
        raise SubmissionError(f"missing {path}: the experiment's run folder must hold it")
    return path


def write_submission(
    ledger: Ledger,
    exp_id: int,
    out_dir: Path,
    *,
    author: str,
    github_id: str,
    name: str,
    blurb: str,
    baseline_bpb: float | None = None,
    extra_seeds: Sequence[Experiment] = (),
    size_limit: int = SIZE_LIMIT_BYTES,
    threshold_bpb: float | None = None,
    track: str = DEFAULT_TRACK,
    now: datetime | None = None,
    force: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Write out_dir/YYYY-MM-DD_<slug>/ for experiment exp_id (plus extra seeds); return the folder.

    Only a challenge result is submitted (submit_checks.py: a kept row or a re-run of one, at the full
    budget on GPUs, the challenge's data, enough seeds); `force` takes any other, writes the reasons into
    its README and submission.json and passes each to `warn` once the folder is written.

    threshold_bpb is the record margin used only when the run's tokens/byte is unknown (no
    `tokens_per_byte` in the run settings and no val_loss to derive it from); by default it is the
    challenge's margin at sp1024's tokens/byte.
    """
    exp = ledger.get(exp_id)
    _check_scored(exp, size_limit, "experiment")
    seeds = [exp, *extra_seeds]
    for other in extra_seeds:
        _check_scored(other, size_limit, "extra seed")
        if other.id == exp.id:
            raise SubmissionError(f"extra seed #{other.id} is the experiment itself")
        if other.commit_sha and exp.commit_sha and other.commit_sha != exp.commit_sha:
            raise SubmissionError(
                f"extra seed #{other.id} ran commit {other.commit_sha[:10]}, not {exp.commit_sha[:10]}"
            )
    seed_values = [seed_of(e) for e in seeds]
    for e, seed in zip(seeds, seed_values, strict=True):
        if seed is None:
            raise SubmissionError(f"experiment #{e.id} has no recorded seed")
    if len(set(seed_values)) != len(seed_values):
        raise SubmissionError(f"seeds must be distinct, got {seed_values}")
    baked = bake.settings(exp)
    for other in extra_seeds:
        if bake.settings(other) != baked:
            raise SubmissionError(
                f"extra seed #{other.id} ran with other settings (trainer_env) than #{exp.id}"
            )

    trainer = _need(run_folder(ledger, exp.id) / TRAINER_FILE)
    scored = trainer.read_bytes()
    logs = [_need(run_folder(ledger, e.id) / TRAIN_LOG) for e in seeds]
    for e in extra_seeds:
        other = run_folder(ledger, e.id) / TRAINER_FILE
        if other.is_file() and other.read_bytes() != scored:
            raise SubmissionError(f"extra seed #{e.id} trained a different {TRAINER_FILE} than #{exp.id}")
    code = bake.bake(scored, baked)  # the harness counted the scored file's bytes; the record counts these
    bytes_total = max(e.artifact_bytes for e in seeds) + len(code) - len(scored)
    if bytes_total > size_limit:
        raise SubmissionError(
            f"with its settings baked in, {TRAINER_FILE} puts the artifact at {bytes_total:,} bytes, over the "
            f"{size_limit:,}-byte limit"
        )

    slug = slugify(name, max_len=FOLDER_SLUG_MAX)
    if not slug:
        raise SubmissionError(f"name {name!r} gives an empty folder name; use letters or digits")
    now = now or datetime.now(timezone.utc)
    folder = Path(out_dir) / f"{now:%Y-%m-%d}_{slug}"
    if folder.exists():
        raise SubmissionError(f"{folder} already exists; remove it or choose another name")
    warnings = submit_checks.reasons(exp, seeds, ledger.find)  # after what --force cannot mend
    if warnings and not force:
        raise SubmissionError(submit_checks.refusal(warnings))

    margin, margin_source = _margin(ledger, exp, threshold_bpb)
    scores = [e.val_bpb for e in seeds]
    losses = [e.val_loss for e in seeds if e.val_loss is not None]
    test = one_sided_t_test(scores, baseline_bpb - margin) if baseline_bpb is not None else None
    log_names = [TRAIN_LOG] if len(seeds) == 1 else [f"train_seed{s}.log" for s in seed_values]

    info: dict = {
        "author": author,
        "github_id": github_id,
        "name": name,
        "blurb": blurb,
        "date": now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "val_loss": _round(statistics.fmean(losses)) if len(losses) == len(seeds) else None,
        "val_bpb": _round(statistics.fmean(scores)),
        "bytes_total": bytes_total,
        "bytes_code": len(code),
        "track": track,
        "seeds": seed_values,
        "seed_results": {
            str(seed): {
                "val_loss": e.val_loss,
                "val_bpb": e.val_bpb,
                "artifact_bytes": e.artifact_bytes,
                "train_time_s": e.train_seconds,
                "log": log,
                "agentgolf_experiment": e.id,
            }
            for e, seed, log in zip(seeds, seed_values, log_names, strict=True)
        },
        "val_bpb_std": _round(statistics.stdev(scores)) if len(scores) >= 2 else None,
    }
    if baseline_bpb is not None:
        info |= {
            "baseline_val_bpb": baseline_bpb,
            "margin_bpb": _round(margin),
            "margin_source": margin_source,
        }
        if test is not None:
            info |= {"t_statistic": round(test.t_statistic, 4), "p_value": float(f"{test.p_value:.3g}")}
    if exp.manifest.get("gpu_model"):
        info["hardware"] = exp.manifest["gpu_model"]
    for key in ("eval", "verification"):  # how the harness scored it, and how it checked that score
        if exp.manifest.get(key):
            info[key] = exp.manifest[key]
    info["agentgolf"] = {"experiment": exp.id, "run": exp.run_id, "commit": exp.commit_sha}
    if baked:
        info["agentgolf"]["baked_env"] = baked
    if warnings:
        info["warnings"] = warnings

    folder.mkdir(parents=True)
    (folder / TRAINER_FILE).write_bytes(code)
    for log, log_name in zip(logs, log_names, strict=True):
        shutil.copyfile(log, folder / log_name)
    (folder / "submission.json").write_text(json.dumps(info, indent=2) + "\n")
    chain = ledger.lineage(exp)
    scores = Scores(ledger.experiments(run_id=chain[-1].run_id)) if chain[-1].run_id else Scores(chain)
    steps = [(e, scores.score(e)) for e in chain]
    readme = _readme(info, exp, steps, seeds, log_names, test, baked, len(code) - len(scored))
    if exp.run_id is not None and (line := morning.said(ledger.get_run(exp.run_id).settings)):
        readme += f"\n## The chain, measured again\n\n{line} (fresh seeds, beside the baseline).\n"
    (folder / "README.md").write_text(readme)
    for reason in warnings if warn is not None else ():
        warn(reason)
    return folder


def _margin(ledger: Ledger, exp: Experiment, threshold_bpb: float | None) -> tuple[float, str]:
    """The record margin in bpb and where the tokens/byte behind it came from."""
    settings = {}
    if exp.run_id is not None:
        try:
            settings = ledger.get_run(exp.run_id).settings
        except LedgerError:
            settings = {}
    if settings.get("tokens_per_byte"):
        return margin_bpb(float(settings["tokens_per_byte"])), "run tokens_per_byte"
    if ratio := tokens_per_byte(exp.val_loss, exp.val_bpb):
        return margin_bpb(ratio), "tokens/byte from val_loss and val_bpb"
    if threshold_bpb is not None:
        return threshold_bpb, "threshold_bpb (tokens/byte unknown)"
    return margin_bpb(None), "sp1024 tokens/byte (the run's is unknown)"


def _round(x: float) -> float:
    return round(x, ROUND_DIGITS)


def _readme(
    info: dict,
    exp: Experiment,
    chain: list[tuple[Experiment, Score]],
    seeds: list[Experiment],
    log_names: list[str],
    test: TTest | None,
    baked: dict[str, str],
    grew: int,
) -> str:
    n = len(seeds)
    spread = f" ± {info['val_bpb_std']:.4f} (std)" if info["val_bpb_std"] is not None else ""
    lines = [f"# {info['name']}", ""]
    if info.get("warnings"):
        lines += ["## Warnings", "", f"{WARNED}", ""]
        lines += [f"- {reason}" for reason in info["warnings"]] + [""]
    lines += [info["blurb"], ""] if info["blurb"] else []
    lines += [
        f"**val_bpb {info['val_bpb']:.4f}**{spread}, mean of {n} seed{'s' * (n > 1)}; "
        f"artifact {info['bytes_total']:,} bytes (code {info['bytes_code']:,}); track `{info['track']}`.",
        "",
        "## What changed",
        "",
        _lineage_line([e for e, _ in chain]),
        "",
        "| step | change | val_bpb | Δ vs parent | hypothesis |",
        "|---|---|---|---|---|",
    ]
    for i, (e, score) in enumerate(chain):
        delta = f"{score.delta:+.4f}" if score.delta is not None and i > 0 else ""
        bpb = f"{score.bpb:.4f}" if score.bpb is not None else ""
        lines.append(f"| {i} | {_cell(e.title)} | {bpb} | {delta} | {_cell(e.hypothesis)} |")
    lines += ["", CHAIN_SCORES]
    lines += [
        "",
        "## Results",
        "",
        "| seed | val_loss | val_bpb | artifact bytes | train s | log |",
        "|---|---|---|---|---|---|",
    ]
    for e, seed, log in zip(seeds, info["seeds"], log_names, strict=True):
        loss = f"{e.val_loss:.6f}" if e.val_loss is not None else ""
        train = f"{e.train_seconds:.1f}" if e.train_seconds is not None else ""
        lines.append(f"| {seed} | {loss} | {e.val_bpb:.6f} | {e.artifact_bytes:,} | {train} | `{log}` |")
    if "baseline_val_bpb" in info:
        lines += ["", "## Significance", ""]
        target = info["baseline_val_bpb"] - info["margin_bpb"]
        lines.append(
            f"Target: baseline {info['baseline_val_bpb']:.6f} - {RECORD_MARGIN_NATS} nats "
            f"({info['margin_bpb']:.5f} bpb, "
            f"{info['margin_source']}) = {target:.6f}."
        )
        if test is not None:
            lines.append(
                f"One-sided one-sample t-test over {n} seeds: t = {test.t_statistic:.2f}, df = {test.df}, "
                f"p = {test.p_value:.3g}."
            )
        else:
            lines.append("No t-test: it needs at least two seeds with different scores.")
    lines += [
        "",
        "## Provenance",
        "",
        f"Produced by agentgolf experiment #{exp.id} (run `{exp.run_id}`, commit `{exp.commit_sha[:12]}`), "
        f"score source `{exp.trust or 'harness'}`, sandbox isolation `{exp.isolation or 'unknown'}`.",
    ]
    if baked:
        lines += ["", "## Settings baked in", "", BAKED.format(grew=grew), "", "```"]
        lines += [f"{k}={v}" for k, v in baked.items()]
        lines.append("```")
    return "\n".join(lines) + "\n"


def _lineage_line(chain: list[Experiment]) -> str:
    """The line above the table: a chain of kept ideas only when every step was kept at the full budget."""
    unkept = [e for e in chain if not e.kept or e.rung]
    if not unkept:
        return KEPT_CHAIN
    ids = ", ".join(f"#{e.id}" for e in unkept)
    return (
        "The lineage of this change, from the unmodified baseline. It is not a chain of kept ideas: "
        f"{ids} {'was' if len(unkept) == 1 else 'were'} never promoted at the full budget "
        "(submitted with --force)."
    )


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
