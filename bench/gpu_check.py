"""The helpers of bench/gpu_check.sh: run a stage with a timestamped log, read the trainers' logs, print the table.

    python bench/gpu_check.py run --log FILE --timeout S [--label NAME] -- COMMAND...
    python bench/gpu_check.py table --work DIR --train-seconds S [--agent-seconds S] [--json FILE]
    python bench/gpu_check.py agent-plan --left S --budget N --seconds S

`run` prefixes every line of the command's output with the seconds since it started ("[  12.345] ...") in
FILE, echoes the lines that are not per-step progress, kills the command's whole process group at the
timeout, and ends FILE with "gpu_check: exit N". `table` reads WORK/logs/{official,ours}.log (both trainers
print the same line formats), WORK/agent_ledger.json and WORK/*.txt notes. Standard library only.
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
    "exit": re.compile(r"^gpu_check: exit (-?\d+)(.*)$"),
}
TRAINERS = ("official", "ours")  # always in the table
EXTRA_TRAINERS = ("ours_fp32_stream",)  # a column only when that stage ran
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
    with open(log, "w", encoding="utf-8") as f:
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


# --- the table ------------------------------------------------------------------------------------------

ROWS = (  # key, label, format, better when higher
    ("ms_per_step", "ms/step", "{:,.1f}", False),
    ("tokens_per_s", "tokens/s", "{:,.0f}", True),
    ("steps", "steps", "{:,}", True),
    ("val_bpb", "val_bpb after the int8+zlib roundtrip", "{:.4f}", False),
    ("prequant_bpb", "val_bpb before quantization", "{:.4f}", False),
    ("artifact_bytes", "artifact bytes (code + model)", "{:,}", False),
    ("peak_mib", "peak memory allocated (MiB)", "{:,}", False),
    ("compile_s", "compile time: start to first step done (s)", "{:.1f}", False),
    ("warmup_s", "other warm-up steps (s)", "{:.1f}", False),
    ("model_built_s", "process start to model built (s)", "{:.1f}", False),
    ("after_training_s", "after training: export, evals (s)", "{:.1f}", False),
    ("outside_s", "wall time outside the training window (s)", "{:.1f}", False),
    ("wall_s", "wall time (s)", "{:.1f}", False),
)


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return spec.format(value)


def trainer_state(work: Path, name: str) -> tuple[dict | None, str]:
    """(figures, note): figures None when the stage did not run; the note says how it ended."""
    note_file = work / f"{name}.txt"
    note = note_file.read_text().strip() if note_file.is_file() else ""
    log = work / "logs" / f"{name}.log"
    if not log.is_file():
        return None, note or "not run"
    m = parse_log(log.read_text(encoding="utf-8", errors="replace"))
    if m["exit"] is None:
        ended = "no exit line (the check itself was killed?)"
    elif m["exit"] != 0:
        ended = f"failed: exit {m['exit']}" + (f", {m['exit_note']}" if m["exit_note"] else "")
    elif m["val_bpb"] is None:
        ended = "exit 0 but no final_int8_zlib_roundtrip_exact line"
    else:
        ended = "ok"
    return m, "; ".join(x for x in (note, ended) if x)


def trainer_table(work: Path) -> tuple[list[str], dict]:
    figures, notes = {}, {}
    extra = [
        n for n in EXTRA_TRAINERS if (work / "logs" / f"{n}.log").is_file() or (work / f"{n}.txt").is_file()
    ]
    for name in (*TRAINERS, *extra):
        figures[name], notes[name] = trainer_state(work, name)
    lines = ["| figure | official | ours | ours / official |" + "".join(f" {n} |" for n in extra)]
    lines.append("|---|---|---|---|" + "---|" * len(extra))
    for key, label, spec, _ in ROWS:
        a = (figures["official"] or {}).get(key)
        b = (figures["ours"] or {}).get(key)
        ratio = f"{b / a:.3f}" if a and b else "-"
        more = "".join(f" {fmt((figures[n] or {}).get(key), spec)} |" for n in extra)
        lines.append(f"| {label} | {fmt(a, spec)} | {fmt(b, spec)} | {ratio} |{more}")
    lines.append(
        f"| how it ended | {notes['official']} | {notes['ours']} | |"
        + "".join(f" {notes[n]} |" for n in extra)
    )
    return lines, {"trainers": figures, "notes": notes}


def agent_table(work: Path, seconds: float | None) -> tuple[list[str], dict]:
    note_file = work / "agent.txt"
    note = note_file.read_text().strip() if note_file.is_file() else "not run"
    ledger = work / "agent_ledger.json"
    if not ledger.is_file():
        return [f"agentgolf: {note}"], {"agent": {"note": note, "experiments": []}}
    try:
        rows = json.loads(ledger.read_text())
    except json.JSONDecodeError as e:
        return [f"agentgolf: {note}; its ledger is not JSON ({e})"], {
            "agent": {"note": note, "experiments": []}
        }
    lines = [f"agentgolf: {note}", ""]
    tail = ["", "trainer's own: what the trainer printed, none in the harness's mode (training never sees the val "
            "shards); overhead: the training phase's wall time beyond the training seconds"]  # fmt: skip
    lines += ["| id | kind | status | val_bpb (harness) | trainer's own | own - harness | train phase (s) | "
              "overhead (s) | wall (s) | isolation |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        bpb, own = r.get("val_bpb"), r.get("self_val_bpb")
        phase = r.get("train_seconds")
        overhead = phase - seconds if phase is not None and seconds else None
        cells = [
            r.get("id"), r.get("kind"), r.get("status"), fmt(bpb, "{:.4f}"), fmt(own, "{:.4f}"),
            fmt(own - bpb if own is not None and bpb is not None else None, "{:+.4f}"),
            fmt(phase, "{:.1f}"), fmt(overhead, "{:.1f}"), fmt(r.get("wall_seconds"), "{:.1f}"), r.get("isolation"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if not rows:
        lines.append("(no experiment recorded)")
    return lines + tail, {"agent": {"note": note, "experiments": rows}}


def table(args: argparse.Namespace) -> int:
    work = Path(args.work)
    header = (work / "gpu.txt").read_text().strip() if (work / "gpu.txt").is_file() else "GPU: unknown"
    out = [f"# GPU check: {header}", ""]
    out.append(f"## The trainers, {args.train_seconds:g} s of training each, torchrun with 1 process")
    out.append("")
    lines, data = trainer_table(work)
    out += lines + ["", f"## agentgolf run, {args.agent_seconds:g} s of training per experiment", ""]
    more, agent = agent_table(work, args.agent_seconds)
    out += more
    print("\n".join(out))
    if args.json:
        Path(args.json).write_text(json.dumps({**data, **agent}, indent=2, default=str))
    return 0


def agent_plan(args: argparse.Namespace) -> int:
    """How many experiments fit in the time left: prints N (0: none fits)."""
    per = args.seconds + args.overhead
    print(max(0, min(args.budget, int(args.left // per))))
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
    p = sub.add_parser("table", help="print the figures of a finished check")
    p.add_argument("--work", required=True)
    p.add_argument("--train-seconds", type=float, required=True)
    p.add_argument("--agent-seconds", type=float, default=0.0)
    p.add_argument("--json")
    p.set_defaults(func=table)
    p = sub.add_parser("agent-plan", help="how many agentgolf experiments fit in the time left")
    p.add_argument("--left", type=float, required=True)
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--overhead", type=float, default=110.0)
    p.set_defaults(func=agent_plan)
    args = parser.parse_args()
    if getattr(args, "command", None) is not None:
        args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not args.command:
            parser.error("run needs a command after --")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
