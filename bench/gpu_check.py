"""The helpers of bench/gpu_check.sh: run a trainer with a timestamped log, read the trainers' logs, summarize.

    python bench/gpu_check.py run --log FILE --timeout S [--label NAME] -- COMMAND...
    python bench/gpu_check.py summary --work DIR --train-seconds S --warm-seconds S [--json FILE]

`run` prefixes every line of the command's output with the seconds since it started ("[  12.345] ...") in
FILE, echoes the lines that are not per-step progress, kills the command's whole process group at the
timeout, and ends FILE with "gpu_check: exit N". `summary` reads what the steps left in WORK: steps.txt (one
line per step: name, exit code, seconds, note), the trainers' logs ours_cold.log, ours_warm.log and
official.log (both trainers print the same line formats), and the last `RESULT {json}` line of install.txt,
smoke.txt and score.txt. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

STAMP = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")
QUIET = re.compile(r"^(step:\d+/\d+ train_loss|warmup_step:)")  # progress lines: in the log, not echoed
PATTERNS = {
    "batch": re.compile(r"^train_batch_tokens:(\d+) train_seq_len:(\d+) iterations:(\d+) warmup_steps:(\d+)"),
    "params": re.compile(r"^model_params:(\d+)"),
    "accum": re.compile(r"^world_size:(\d+) grad_accum_steps:(\d+)"),
    "warmup": re.compile(r"^warmup_step:(\d+)/(\d+)"),
    "step": re.compile(r"^step:(\d+)/\d+ train_loss:(\S+) train_time:(\d+)ms"),
    "val": re.compile(r"^step:(\d+)/\d+ val_loss:(\S+) val_bpb:(\S+) train_time:(\d+)ms"),
    "stop": re.compile(r"^stopping_early: wallclock_cap train_time:(\d+)ms step:(\d+)/"),
    "peak": re.compile(r"^peak memory allocated: (\d+) MiB"),
    "total": re.compile(r"^Total submission size int8\+zlib: (\d+) bytes"),
    "exact": re.compile(r"^final_int8_zlib_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)"),
    "eval": re.compile(r"^final_int8_zlib_roundtrip val_loss:\S+ val_bpb:\S+ eval_time:(\d+)ms"),
    "exit": re.compile(r"^gpu_check: exit (-?\d+)(.*)$"),
}
TRAINERS = ("ours_cold", "official", "ours_warm")  # the table's columns
KILL_GRACE_S = 10


# --- run ----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run the command with its output timestamped into the log; its exit code, 124 if it timed out."""
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            args.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # its own process group, so a timeout kills torchrun's workers too
        )
    except OSError as e:
        log.write_text(
            f"[{0.0:9.3f}] gpu_check: cannot start {args.command[0]}: {e}\n[{0.0:9.3f}] gpu_check: exit 127\n"
        )
        print(f"{args.label}| cannot start {args.command[0]}: {e}", flush=True)
        return 127
    timed_out = threading.Event()

    def kill_group() -> None:
        timed_out.set()
        for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    timer = threading.Timer(args.timeout, kill_group)
    timer.start()
    with open(log, "a", encoding="utf-8") as f:  # after any note the caller wrote first
        for line in proc.stdout:
            line = line.rstrip("\n")
            f.write(f"[{time.monotonic() - start:9.3f}] {line}\n")
            f.flush()
            if not QUIET.match(line):
                print(f"{args.label}| {line}", flush=True)
        rc = proc.wait()
        timer.cancel()
        note = f" (timed out after {args.timeout:g} s)" if timed_out.is_set() else ""
        f.write(f"[{time.monotonic() - start:9.3f}] gpu_check: exit {rc}{note}\n")
    print(f"{args.label}| exit {rc}{note}, {time.monotonic() - start:.1f} s", flush=True)
    return 124 if timed_out.is_set() else rc


# --- reading a trainer's log ----------------------------------------------------------------------------


def parse_log(text: str) -> dict:
    """The figures a trainer's timestamped log gives; absent ones are None."""
    first: dict[str, tuple[float, re.Match]] = {}
    last: dict[str, tuple[float, re.Match]] = {}
    for raw in text.splitlines():
        stamped = STAMP.match(raw)
        if not stamped:
            continue
        t, line = float(stamped.group(1)), stamped.group(2)
        for key, pattern in PATTERNS.items():
            m = pattern.match(line)
            if m:
                first.setdefault(key, (t, m))
                last[key] = (t, m)

    def group(key: str, i: int, kind=float, which=last):
        return kind(which[key][1].group(i)) if key in which else None

    def when(key: str, which=last):
        return which[key][0] if key in which else None

    # the end of training: the wall-clock stop line, else the latest of the last step and last val lines
    ends = [(group(k, i, int), group(k, j)) for k, i, j in (("stop", 2, 1), ("step", 1, 3), ("val", 1, 4))]
    ends = [e for e in ends if e[0] is not None]
    steps, train_ms = (ends[0] if "stop" in last else max(ends)) if ends else (None, None)
    wall = when("exit")
    batch = group("batch", 1, int)
    m = {
        "exit": group("exit", 1, int),
        "exit_note": last["exit"][1].group(2).strip(" ()") if "exit" in last else "",
        "steps": steps,
        "train_s": train_ms / 1000 if train_ms else None,
        "ms_per_step": train_ms / steps if train_ms and steps else None,
        "tokens_per_s": batch * steps / (train_ms / 1000) if batch and steps and train_ms else None,
        "val_bpb": group("exact", 2),
        "prequant_bpb": group("val", 3),
        "artifact_bytes": group("total", 1, int),
        "peak_mib": group("peak", 1, int),
        "eval_s": group("eval", 1) / 1000 if "eval" in last else None,
        "model_built_s": when("params", first),
        "grad_accum": group("accum", 2, int),
        "wall_s": wall,
    }
    start = when("batch", first)  # printed just before the first (compiling) warm-up step
    if start is not None and "warmup" in first:
        m["compile_s"] = when("warmup", first) - start
        m["warmup_s"] = when("warmup") - when("warmup", first)
    elif start is not None and "step" in first and m["ms_per_step"]:
        m["compile_s"] = when("step", first) - start - m["ms_per_step"] / 1000  # no warm-up: step 1 compiles
        m["warmup_s"] = 0.0
    else:
        m["compile_s"] = m["warmup_s"] = None
    m["outside_s"] = wall - m["train_s"] if wall is not None and m["train_s"] is not None else None
    end = when("stop") or when("val")
    m["after_training_s"] = wall - end if wall is not None and end is not None else None
    return m


# --- the summary ----------------------------------------------------------------------------------------

ROWS = (  # key, label, format
    ("ms_per_step", "ms/step", "{:,.1f}"),
    ("tokens_per_s", "tokens/s", "{:,.0f}"),
    ("steps", "steps", "{:,}"),
    ("val_bpb", "val_bpb after the int8+zlib roundtrip", "{:.4f}"),
    ("prequant_bpb", "val_bpb before quantization", "{:.4f}"),
    ("eval_s", "roundtrip eval time (s)", "{:.1f}"),
    ("artifact_bytes", "artifact bytes (code + model)", "{:,}"),
    ("peak_mib", "peak memory allocated (MiB)", "{:,}"),
    ("compile_s", "compile time: start to first step done (s)", "{:.1f}"),
    ("warmup_s", "other warm-up steps (s)", "{:.1f}"),
    ("model_built_s", "process start to model built (s)", "{:.1f}"),
    ("after_training_s", "after training: export, evals (s)", "{:.1f}"),
    ("outside_s", "overhead: wall time outside the training window (s)", "{:.1f}"),
    ("wall_s", "wall time (s)", "{:.1f}"),
)


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return spec.format(value)


def trainer_state(work: Path, name: str) -> tuple[dict | None, str]:
    """(figures, how it ended); figures None when the trainer did not run."""
    log = work / f"{name}.log"
    if not log.is_file():
        return None, "not run"
    m = parse_log(log.read_text(encoding="utf-8", errors="replace"))
    if m["exit"] is None:
        return m, "no exit line (still running, or the check was killed)"
    if m["exit"] != 0:
        return m, f"failed: exit {m['exit']}" + (f", {m['exit_note']}" if m["exit_note"] else "")
    return m, "ok" if m["val_bpb"] is not None else "exit 0 but no final_int8_zlib_roundtrip_exact line"


def result_of(path: Path, prefix: str = "RESULT ") -> dict | None:
    """The last `RESULT {json}` line (or another prefix) of a step's file."""
    if not path.is_file():
        return None
    lines = [x for x in path.read_text(errors="replace").splitlines() if x.startswith(prefix)]
    try:
        return json.loads(lines[-1][len(prefix) :]) if lines else None
    except json.JSONDecodeError:
        return None


def summary(args: argparse.Namespace) -> int:
    work = Path(args.work)
    out = [f"# GPU check, {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    probe = work / "probe.txt"
    heads = (
        [x for x in probe.read_text(errors="replace").splitlines() if x.startswith("probe:")]
        if probe.is_file()
        else []
    )
    out += heads + ["", "## Steps (exit code, seconds)", ""]
    steps = (work / "steps.txt").read_text().strip() if (work / "steps.txt").is_file() else "(none finished)"
    out += [steps, ""]
    figures, notes = {}, {}
    for name in TRAINERS:
        figures[name], notes[name] = trainer_state(work, name)
    cold, official, warm = (figures[n] or {} for n in TRAINERS)
    if any(figures.values()):
        out.append(
            f"## Trainers: torchrun, 1 process; {args.train_seconds:g} s cold, {args.warm_seconds:g} s warm"
        )
        out += [
            "",
            "| figure | ours, cold | official | ours / official | ours, warm cache |",
            "|---|---|---|---|---|",
        ]
        for key, label, spec in ROWS:
            a, b = cold.get(key), official.get(key)
            ratio = f"{a / b:.3f}" if a and b else "-"
            out.append(
                f"| {label} | {fmt(a, spec)} | {fmt(b, spec)} | {ratio} | {fmt(warm.get(key), spec)} |"
            )
        out.append(f"| how it ended | {notes['ours_cold']} | {notes['official']} | | {notes['ours_warm']} |")
    else:
        out.append("## Trainers: none run yet")
    results = {name: result_of(work / f"{name}.txt") for name in ("install", "smoke", "score")}
    install, smoke, score = results["install"] or {}, results["smoke"] or {}, results["score"] or {}
    out += ["", "## Harness", ""]
    if install:
        out.append(f"install: {'ok' if install.get('ok') else 'FAILED'}; packages {install.get('packages')}")
    if smoke:
        out.append(f"sandbox smoke: cuda inside worked on try '{smoke.get('cuda_worked')}'")
        for t in smoke.get("tries", []):
            out.append(f"  try {t['label']}: {t['status']}, isolation {t['isolation']}, steps {t['steps']}")
    leg = result_of(work / "smoke.txt", "SANDBOX_LEG ")
    if leg:
        out.append(
            "sandbox leg (real trainer, gpus=[0], fake nodes): "
            + ", ".join(f"{k} {v}" for k, v in leg.items())
        )
        results["sandbox_leg"] = leg
    if score:
        keys = ("status", "device", "harness_val_bpb", "trainer_val_bpb", "harness_minus_trainer", "score_s",
                "verify_s", "trainer_eval_s", "harness_over_trainer_eval", "verification", "isolation")  # fmt: skip
        out.append(
            "harness scoring of ours' cold artifact: " + ", ".join(f"{k} {score.get(k)}" for k in keys)
        )
    print("\n".join(out))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"trainers": figures, "notes": notes, **results}, indent=1, default=str)
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("run", help="run a command with a timestamped log and a timeout")
    p.add_argument("--log", required=True)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--label", default="run")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)
    p = sub.add_parser("summary", help="the figures of the steps done so far")
    p.add_argument("--work", required=True)
    p.add_argument("--train-seconds", type=float, required=True)
    p.add_argument("--warm-seconds", type=float, required=True)
    p.add_argument("--json")
    p.set_defaults(func=summary)
    args = parser.parse_args()
    if getattr(args, "command", None) is not None:
        args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not args.command:
            parser.error("run needs a command after --")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
