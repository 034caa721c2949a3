"""Kill the loop with SIGKILL at random moments, resume after each, and check that nothing was lost or doubled.

    python bench/kill_soak.py [--kills 12] [--budget 6] [--seed 1] [--json]

It builds a tiny workspace (the real trainer, CPU preset, tiny data from the standard library's sources),
starts `agentgolf run`, and kills it `--kills` times at random moments (0.3 to 6 s after each start, so
the kills land mid-proposal, mid-commit, mid-training, mid-scoring and mid-ledger-write alike; each kill
says what was in flight), then lets the run finish with `agentgolf run --resume`. It checks every
invariant: each experiment recorded once and the budget charged exactly; no row left `running`; each row's
branch points at its commit; no sandboxed process outlives the loop that started it; the ledger passes
SQLite's integrity check. tests/test_reliability.py runs a short one in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import git

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tiny workspace's settings are the tests' own (tests/tiny.py)
from tests.tiny import TINY_ENV  # noqa: E402


def cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agentgolf.agent.cli.main", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def make_workspace(root: Path) -> Path:
    from agentgolf.agent.judge.acceptance import AcceptanceConfig
    from agentgolf.agent.workspace import DataConfig, init_workspace, save_config
    from agentgolf.baseline.corpus import demo_corpus
    from agentgolf.baseline.dataset import build_dataset
    from agentgolf.sandbox.budget import Budget

    info = build_dataset(
        demo_corpus(300_000), root / "data", name="tiny", vocab_size=256, val_docs=2, byte_fallback=False
    )
    ws = init_workspace(root / "ws", progress=False)
    ws.config.data = DataConfig(dataset_dir=info.dataset_dir, tokenizer=info.tokenizer, vocab_size=256)
    ws.config.trainer_env = {**TINY_ENV, "ITERATIONS": "12"}  # long enough to be caught mid-flight
    ws.config.budget = Budget(train_seconds=600, train_grace_seconds=60, score_seconds=120)
    ws.config.acceptance = AcceptanceConfig(
        noise_seeds=1, known_sigma_bpb=0.001, confirm=False, min_delta_bpb=0.0
    )
    save_config(ws.config_path, ws.config)
    return ws.root


def in_flight(ws: Path) -> str:
    """What the loop was doing, from the ledger and the run folders (read after the kill)."""
    db = ws / ".agentgolf" / "ledger.db"
    if not db.exists():
        return "starting"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, commit_sha FROM experiments WHERE status = 'running'").fetchall()
    if not rows:
        pending = list((ws / ".agentgolf" / "worktrees").glob("pending-*"))
        return "proposing" if pending else "between experiments"
    exp_id, commit = rows[-1]
    run = ws / ".agentgolf" / "runs" / str(exp_id)
    if not commit:
        return "committing"
    if (run / "verify.log").exists() or (run / "score.log").exists():
        return "scoring"
    if (run / "train.log").exists():
        return "training"
    return "launching"


def survivors(ws: Path) -> list[int]:
    """Processes whose command line mentions the workspace's run folders: none may outlive the loop."""
    needle = str(ws / ".agentgolf").encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def check(ws: Path, budget: int) -> list[str]:
    """Every invariant that a kill -9 must not break; the list of broken ones (empty: all hold)."""
    problems = []
    db = ws / ".agentgolf" / "ledger.db"
    with sqlite3.connect(db) as conn:
        if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("the ledger fails SQLite's integrity check")
        rows = conn.execute(
            "SELECT id, kind, status, branch, commit_sha, fingerprint FROM experiments ORDER BY id"
        ).fetchall()
    charged = [r for r in rows if r[1] in ("baseline", "proposal")]
    if len(charged) != budget:
        problems.append(f"{len(charged)} experiments charged for a budget of {budget}")
    if any(r[2] == "running" for r in rows):
        problems.append(f"rows left running: {[r[0] for r in rows if r[2] == 'running']}")
    changes = [r[5] for r in rows if r[1] == "proposal" and r[5] and r[2] not in ("rejected", "infra_error")]
    if len(changes) != len(set(changes)):
        problems.append("the same change was trained twice")
    repo = git.Repo(ws)
    heads = {h.name: h.commit.hexsha for h in repo.heads}
    for exp_id, _, status, branch, commit, _ in rows:
        if branch and commit and heads.get(branch) != commit:
            problems.append(f"#{exp_id} ({status}): branch {branch} does not point at its commit")
    return problems


def soak(ws: Path, kills: int, budget: int, rng: random.Random, log=print) -> dict:
    hits: list[str] = []
    leftovers = 0
    for k in range(kills):
        proc = cli("run", "--budget", str(budget), *(["--resume"] if k else []), cwd=ws)
        time.sleep(rng.uniform(0.3, 6.0))
        if proc.poll() is not None:
            log(f"kill {k + 1}: the run had already finished")
            break
        proc.send_signal(signal.SIGKILL)  # the loop only: what it started must die with it
        proc.wait()
        hits.append(in_flight(ws))
        time.sleep(1.0)  # bubblewrap's --die-with-parent takes each sandbox down with the loop
        left = survivors(ws)
        leftovers += len(left)
        log(f"kill {k + 1}: {hits[-1]}" + (f"; {len(left)} process(es) outlived the loop" if left else ""))
    final = subprocess.run(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "run", "--resume"],
        cwd=ws,
        capture_output=True,
        text=True,
    )
    problems = check(ws, budget)
    if final.returncode != 0:
        problems.append(f"the last resume failed: {final.stderr.strip()[-300:]}")
    if leftovers:
        problems.append(f"{leftovers} process(es) outlived a killed loop")
    return {"kills": len(hits), "in_flight_at_kill": hits, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--budget", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp))
        t0 = time.monotonic()
        out = soak(
            ws,
            args.kills,
            args.budget,
            random.Random(args.seed),
            log=print if not args.json else lambda _: None,
        )
        out["seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        kinds = sorted(set(out["in_flight_at_kill"]))
        print("| kills | phases hit | invariants broken | seconds |\n|---|---|---|---|")
        print(f"| {out['kills']} | {', '.join(kinds)} | {len(out['problems'])} | {out['seconds']} |")
        for p in out["problems"]:
            print(f"BROKEN: {p}")
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
