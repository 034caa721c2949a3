"""Benchmark: the confirmed val_bpb gain a night of offline search buys, per experiment and per CPU-hour.

    python bench/research_efficiency.py [--experiments 20] [--fresh-seeds 3] [--json] [--workdir DIR]

Builds a CPU workspace from real text (../shared/data when present: Wikipedia to train, FineWeb to
validate, the sp1024 tokenizer; otherwise the demo corpus), runs the loop with noise calibration and the
default offline proposer for N experiments, then measures the baseline and every promoted step of the best
chain again with seeds the run never used. Promotions "hold" when the fresh means keep each step better
than its parent; the confirmed gain is the baseline's fresh mean minus the best's, with a 95% Welch
interval. Every training is the CPU preset, stopped by the clock as in the challenge, with the demo's
settings otherwise: two slots of one core each, and the fidelity ladder (ideas screened with a third of the
training; the screen-to-full agreement is reported). "experiments" counts ideas: the baseline and each
proposal, not their seeds, screens' full runs or re-tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console

from agentgolf.agent.controller.loop import Loop, RunCaps, new_run_id
from agentgolf.agent.judge.acceptance import AcceptanceConfig
from agentgolf.agent.judge.fidelity import agreement, pairs
from agentgolf.agent.judge.stats import t_isf
from agentgolf.agent.workspace import DEMO_BUDGET, DataConfig, Workspace, init_workspace, save_config
from agentgolf.experiments.ledger import Experiment, Ledger, Run
from agentgolf.experiments.status import Kind, RowStatus

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FRESH_SEED_OFFSET = 100_000  # far from every seed the run used (its seeds count up from the workspace's)


def build_workspace(root: Path, args: argparse.Namespace) -> tuple[Workspace, str]:
    """A CPU workspace on real text: the shared corpus when this checkout has it, else the demo's."""
    if not (args.data / "wiki_en.jsonl.xz").exists():
        return init_workspace(root, demo=True, progress=False), "the demo corpus (Python sources)"
    from agentgolf.baseline.corpus import read_docs
    from agentgolf.baseline.dataset import build_dataset

    ws = init_workspace(root, demo=True, progress=False)  # the demo's settings; its data replaced below
    info = build_dataset(
        itertools.islice(read_docs(args.data / "wiki_en.jsonl.xz"), args.train_docs),
        root / "data",
        name="wiki_fineweb_sp1024",
        tokenizer=args.data / "fineweb_1024_bpe.model",
        val_docs_iter=itertools.islice(read_docs(args.data / "fineweb_docs.jsonl.xz"), args.val_docs),
    )
    ws.config.data = DataConfig(
        dataset_dir=info.dataset_dir.relative_to(root),
        tokenizer=info.tokenizer.relative_to(root),
        vocab_size=info.vocab_size,
    )
    what = f"{info.train_tokens:,} Wikipedia tokens to train, {info.val_tokens:,} FineWeb tokens to validate"
    return ws, what


def configure(ws: Workspace, args: argparse.Namespace) -> None:
    ws.config.budget = DEMO_BUDGET.model_copy(update={"train_seconds": args.train_seconds})
    ws.config.acceptance = AcceptanceConfig(noise_seeds=args.noise_seeds, max_runs=args.max_runs)
    save_config(ws.config_path, ws.config)


def best_chain(ledger_rows: list[Experiment], best: Experiment) -> list[Experiment]:
    """The kept rows from the baseline to `best`, in order."""
    by_id = {e.id: e for e in ledger_rows}
    chain = [best]
    while chain[-1].parent_id is not None and chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])
    return chain[::-1]


def fresh_scores(ws: Workspace, chain: list[Experiment], seeds: int, run_id: str) -> dict[int, list[float]]:
    """Each row of `chain` trained again with seeds the run never saw, in a run of its own, on as many
    slots at once as the run had (each worker with its own ledger connection)."""
    jobs = [(e, FRESH_SEED_OFFSET + k) for k in range(seeds) for e in chain]
    local = threading.local()

    def one(job: tuple[Experiment, int]) -> tuple[int, float | None]:
        if not hasattr(local, "loop"):
            local.loop = Loop(
                ws, Ledger(ws.state / "ledger.db"), ws.config.budget, console=Console(quiet=True)
            )
        exp, seed = job
        done = local.loop.lab.execute(local.loop.lab.remeasure(exp, Kind.replay, seed, run_id=run_id))
        return exp.id, done.val_bpb if done.status == RowStatus.ok else None

    out: dict[int, list[float]] = {e.id: [] for e in chain}
    with ThreadPoolExecutor(max_workers=ws.config.local.cpu_slots) as pool:
        for exp_id, score in pool.map(one, jobs):
            if score is not None:
                out[exp_id].append(score)
    return out


def welch_ci95(a: list[float], b: list[float]) -> tuple[float, float]:
    """95% interval for mean(a) - mean(b), Welch-Satterthwaite degrees of freedom."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        diff = statistics.fmean(a) - statistics.fmean(b)
        return diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_isf(0.025, dof) * se
    diff = statistics.fmean(a) - statistics.fmean(b)
    return diff - half, diff + half


def measure(args: argparse.Namespace) -> dict[str, object]:
    root = Path(args.workdir or tempfile.mkdtemp(prefix="research-efficiency-")) / "ws"
    started = time.perf_counter()
    ws, data = build_workspace(root, args)
    configure(ws, args)
    console = Console(file=sys.stderr, quiet=args.json)
    loop = Loop(ws, ws.ledger(), ws.config.budget, console=console)
    summary = loop.run(RunCaps(experiments=args.experiments), ws.config.proposer)
    rows = loop.ledger.experiments(run_id=summary.run_id)
    run_seconds = sum(e.gpu_seconds or 0.0 for e in rows)
    base = next(e for e in rows if e.kind == Kind.baseline)
    best = loop.ledger.get(summary.best_id) if summary.best_id is not None else base
    chain = best_chain(rows, best)

    fresh_run = Run(id=f"{new_run_id()}-fresh-seeds", created_at=time.time(), base_commit=base.commit_sha)
    loop.ledger.add_run(fresh_run)
    fresh = fresh_scores(ws, chain, args.fresh_seeds, fresh_run.id)
    fresh_rows = loop.ledger.experiments(run_id=fresh_run.id)
    fresh_seconds = sum(e.gpu_seconds or 0.0 for e in fresh_rows)
    held = sum(
        1
        for parent, child in itertools.pairwise(chain)
        if fresh[child.id]
        and fresh[parent.id]
        and statistics.fmean(fresh[child.id]) < statistics.fmean(fresh[parent.id])
    )
    base_fresh, best_fresh = fresh[base.id], fresh[best.id]
    enough = len(base_fresh) >= 2 and len(best_fresh) >= 2
    gain = statistics.fmean(base_fresh) - statistics.fmean(best_fresh) if base_fresh and best_fresh else None
    ci = welch_ci95(base_fresh, best_fresh) if enough and best.id != base.id else None
    proposals = [e for e in rows if e.kind == Kind.proposal and e.screen_of is None and e.retest_of is None]
    seen = agreement(pairs(rows))
    return {
        "data": data,
        "experiments": 1 + len(proposals),
        "proposals": len(proposals),
        "trainings": len(rows),
        "stop_reason": summary.stop_reason,
        "baseline_bpb_run": base.val_bpb,
        "best_id": best.id,
        "best_title": best.title,
        "best_bpb_run": best.val_bpb,
        "promotions": len(chain) - 1,
        "promotions_held": held,
        "fresh_seeds": args.fresh_seeds,
        "baseline_fresh_bpb": base_fresh,
        "best_fresh_bpb": best_fresh,
        "confirmed_gain_bpb": gain,
        "ci95_bpb": list(ci) if ci else None,
        "cpu_hours": (run_seconds + fresh_seconds) / 3600,
        "cpu_hours_run": run_seconds / 3600,
        "screen_full_agreement": seen.agreement,
        "screen_full_rank_correlation": seen.rank_correlation,
        "ideas_on_both_rungs": seen.pairs,
        "wall_seconds": time.perf_counter() - started,
        "workspace": str(root),
    }


def show(result: dict[str, object]) -> None:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return "n/a" if v is None else str(v)

    width = max(len(k) for k in result)
    print("| measure".ljust(width + 2) + " | value |")
    print("|" + "-" * (width + 2) + "|-------|")
    for key, value in result.items():
        print(f"| {key.ljust(width)} | {fmt(value)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=20, help="the run's budget (baseline included)")
    parser.add_argument("--fresh-seeds", type=int, default=3)
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--noise-seeds", type=int, default=4, help="baseline seeds measuring the noise")
    parser.add_argument("--max-runs", type=int, default=3, help="runs of a candidate before it is decided")
    parser.add_argument("--train-docs", type=int, default=400, help="Wikipedia documents (shared data only)")
    parser.add_argument("--val-docs", type=int, default=40, help="FineWeb documents (shared data only)")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.experiments < 2 or args.fresh_seeds < 2:
        parser.error("--experiments and --fresh-seeds must be at least 2")
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        show(result)


if __name__ == "__main__":
    main()
