"""The facts of one run, for a proposer: what its training did, and why its result came out as it did.

Read from the run folder the sandbox wrote (`result.json` and the trainer's own `train.log`, never the
scoring log) and from the ledger row's manifest. Two views: `parent_block`, a fixed-size block of the
parent's facts (steps and ms/step, training time against the budget, the train-loss curve, val_bpb around
the roundtrip, artifact bytes against the cap, peak memory, hardware, the settings in force), and
`outcome`, one short phrase per digest line (stopped at the wall-clock cap at step N of M, diverged at
step K, over size by B bytes, the acceptance rule's reason).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from pydantic import BaseModel, Field

from agentgolf.agent.proposers.briefing.digest import verdict
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.runner import HARNESS_ENV_KEYS

RESULT_FILE, TRAIN_LOG = "result.json", "train.log"  # the sandbox's names (sandbox/runner, run_setup)
LOG_READ_BYTES = 4 * 2**20  # the whole log of the parent (the sandbox caps logs at 4 MiB by default)
ENDS_READ_BYTES = 16 * 1024  # of each end of a log: its first steps, and its last steps and size lines
LINE_CHARS = 700  # the settings lines are the longest
SETTINGS_CHARS = 500
FLOAT = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
STEP_LINE = re.compile(rf"^step:(\d+)/(\d+) train_loss:({FLOAT})(?:.*?step_avg:({FLOAT})ms)?", re.M)
VAL_LINE = re.compile(rf"^step:(\d+)/\d+ val_loss:{FLOAT} val_bpb:({FLOAT})", re.M)
TRAIN_TIME = re.compile(rf"^step:\d+/\d+ .*?train_time:({FLOAT})ms", re.M)
WALLCLOCK = re.compile(r"^stopping_early: (wallclock|cpu_clock)_cap .*?step:\s*(\d+)/(\d+)", re.M)
ROUNDTRIP = re.compile(rf"^final_\S*roundtrip\S* val_loss:{FLOAT} val_bpb:({FLOAT})", re.M)
PEAK = re.compile(r"^peak memory allocated: (\d+) MiB reserved: (\d+) MiB", re.M)
SETTING = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):([^\s:/]+)$")
NOT_SETTINGS = ("step", "warmup_step", "stopping_early", "peak", "final")


class TrainLog(BaseModel):
    """What a trainer's log says about its training (the baseline trainer's and the official formats)."""

    step: int | None = None  # the last step it logged
    planned: int | None = None  # the M of "step N/M"
    step_ms: float | None = None  # the last step_avg
    train_ms: float | None = None
    wallclock_stop: bool = False  # stopped at its clock's cap
    cpu_clock: bool = False  # that clock was CPU time (a CPU run: TRAIN_CLOCK=cpu)
    losses: list[tuple[int, float]] = Field(default_factory=list)  # (step, train_loss)
    val_bpb: list[tuple[int, float]] = Field(default_factory=list)  # (step, val_bpb) before the roundtrip
    roundtrip_bpb: float | None = None  # the trainer's own score after the roundtrip
    peak_mib: tuple[int, int] | None = None  # allocated, reserved
    settings: dict[str, str] = Field(default_factory=dict)  # the `name:value` lines it printed first

    def diverged_at(self) -> int | None:
        """The first step whose loss is not finite, or that climbs back above the first logged loss."""
        if not self.losses:
            return None
        first, lowest = self.losses[0][1], math.inf
        margin = 0.02 * abs(first)  # noise is not divergence
        for step, loss in self.losses:
            if not math.isfinite(loss) or (lowest < first - margin and loss > first + margin):
                return step
            lowest = min(lowest, loss)
        return None


def parse_train_log(text: str) -> TrainLog:
    log = TrainLog()
    for m in STEP_LINE.finditer(text):
        log.losses.append((int(m[1]), float(m[3])))
        log.step, log.planned = int(m[1]), int(m[2])
        log.step_ms = float(m[4]) if m[4] else log.step_ms
    log.val_bpb = [(int(m[1]), float(m[2])) for m in VAL_LINE.finditer(text)]
    if times := TRAIN_TIME.findall(text):
        log.train_ms = float(times[-1])
    if stop := WALLCLOCK.findall(text):
        log.wallclock_stop, log.step, log.planned = True, int(stop[-1][1]), int(stop[-1][2])
        log.cpu_clock = stop[-1][0] == "cpu_clock"
    if found := ROUNDTRIP.findall(text):
        log.roundtrip_bpb = float(found[-1])
    if peak := PEAK.findall(text):
        log.peak_mib = (int(peak[-1][0]), int(peak[-1][1]))
    for line in text.splitlines():
        if line.startswith("step:") or len(log.settings) >= 60:
            break  # the settings are printed before training starts
        pairs = [SETTING.match(token) for token in line.split()]
        if pairs and all(pairs) and not line.startswith(NOT_SETTINGS):
            log.settings.update((p[1], p[2]) for p in pairs)
    return log


def read_text(path: Path, limit: int, tail: bool = True) -> str:
    """Up to `limit` bytes of a file (its end when `tail`); "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit) if tail else 0)
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def read_ends(path: Path, each: int) -> str:
    """A log's first and last `each` bytes, whole lines only: its settings, first and last steps."""
    head = read_text(path, 2 * each, tail=False)
    if len(head.encode()) < 2 * each:
        return head  # the whole log
    head, tail = head[:each], read_text(path, each)
    return head.rsplit("\n", 1)[0] + "\n" + tail.split("\n", 1)[-1]


def read_result(run_dir: Path) -> dict:
    try:
        data = json.loads((run_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _steps(log: TrainLog) -> str:
    if log.step is None:
        return ""
    pace = f", {log.step_ms:.1f} ms/step" if log.step_ms is not None else ""
    if log.wallclock_stop:
        clock = "CPU-clock" if log.cpu_clock else "wall-clock"
        return f"stopped at the {clock} cap at step {log.step:,} of {log.planned:,}{pace}"
    if log.planned is not None and log.step < log.planned:
        return f"stopped at step {log.step:,} of {log.planned:,}{pace}"
    return f"ran all {log.step:,} planned steps{pace}"


def outcome(e: Experiment, run_dir: Path | None, size_limit: int | None = None) -> str:
    """Why a result came out as it did, in a phrase: the verdict, then what training did."""
    result = read_result(run_dir) if run_dir is not None else {}
    log = parse_train_log(read_ends(run_dir / TRAIN_LOG, ENDS_READ_BYTES)) if run_dir is not None else None
    if e.status == "over_size" and e.artifact_bytes and size_limit:
        code, model = result.get("code_bytes"), result.get("model_bytes")
        split = f" (code {code:,} + model {model:,})" if code and model else ""
        head = f"over size by {e.artifact_bytes - size_limit:,} bytes{split}"
    else:
        head = verdict(e)
    notes = []
    if log is not None and (diverged := log.diverged_at()) is not None:
        notes.append(f"the train loss diverged at step {diverged:,}")
    if log is not None and log.wallclock_stop:
        notes.append(_steps(log).split(", ")[0])
    return "; ".join([head, *notes])


class ParentFacts(BaseModel):
    """Everything the parent's run says about itself, as the prompt shows it."""

    exp: Experiment
    log: TrainLog
    result: dict
    manifest: dict
    train_seconds: float  # the budget
    size_limit: int
    trainer_env: dict[str, str]
    preset: dict[str, str] = Field(default_factory=dict)  # what PRESET sets, from the trainer's PRESETS


def _mib(n: int) -> str:
    return f"{n:,} MiB" if n < 10_240 else f"{n / 1024:.1f} GiB"


def _hardware(manifest: dict, log: TrainLog) -> str:
    gpus = manifest.get("gpus") or []
    if gpus:
        model = manifest.get("gpu_model") or "GPU"
        text = f"{len(gpus)} x {model} (devices {','.join(map(str, gpus))})"
    elif manifest:
        text = f"CPU only ({manifest.get('cpu_count', '?')} cores, {manifest.get('platform', '?')})"
    else:
        text = "not recorded"
    extra = [f"torch {manifest['torch']}"] if manifest.get("torch") else []
    if "world_size" in log.settings:
        extra.append(f"world_size {log.settings['world_size']}")
    if manifest.get("slurm_node"):
        extra.append(f"SLURM node {manifest['slurm_node']}")
    return text + (f", {', '.join(extra)}" if extra else "")


def _loss_points(log: TrainLog, points: int) -> str:
    losses = log.losses
    if not losses:
        return "none logged"
    if len(losses) > points:
        picks = sorted({round(i * (len(losses) - 1) / (points - 1)) for i in range(points)})
        losses = [losses[i] for i in picks]
    return ", ".join(f"step {s:,} {v:.4f}" for s, v in losses)


def _pairs(values: dict[str, str], limit: int) -> str:
    text = ", ".join(f"{k}={v}" for k, v in values.items())
    return text if len(text) <= limit else text[: limit - 4].rsplit(", ", 1)[0] + ", ..."


def parent_block(f: ParentFacts, max_chars: int, loss_points: int = 6) -> str:
    """The parent's facts as a Markdown list of fixed size (each line capped, the whole capped)."""
    e, log, result = f.exp, f.log, f.result
    lines = []
    steps = _steps(log)
    lines.append(f"steps: {steps}" if steps else "steps: not logged")
    train_s = result.get("train_seconds") or e.train_seconds
    if train_s is not None or log.train_ms is not None:
        clock = f"{log.train_ms / 1000:.1f} s by the trainer's clock, " if log.train_ms is not None else ""
        phase = f"{train_s:.1f} s for the whole phase (start-up and export included), " if train_s else ""
        allowed = f.manifest.get("train_allowed_seconds")
        stop = f"; the harness stops the phase at {allowed:.0f} s" if allowed else ""
        used = train_s or log.train_ms / 1000
        lines.append(
            f"training time: {clock}{phase}of train_seconds {f.train_seconds:.0f} "
            f"({100 * used / f.train_seconds:.0f}% used){stop}"
        )
    lines.append(f"train loss: {_loss_points(log, loss_points)}")
    before = (
        ", ".join(f"{v:.4f} at step {s:,}" for s, v in log.val_bpb[-2:])
        if log.val_bpb
        else "not measured (training sees no validation data)"
    )
    after = f"{e.val_bpb:.4f} (scored by the harness)" if e.val_bpb is not None else "no score"
    printed = f"; the trainer printed {log.roundtrip_bpb:.4f}" if log.roundtrip_bpb is not None else ""
    lines.append(f"val_bpb: before the quantization roundtrip {before}; after it {after}{printed}")
    total = result.get("artifact_bytes") or e.artifact_bytes
    if total:
        code, model = result.get("code_bytes"), result.get("model_bytes")
        split = f" = code {code:,} + model {model:,}" if code is not None and model is not None else ""
        room = f.size_limit - total
        lines.append(
            f"artifact: {total:,} bytes{split}; cap {f.size_limit:,}: "
            + (f"{room:,} bytes of headroom" if room >= 0 else f"over by {-room:,}")
        )
    if log.peak_mib is not None:
        alloc, reserved = log.peak_mib
        cpu = " (a CPU run: the trainer tracks GPU memory only)" if not f.manifest.get("gpus") else ""
        lines.append(f"peak memory: {_mib(alloc)} allocated, {_mib(reserved)} reserved{cpu}")
    lines.append(f"hardware: {_hardware(f.manifest, log)}")
    if f.trainer_env:
        lines.append(
            f"trainer_env in force (wins over the file): {_pairs(f.trainer_env, SETTINGS_CHARS)}; "
            "changing the file's value of one of these changes nothing"
        )
    if f.preset:
        name = f.trainer_env.get("PRESET", "")
        lines.append(
            f"PRESET={name} sets (over the Hyperparameters defaults): {_pairs(f.preset, SETTINGS_CHARS)}; "
            f'edit the PRESETS["{name}"] line, or use a `set` edit, to change one'
        )
    if log.settings:
        lines.append(f"the trainer printed its settings as: {_pairs(log.settings, SETTINGS_CHARS)}")
    head = f"Experiment {e.id} ({e.title or 'untitled'}), status {e.status}"
    body = "\n".join(f"- {text[:LINE_CHARS]}" for text in lines)
    return f"{head}\n{body}"[:max_chars]


def preset_values(source: str, preset: str) -> dict[str, str]:
    """The `"NAME": value` entries of PRESETS[preset] in a trainer, as written there."""
    block = re.search(rf'["\']{re.escape(preset)}["\']\s*:\s*\{{(.*?)\n\s*\}}', source, re.S)
    if not block:
        return {}
    return dict(re.findall(r'["\']([A-Z][A-Z0-9_]*)["\']\s*:\s*([^,\n]+)', block.group(1)))


def parent_facts(
    exp: Experiment,
    run_dir: Path,
    source: str,
    train_seconds: float,
    size_limit: int,
    trainer_env: dict[str, str],
) -> ParentFacts:
    """Gather the parent's facts; `exp` should be the full row (its manifest holds the hardware)."""
    log = parse_train_log(read_text(run_dir / TRAIN_LOG, LOG_READ_BYTES, tail=False))
    preset = trainer_env.get("PRESET", "")
    values = preset_values(source, preset) if preset else {}
    return ParentFacts(
        exp=exp,
        log=log,
        result=read_result(run_dir),
        manifest=exp.manifest,
        train_seconds=train_seconds,
        size_limit=size_limit,
        trainer_env=dict(trainer_env),
        preset={
            k: v.strip() for k, v in values.items() if k not in trainer_env and k not in HARNESS_ENV_KEYS
        },
    )
