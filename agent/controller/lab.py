"""One experiment's lifecycle, shared by a run and by replay: trainer copy and manifest, sandbox, ledger row.

A `Lab` is what every experiment of a workspace shares: the repository, the ledger, the data, the
budget and the executor. It never decides anything (the scheduler and acceptance do); it only turns
a ledger row into a scored ledger row, and writes each fact the moment it is known.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import git

from agentgolf.agent.controller.executor import Executor, Slot, executor_for
from agentgolf.agent.judge import allowance, deltas
from agentgolf.agent.judge.fidelity import Rung, rung_budget, rung_env
from agentgolf.agent.proposers.proposal import ProposalError, check_trainer
from agentgolf.agent.tracking.hub import Tracking
from agentgolf.agent.trainer import data_gate
from agentgolf.challenge import TRAINER_FILE
from agentgolf.errors import AgentgolfError
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment, Ledger, Run
from agentgolf.experiments.manifest import build_manifest, data_fingerprint
from agentgolf.experiments.status import Kind, RowStatus
from agentgolf.experiments.steps import flag_steps
from agentgolf.sandbox.budget import Budget, Timing
from agentgolf.sandbox.isolation.compile_cache import CACHE_FOLDER, CompileCache
from agentgolf.sandbox.result import DataSpec, SandboxResult, Status

if TYPE_CHECKING:
    from agentgolf.agent.workspace import Workspace


class Lab:
    """The repo, the ledger, the data, the budget and the executor that a workspace's experiments share."""

    def __init__(self, ws: Workspace, ledger: Ledger, budget: Budget):
        self.ws = ws
        self.ledger = ledger
        self.budget = budget
        self.repo = wt.open_repo(ws.root)
        self.data: DataSpec = ws.data_spec()
        self.stopping = threading.Event()  # set when the loop goes down: SLURM waits return, jobs live on
        # the compile cache, built from the baseline's own training (sandbox/isolation/compile_cache.py)
        self.compile_cache = CompileCache(ws.state / CACHE_FOLDER)
        self.executor: Executor = executor_for(
            ws.config.executor, self.data, ws.config.slurm, self.stopping, ws.config.local, self.compile_cache
        )
        self._data_hashes: dict[str, str] | None = None
        self.measured: dict[str, allowance.Measured] = {}  # per rung, what its baseline runs measured
        self.budgets: dict[int, Budget] = {}  # each row's budget as launched: enforced and recorded alike
        self.tracking = Tracking(ws)  # the dashboards a run streams its experiments to (agent/tracking)

    def seed_of(self, exp: Experiment) -> int:
        return exp.seed if exp.seed is not None else self.ws.config.seed

    def trainer_source(self, commit: str) -> bytes:
        """The trainer as committed. A `git show` of its own, not GitPython's shared cat-file pipe: the
        proposer's thread reads sources while this one launches experiments, and that pipe is not thread-safe."""
        try:
            return self.repo.git.show(
                f"{commit}:{self.ws.config.trainer}", stdout_as_string=False, strip_newline_in_stdout=False
            )
        except git.GitCommandError as exc:
            raise AgentgolfError(f"commit {commit[:10]} has no {self.ws.config.trainer}") from exc

    def prepare_run_dir(self, exp: Experiment, slot: Slot) -> Path:
        """Write the exact committed trainer into the run folder and record the manifest."""
        source = self.trainer_source(exp.commit_sha)
        run_dir = self.ws.run_dir(exp.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / TRAINER_FILE).write_bytes(source)
        if self._data_hashes is None:
            self._data_hashes = data_fingerprint(self.data, self.ws.state / "hashes.json")
        self.budgets[exp.id] = self.budget_for(exp)
        manifest = build_manifest(
            commit=exp.commit_sha,
            parent_commit=exp.parent_commit,
            trainer_source=source,
            data=self.data,
            data_hashes=self._data_hashes,
            seed=self.seed_of(exp),
            env=self.env_for(exp),
            budget=self.budgets[exp.id],
            gpus=slot,
            proposer=exp.proposer,
            data_check=data_gate.manifest_entry(self.ws.state),  # the run's data check (a run's start)
            tokens=exp.tokens,
            usd=exp.usd,
        )
        kept = {k: v for k, v in self.ledger.get(exp.id).manifest.items() if k == "proposer_session"}
        self.ledger.update(exp.id, manifest={**manifest, **kept})  # how the proposer made it: kept
        self.tracking.started(exp, run_dir, self)
        return run_dir

    def sandbox(self, exp: Experiment, slot: Slot) -> SandboxResult:
        """Runs in a worker thread: no ledger access here, only the executor."""
        run_dir = self.ws.run_dir(exp.id)
        env, budget = self.env_for(exp), self.launch_budget(exp)
        if exp.kind == Kind.baseline:  # the unmodified trainer: trusted to build the compile cache
            self.compile_cache.trust(self.trainer_source(exp.commit_sha))
        return self.executor.run(run_dir / TRAINER_FILE, run_dir, self.seed_of(exp), env, slot, budget)

    def rung_of(self, exp: Experiment) -> Rung | None:
        """The screening rung that measures `exp`; None for the full budget."""
        screen = self.ws.config.fidelity.screen
        return screen if exp.rung and screen is not None and exp.rung == screen.name else None

    def budget_for(self, exp: Experiment) -> Budget:
        """`exp`'s rung's budget on the run's devices, its allowances from what the run's baseline runs measured
        on that rung (a baseline run itself: the kill limits only; agent/judge/allowance.py)."""
        budget = rung_budget(self.budget, self.rung_of(exp)).for_gpus(allowance.uses_gpus(self.ws.config))
        return allowance.judged(budget, exp, self.measured)

    def launch_budget(self, exp: Experiment) -> Budget:
        """The budget `exp` was launched under (its manifest's), else what it would get now. The allowances
        move as baseline seeds finish beside it: what was enforced must be what is recorded."""
        return self.budgets.get(exp.id) or self.budget_for(exp)

    def env_for(self, exp: Experiment) -> dict[str, str]:
        return rung_env(self.ws.config.trainer_env, self.rung_of(exp))

    def record(self, exp: Experiment, result: SandboxResult, slot: Slot) -> Experiment:
        # Where it ran (job id, node, queue wait), the eval mode it was scored by, and the cross-check's numbers;
        # its own timing too: a baseline's sets the allowances of the run's candidates (scheduler).
        facts = self.executor.facts(self.ws.run_dir(exp.id))
        facts |= {"eval": result.eval_mode, "verification": result.verification}
        facts |= {"train_allowed_seconds": self.launch_budget(exp).train_allowed_seconds}
        facts |= {"timing": Timing.of(result).model_dump()}
        facts |= {"clock": result.clock_facts()}  # the training clock (wall or CPU) and its CPU figures
        facts |= self._trainer_ran(exp, result)
        self.ledger.update(exp.id, manifest={**self.ledger.get(exp.id).manifest, **facts})
        parent = self.ledger.get(exp.parent_id) if exp.parent_id else None
        delta = None
        if result.val_bpb is not None and parent is not None:
            delta = self._delta(exp, parent, result.val_bpb)
        row = self.ledger.update(
            exp.id,
            status=result.status.value,
            reason=result.reason,
            val_bpb=result.val_bpb,
            val_loss=result.val_loss,
            self_val_bpb=result.self_val_bpb,
            delta_bpb=delta,
            artifact_bytes=result.artifact_bytes,
            train_seconds=result.train_seconds,
            steps=result.steps,
            step_ms=result.step_ms,
            init_hash=result.init_hash,
            val_tokens=result.val_tokens,
            wall_seconds=result.wall_seconds,
            gpu_seconds=result.wall_seconds * max(1, len(slot or []) or facts.get("slurm_gpus", 0)),
            isolation=result.isolation,
            trust=result.trust,
            log_tail=result.log_tail,
            finished_at=time.time(),
        )
        row = flag_steps(self.ledger, row)  # its steps beside its control's: flagged if far apart
        self.tracking.update(row)
        return row

    def _trainer_ran(self, exp: Experiment, result: SandboxResult) -> dict:
        """The sha256 of the trainer file the sandbox ran, checked against the commit's blob: another file (a
        formatter's or an editor's rewrite after the commit) makes the result the harness's failure, retried."""
        ran = result.trainer_sha256
        if ran is None or exp.commit_sha is None:
            return {}
        blob = hashlib.sha256(self.trainer_source(exp.commit_sha)).hexdigest()
        if ran != blob:
            result.status, result.val_bpb = Status.infra_error, None
            result.reason = f"the trainer that ran (sha256 {ran[:12]}) is not commit {exp.commit_sha[:10]}'s ({blob[:12]})"
        return {"trainer_ran_sha256": ran}

    def _delta(self, exp: Experiment, parent: Experiment, val_bpb: float) -> float | None:
        """Δ vs parent as `deltas` defines it, with this run's score as one of the row's runs: the paired
        mean difference once its control is scored, else the mean of its runs minus the mean of the parent's
        runs on the same rung. A row re-run in another run (a replay) reads its parent's run too."""
        fresh = exp.model_copy(update={"val_bpb": val_bpb, "status": RowStatus.ok})
        rows = self.ledger.experiments(run_id=exp.run_id)
        if parent.run_id is not None and parent.run_id != exp.run_id:
            rows += self.ledger.experiments(run_id=parent.run_id)
        return deltas.vs_parent(rows, fresh, parent)

    def execute(self, exp: Experiment, slot: Slot = None) -> Experiment:
        """Train and score one row now, in this thread (replay, and tests)."""
        slot = slot if slot is not None else self.ws.config.gpus
        self.prepare_run_dir(exp, slot)
        try:
            result = self.sandbox(exp, slot)
        except KeyboardInterrupt:
            self.ledger.update(
                exp.id,
                status=RowStatus.interrupted,
                reason="interrupted by the user",
                finished_at=time.time(),
            )
            raise
        return self.record(exp, result, slot)

    def add_baseline(self, run: Run) -> Experiment:
        """The run's first row: the unmodified trainer at its base commit, on a branch of its own."""
        base = self.ledger.add_experiment(
            run_id=run.id,
            kind=Kind.baseline,
            status=RowStatus.running,
            title="Baseline",
            hypothesis="The unmodified trainer: the reference every change is measured against.",
            proposer="baseline",
            commit_sha=run.base_commit,
            parent_commit=run.base_commit,
            seed=self.ws.config.seed,
        )
        branch = wt.branch_name(run.id, base.id, "baseline")
        wt.set_branch(self.repo, branch, run.base_commit)
        return self.ledger.update(base.id, branch=branch)

    def remeasure(
        self,
        original: Experiment,
        kind: Kind,
        seed: int,
        title: str = "",
        run_id: str | None = None,
        rung: str | None = None,
    ) -> Experiment:
        """A new row that measures the same commit again with another seed: replay, confirm or calibration;
        on the original's rung unless `rung` names another."""
        return self.ledger.add_experiment(
            rung=original.rung if rung is None else rung,
            run_id=run_id or original.run_id,
            kind=kind,
            status=RowStatus.running,
            parent_id=original.parent_id,
            parent_commit=original.parent_commit,
            commit_sha=original.commit_sha,
            branch=original.branch,
            title=title or original.title,
            hypothesis=original.hypothesis,
            category=original.category,
            proposer=original.proposer,
            seed=seed,
            replay_of=original.id,
        )

    def rebase(
        self, commit: str, parent_commit: str, onto: str, name: str = "rebase", repo: git.Repo | None = None
    ) -> Moved:
        """Move a whole change (every commit of `parent_commit..commit`) onto `onto`, then check the trainer
        it gives as a new proposal is checked (compiles, imports in the sandbox). Moved(new commit, "") or
        Moved("", why it cannot run there). `name` keeps concurrent calls apart; a thread other than the
        scheduler's passes its own `repo` (GitPython's object pipes are not thread-safe)."""
        repo = repo or self.repo
        moved = wt.rebase_change(repo, parent_commit, commit, onto, self.ws.state / "worktrees" / name)
        if moved is None:
            return Moved("", f"its change no longer applies to commit {onto[:10]} (a conflict)")
        if moved == commit:
            return Moved(moved, "")  # nothing moved: checked when it was made
        if not wt.diff(repo, onto, moved):
            return Moved("", f"commit {onto[:10]} already holds the same change")
        try:
            self.check(moved, name)
        except ProposalError as exc:
            return Moved("", f"its change, moved onto commit {onto[:10]}, fails the check: {exc}")
        return Moved(moved, "")

    def check(self, commit: str, name: str = "check") -> None:
        """`check_trainer` on the trainer as committed in `commit`; raises ProposalError if it fails."""
        source = self.ws.state / "checks" / name
        source.mkdir(parents=True, exist_ok=True)
        try:
            trainer = source / Path(self.ws.config.trainer).name
            trainer.write_bytes(self.trainer_source(commit))
            check_trainer(trainer, self.budget, self.ws.state / "import-check" / name)
        finally:
            shutil.rmtree(source, ignore_errors=True)
            shutil.rmtree(self.ws.state / "import-check" / name, ignore_errors=True)


class Moved(NamedTuple):
    """A change moved onto another commit: the new commit, or "" and why it cannot run there."""

    commit: str
    reason: str
