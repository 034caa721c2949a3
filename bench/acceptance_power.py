"""How often each acceptance design promotes a change, over nights of candidates, under drift and common seeds.

    python bench/acceptance_power.py [--nights 300] [--per-night 50] [--f 0.5] [--json] [settings...]
    python bench/acceptance_power.py --iid [--candidates 4000] [--per-run 20] [--parent-runs N] [--json]

The loop's own decision code judges simulated ledger rows (bench/acceptance_nights.py says how): today's
design (`acceptance.decide`, the candidate's runs against its parent's) and the paired one (`paired.judge`
on rounds of candidate and control with one seed, sigma_d pooled as `paired.noise` pools it; the first night
of every cell is also judged by `paired.decide` over the whole ledger, and must agree).

A night is the baseline with its calibration seeds, then `--per-night` candidates of one true gain one
after another; a promotion becomes the next parent, so lucky parents are part of it. Each row is one design
under one drift (none; linear 2 and 6 sigma over 150 trainings; a 2 sigma step at a random time) and one
seed share f (the part of the seed noise the seed fixes, shared by two commits trained with one seed).
Per row: false promotions per no-gain candidate (all-null nights, with the clustered standard error:
nights are the clusters), the share of nights with any false promotion, the false promotions per night,
the share of all 1 sigma and 2 sigma candidates promoted through their nights, and the trainings per
candidate (calibration not counted; paired: 2 per round on 2 slots). Then the paired design's goals, pass
or fail per row. `--nights N` sets the all-null nights per cell; gain cells get half as many, and the
current design (five times slower to simulate, and only the reference) a third of each.

`--iid` is the old bench: i.i.d. noise, every candidate against the baseline (or `--parent-runs`, an
unselected kept proposal), gains 0 to 3 sigma; `--candidates`, `--per-run` and `--parent-runs` imply it.
`--json` prints the rows (old bench: [{"gain_sigma", "promotion_rate", "mean_runs"}, ...]).
"""

from __future__ import annotations

import argparse
import json
import random
import time

from acceptance_nights import DESIGNS, DRIFTS, NIGHT_TRAININGS, drift_label, run_cell

from agentgolf.agent.judge.acceptance import ROW_STATUS, AcceptanceConfig, decide
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus

NIGHT_GAINS = (0.0, 1.0, 2.0)
# The paired design's goals (issue 20): (what, the gain's cell, the figure, at most (True) or at least, limit)
GOALS = (
    ("null promoted", 0.0, "promoted", True, 0.01),
    ("nights with a false promotion", 0.0, "nights_with_any", True, 0.15),
    ("2σ promoted", 2.0, "promoted", False, 0.90),
    ("1σ promoted", 1.0, "promoted", False, 0.35),
)
CURRENT_SHARE = 3  # the current design runs a third of the nights

# The old bench (--iid), and its goals (issue 12): null promoted, 2 sigma promoted, mean runs.
GAINS_SIGMA = (0.0, 0.5, 1.0, 2.0, 3.0)
TRUE_PARENT_BPB = 1.2
IID_GOALS = (0.01, 0.80, 3.0)


class Run:
    """One simulated run's ledger rows, in memory (the old bench: i.i.d. noise, no chain)."""

    def __init__(self, rng: random.Random, sigma: float, cfg: AcceptanceConfig, parent_runs: int | None):
        self.rng, self.sigma, self.rows = rng, sigma, []
        base = self.add(Kind.baseline, TRUE_PARENT_BPB)
        base.kept = True
        for _ in range(cfg.noise_seeds - 1):
            self.add(Kind.calibration, TRUE_PARENT_BPB, replay_of=base.id)
        self.parent = base
        if parent_runs is not None:  # a kept proposal as the parent, measured parent_runs times
            self.parent = self.add(Kind.proposal, TRUE_PARENT_BPB, parent_id=base.id)
            self.parent.kept = True
            for _ in range(parent_runs - 1):
                self.add(Kind.confirm, TRUE_PARENT_BPB, replay_of=self.parent.id)

    def add(self, kind: Kind, true_bpb: float, **links: int) -> Experiment:
        row = Experiment(
            id=len(self.rows) + 1,
            kind=kind,
            status=RowStatus.ok,
            val_bpb=self.rng.gauss(true_bpb, self.sigma),
            created_at=0.0,
            **links,
        )
        self.rows.append(row)
        return row

    def candidate(self, gain_sigma: float, cfg: AcceptanceConfig) -> tuple[bool, int]:
        """Measure one candidate until the rule decides; returns (promoted, runs)."""
        true_bpb = TRUE_PARENT_BPB - gain_sigma * self.sigma
        exp = self.add(Kind.proposal, true_bpb, parent_id=self.parent.id)
        runs = 1
        while True:
            verdict = decide(self.rows, exp, self.parent, cfg)
            exp.status, exp.kept = ROW_STATUS[verdict.decision], verdict.decision == "promote"
            if verdict.decision != "confirm":
                return exp.kept, runs
            self.add(Kind.confirm, true_bpb, replay_of=exp.id, parent_id=self.parent.id)
            runs += 1


def simulate_iid(gain_sigma, cfg, candidates, per_run, sigma, seed, parent_runs=None) -> dict[str, float]:
    rng = random.Random(f"{seed}/{gain_sigma}")
    promoted = runs = 0
    run = None
    for i in range(candidates):
        if i % per_run == 0:
            run = Run(rng, sigma, cfg, parent_runs)
        kept, n = run.candidate(gain_sigma, cfg)
        promoted += kept
        runs += n
    return {"gain_sigma": gain_sigma, "promotion_rate": promoted / candidates, "mean_runs": runs / candidates}


def main_iid(args: argparse.Namespace, cfg: AcceptanceConfig) -> None:
    candidates, per_run = args.candidates or 4000, args.per_run or 20
    start = time.perf_counter()
    rows = [
        simulate_iid(g, cfg, candidates, per_run, args.sigma, args.seed, args.parent_runs)
        for g in GAINS_SIGMA
    ]
    if args.json:
        print(json.dumps(rows))
        return
    parent = f"a kept proposal run {args.parent_runs} times" if args.parent_runs else "the baseline"
    noise = "known sigma" if cfg.known_sigma_bpb else "pooled sigma"
    print(
        f"{candidates} candidates per gain, {per_run} per simulated run, against {parent}; noise_seeds "
        f"{cfg.noise_seeds}, alpha {cfg.alpha}, max_runs {cfg.max_runs}, {noise}; "
        f"{time.perf_counter() - start:.1f} s\n"
    )
    print("| true gain | promoted | mean runs per candidate |\n|---|---|---|")
    for r in rows:
        print(f"| {r['gain_sigma']:g} σ | {r['promotion_rate']:.1%} | {r['mean_runs']:.2f} |")
    null, at2, runs = rows[0], rows[GAINS_SIGMA.index(2.0)], max(r["mean_runs"] for r in rows)
    print(
        f"\ngoals: null promoted {null['promotion_rate']:.1%} (<= {IID_GOALS[0]:.0%}), 2 σ promoted "
        f"{at2['promotion_rate']:.1%} (>= {IID_GOALS[1]:.0%}), at most {runs:.2f} runs per candidate on "
        f"average (<= {IID_GOALS[2]:g})"
    )


def goals(row: dict) -> dict[str, dict]:
    """The paired design's goals on one row: each figure, its limit, and whether it is met."""
    out = {}
    for name, gain, key, at_most, limit in GOALS:
        value = row["gains"][f"{gain:g}"][key]
        out[name] = {"value": value, "limit": limit, "pass": value <= limit if at_most else value >= limit}
    return out


def night_rows(args: argparse.Namespace, cfg: AcceptanceConfig) -> list[dict]:
    scenarios = [(d, args.f) for d in args.drifts] + ([("none", 0.0)] if args.f != 0 else [])
    rows = []
    for design in args.designs:
        for drift, f in scenarios:
            row = {"design": design, "drift": drift_label(drift), "f": f, "gains": {}}
            for g in NIGHT_GAINS:
                nights = args.nights if g == 0 else max(args.nights // 2, 1)
                if design == "current":
                    nights = max(nights // CURRENT_SHARE, 1)
                row["gains"][f"{g:g}"] = run_cell(
                    design, drift, f, g, cfg, nights, args.per_night, args.sigma, args.seed
                )
            if design == "paired":
                row["goals"] = goals(row)
            rows.append(row)
    return rows


def print_nights(rows: list[dict], args: argparse.Namespace, cfg: AcceptanceConfig, seconds: float) -> None:
    noise = "known sigma" if cfg.known_sigma_bpb else "pooled sigma"
    null, gain = args.nights, max(args.nights // 2, 1)
    print(
        f"nights per cell, all-null / each gain: paired {null} / {gain}, current {max(null // CURRENT_SHARE, 1)}"
        f" / {max(gain // CURRENT_SHARE, 1)}; {args.per_night} candidates a night, a promotion becomes the "
        f"next parent; drift over "
        f"{NIGHT_TRAININGS} trainings; noise_seeds {cfg.noise_seeds}, alpha {cfg.alpha}, max_runs "
        f"{cfg.max_runs}, {noise}; paired on 2 slots; seed {args.seed}; {seconds:.0f} s\n"
    )
    print(
        "| design | drift | f | false promotions per null (± SE) | nights with one | false / night "
        "| 1σ promoted | 2σ promoted | trainings per candidate (0 / 1σ / 2σ) |\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        null, one, two = (r["gains"][k] for k in ("0", "1", "2"))
        trainings = " / ".join(f"{r['gains'][k]['trainings_per_candidate']:.2f}" for k in ("0", "1", "2"))
        print(
            f"| {r['design']} | {r['drift']} | {r['f']:g} | {null['promoted']:.2%} ± {null['promoted_se']:.2%} "
            f"| {null['nights_with_any']:.0%} ± {null['nights_with_any_se']:.0%} | {null['per_night']:.2f} "
            f"| {one['promoted']:.1%} ± {one['promoted_se']:.1%} | {two['promoted']:.1%} ± {two['promoted_se']:.1%} "
            f"| {trainings} |"
        )
    paired_rows = [r for r in rows if "goals" in r]
    if not paired_rows:
        return
    heads = " | ".join(
        f"{name} {'≤' if at_most else '≥'} {limit:.0%}" for name, _, _, at_most, limit in GOALS
    )
    print(f"\ngoals, paired design:\n\n| drift | f | {heads} |\n|---|---|{'---|' * len(GOALS)}")
    for r in paired_rows:
        cells = " | ".join(
            f"{'pass' if g['pass'] else 'FAIL'} {g['value']:.{2 if g['limit'] < 0.05 else 1}%}"
            for g in r["goals"].values()
        )
        print(f"| {r['drift']} | {r['f']:g} | {cells} |")
    failed = [r for r in paired_rows if not all(g["pass"] for g in r["goals"].values())]
    print(
        f"\n{len(paired_rows) - len(failed)} of {len(paired_rows)} paired rows meet every goal"
        + "".join(
            f"; {r['drift']}, f = {r['f']:g} misses: "
            + ", ".join(name for name, g in r["goals"].items() if not g["pass"])
            for r in failed
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=300, help="all-null nights per cell (gain cells: half)")
    parser.add_argument("--per-night", type=int, default=50, help="candidates a night")
    parser.add_argument("--f", type=float, default=0.5, help="seed share of the noise (a row at f = 0 too)")
    parser.add_argument(
        "--designs", type=lambda s: s.split(","), default=list(DESIGNS), help="current,paired"
    )
    parser.add_argument("--drifts", type=lambda s: s.split(","), default=list(DRIFTS), help=",".join(DRIFTS))
    parser.add_argument(
        "--iid", action="store_true", help="the old bench: i.i.d. noise, against the baseline"
    )
    parser.add_argument("--candidates", type=int, help="--iid: simulated candidates per gain (4000)")
    parser.add_argument("--per-run", type=int, help="--iid: candidates per simulated run (20)")
    parser.add_argument(
        "--parent-runs", type=int, help="--iid: judge against a kept proposal measured this often"
    )
    parser.add_argument(
        "--sigma", type=float, default=0.002, help="seed noise (bpb); rates do not depend on it"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    for name, field in AcceptanceConfig.model_fields.items():  # any setting can be changed: --max-runs 4
        if field.annotation in (int, float):
            parser.add_argument(f"--{name.replace('_', '-')}", type=field.annotation, help=field.description)
    parser.add_argument("--known-sigma", action="store_true", help="give the rule sigma as known (a z-test)")
    args = parser.parse_args()
    for name, known in [(d, DESIGNS) for d in args.designs] + [(d, tuple(DRIFTS)) for d in args.drifts]:
        if name not in known:
            parser.error(f"unknown {name!r}: choose from {', '.join(known)}")
    overrides = {
        k: getattr(args, k) for k in AcceptanceConfig.model_fields if getattr(args, k, None) is not None
    }
    if args.known_sigma:
        overrides["known_sigma_bpb"] = args.sigma
    cfg = AcceptanceConfig(**overrides)
    if args.iid or args.candidates or args.per_run or args.parent_runs:
        main_iid(args, cfg)
        return
    start = time.perf_counter()
    rows = night_rows(args, cfg)
    if args.json:
        print(json.dumps(rows))
        return
    print_nights(rows, args, cfg, time.perf_counter() - start)


if __name__ == "__main__":
    main()
