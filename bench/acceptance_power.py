"""How often the acceptance rule promotes a change, and how many runs it spends, for a known true gain.

    python bench/acceptance_power.py [--candidates 4000] [--per-run 20] [--json] [settings...]

The loop's own decision code (`acceptance.decide`) judges simulated ledger rows, the way the scheduler
does: each simulated run starts with the baseline and its calibration seeds (`noise_seeds` runs in all),
then its candidates come one after another. A candidate's first run is a proposal row; while the verdict
is "confirm" a confirmation row with a fresh seed is added and the rule asks again. Every row stays in
the run, so the pooled noise estimate grows as it would overnight. Scores are the parent's true val_bpb
minus the true gain, plus Gaussian seed noise of sigma.

Simplification: every candidate is judged against the baseline (a promotion does not move the parent),
so each row of the table is the rule's behaviour for that gain against a parent measured `noise_seeds`
times; `--parent-runs N` judges them against a kept proposal measured N times instead.
Prints the promotion rate and the mean runs per candidate for gains of 0, 0.5, 1, 2 and 3 sigma;
`--json` prints [{"gain_sigma": g, "promotion_rate": p, "mean_runs": r}, ...].
"""

from __future__ import annotations

import argparse
import json
import random
import time

from agentgolf.agent.acceptance import ROW_STATUS, AcceptanceConfig, decide
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus

GAINS_SIGMA = (0.0, 0.5, 1.0, 2.0, 3.0)
TRUE_PARENT_BPB = 1.2
# The goals under the default settings (issue 12).
MAX_NULL_PROMOTIONS = 0.01
MIN_POWER_AT_2_SIGMA = 0.80
MAX_MEAN_RUNS = 3.0


class Run:
    """One simulated run's ledger rows, in memory."""

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


def simulate(
    gain_sigma: float,
    cfg: AcceptanceConfig,
    candidates: int,
    per_run: int,
    sigma: float,
    seed: int,
    parent_runs: int | None = None,
) -> dict[str, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=4000, help="simulated candidates per gain")
    parser.add_argument("--per-run", type=int, default=20, help="candidates per simulated run")
    parser.add_argument(
        "--sigma", type=float, default=0.002, help="seed noise (bpb); rates do not depend on it"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parent-runs", type=int, help="judge against a kept proposal measured this often")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    for name, field in AcceptanceConfig.model_fields.items():  # any setting can be changed: --max-runs 4
        if field.annotation in (int, float):
            parser.add_argument(f"--{name.replace('_', '-')}", type=field.annotation, help=field.description)
    parser.add_argument("--known-sigma", action="store_true", help="give the rule sigma as known (a z-test)")
    args = parser.parse_args()
    overrides = {
        k: getattr(args, k) for k in AcceptanceConfig.model_fields if getattr(args, k, None) is not None
    }
    if args.known_sigma:
        overrides["known_sigma_bpb"] = args.sigma
    cfg = AcceptanceConfig(**overrides)

    start = time.perf_counter()
    rows = [
        simulate(g, cfg, args.candidates, args.per_run, args.sigma, args.seed, args.parent_runs)
        for g in GAINS_SIGMA
    ]
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps(rows))
        return
    parent = f"a kept proposal run {args.parent_runs} times" if args.parent_runs else "the baseline"
    noise = "known sigma" if cfg.known_sigma_bpb else "pooled sigma"
    print(
        f"{args.candidates} candidates per gain, {args.per_run} per simulated run, against {parent}; "
        f"noise_seeds {cfg.noise_seeds}, alpha {cfg.alpha}, max_runs {cfg.max_runs}, {noise}; {seconds:.1f} s"
    )
    print()
    print("| true gain | promoted | mean runs per candidate |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['gain_sigma']:g} σ | {r['promotion_rate']:.1%} | {r['mean_runs']:.2f} |")
    null, at2 = rows[0], rows[GAINS_SIGMA.index(2.0)]
    runs = max(r["mean_runs"] for r in rows)
    print()
    print(
        f"goals: null promoted {null['promotion_rate']:.1%} (<= {MAX_NULL_PROMOTIONS:.0%}), "
        f"2 σ promoted {at2['promotion_rate']:.1%} (>= {MIN_POWER_AT_2_SIGMA:.0%}), "
        f"at most {runs:.2f} runs per candidate on average (<= {MAX_MEAN_RUNS:g})"
    )


if __name__ == "__main__":
    main()
