"""The experiment loop: proposer -> workspace (branch + commit) -> sandbox -> ledger -> next proposal.

Every experiment gets its ledger row before anything runs, so a crash of the loop leaves a visible
`running` row, never a silent gap. What is trained and scored is always the exact committed file.
"""

from __future__ import annotations

import time

import git
from pydantic import BaseModel
from rich.console import Console

from agentgolf.agent import playbook
from agentgolf.agent.digest import build_digest
from agentgolf.agent.proposal import (
    ProposalContext,
    ProposalError,
    Proposer,
    Usage,
    check_trainer,
    diff_fingerprint,
)
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.errors import AgentgolfError
from agentgolf.experiments.ledger import INTERRUPTED, REJECTED, RUNNING, Experiment, Ledger, Run
from agentgolf.experiments.manifest import build_manifest, data_fingerprint, drift
from agentgolf.experiments.workspace import Workspace
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.result import DataSpec, SandboxResult, Status
from agentgolf.sandbox.runner import run_sandboxed

PROPOSERS = (playbook.NAME, "openai", "command")


def make_proposer(name: str, ws: Workspace) -> Proposer:
    """The proposer named on the command line, configured from the workspace."""
    if name == playbook.NAME:
        return playbook.proposer
    if name == "openai":
        from agentgolf.agent.llm import LLMProposer

        return LLMProposer(ws.config.llm)
    if name == "command":
        from agentgolf.agent.command import CommandProposer

        return CommandProposer(ws.config.command)
    raise AgentgolfError(f"unknown proposer {name!r}; available: {', '.join(PROPOSERS)}")


class RunSummary(BaseModel):
    run_id: str
    experiments: int
    best_id: int | None
    best_bpb: float | None
    stop_reason: str


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


class Loop:
    """One run's state: the repo, the ledger, the data and the budget every experiment shares."""

    def __init__(self, ws: Workspace, ledger: Ledger, budget: Budget, console: Console | None = None):
        self.ws = ws
        self.ledger = ledger
        self.budget = budget
        self.console = console or Console(stderr=True)
        self.repo = wt.open_repo(ws.root)
        self.data: DataSpec = ws.data_spec()
        self._data_hashes: dict[str, str] | None = None

    # --- one experiment ---------------------------------------------------------------------------

    def trainer_source(self, commit: str) -> bytes:
        try:
            blob = self.repo.commit(commit).tree / self.ws.config.trainer
        except (KeyError, ValueError, git.BadName) as exc:
            raise AgentgolfError(f"commit {commit[:10]} has no {self.ws.config.trainer}") from exc
        return blob.data_stream.read()

    def execute(self, exp: Experiment) -> Experiment:
        """Train and score the committed trainer of `exp` in the sandbox and record the result."""
        source = self.trainer_source(exp.commit_sha)
        run_dir = self.ws.run_dir(exp.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        trainer = run_dir / "train_gpt.py"
        trainer.write_bytes(source)
        if self._data_hashes is None:
            self._data_hashes = data_fingerprint(self.data, self.ws.state / "hashes.json")
        env = dict(self.ws.config.trainer_env)
        manifest = build_manifest(
            commit=exp.commit_sha,
            parent_commit=exp.parent_commit,
            trainer_source=source,
            data=self.data,
            data_hashes=self._data_hashes,
            seed=exp.seed if exp.seed is not None else self.ws.config.seed,
            env=env,
            budget=self.budget,
            gpus=self.ws.config.gpus,
            proposer=exp.proposer,
        )
        self.ledger.update(exp.id, manifest=manifest)
        try:
            result = run_sandboxed(
                trainer,
                run_dir,
                self.data,
                self.budget,
                env=env,
                seed=manifest["seed"],
                gpus=self.ws.config.gpus,
            )
        except KeyboardInterrupt:
            self.ledger.update(
                exp.id, status=INTERRUPTED, reason="interrupted by the user", finished_at=time.time()
            )
            raise
        return self.record(exp, result)

    def record(self, exp: Experiment, result: SandboxResult) -> Experiment:
        parent = self.ledger.get(exp.parent_id) if exp.parent_id else None
        delta = None
        if result.val_bpb is not None and parent is not None and parent.val_bpb is not None:
            delta = result.val_bpb - parent.val_bpb
        return self.ledger.update(
            exp.id,
            status=result.status.value,
            reason=result.reason,
            val_bpb=result.val_bpb,
            val_loss=result.val_loss,
            self_val_bpb=result.self_val_bpb,
            delta_bpb=delta,
            artifact_bytes=result.artifact_bytes,
            train_seconds=result.train_seconds,
            wall_seconds=result.wall_seconds,
            isolation=result.isolation,
            trust=result.trust,
            log_tail=result.log_tail,
            finished_at=time.time(),
        )

    # --- a run ------------------------------------------------------------------------------------

    def run(self, n: int, proposer: str = playbook.NAME) -> RunSummary:
        if n < 1:
            raise AgentgolfError("--budget must be at least 1 (the first experiment is the baseline)")
        propose = make_proposer(proposer, self.ws)
        base = wt.head_commit(self.repo)
        self.trainer_source(base)  # fail early if the trainer is not committed
        run_id = new_run_id()
        while _run_exists(self.ledger, run_id):
            time.sleep(1)
            run_id = new_run_id()
        self.ledger.add_run(
            Run(
                id=run_id,
                created_at=time.time(),
                base_commit=base,
                settings={"budget": n, "proposer": proposer},
            )
        )
        self.console.print(f"[bold]run {run_id}[/] on {base[:10]}: {n} experiment(s), proposer {proposer}")
        stop = "budget spent"
        done = 0
        try:
            best = self._baseline(run_id, base)
            done = 1
            while done < n:
                if best is None:
                    stop = "the baseline did not produce a score; fix it before proposing changes"
                    break
                exp = self._propose_and_run(run_id, best, propose, proposer)
                if exp is None:
                    stop = f"the {proposer} proposer has nothing new to try"
                    break
                done += 1
                if exp.kept:
                    best = exp
        except KeyboardInterrupt:
            self.ledger.update_run(run_id, status="interrupted", stop_reason="interrupted by the user")
            raise
        self.ledger.update_run(run_id, status="finished", stop_reason=stop)
        self.console.print(f"run {run_id} stopped: {stop}")
        return RunSummary(
            run_id=run_id,
            experiments=done,
            best_id=best.id if best else None,
            best_bpb=best.val_bpb if best else None,
            stop_reason=stop,
        )

    def _baseline(self, run_id: str, base: str) -> Experiment | None:
        exp = self.ledger.add_experiment(
            run_id=run_id,
            kind="baseline",
            status=RUNNING,
            title="Baseline",
            hypothesis="The unmodified trainer: the reference every change is measured against.",
            proposer="baseline",
            commit_sha=base,
            parent_commit=base,
            seed=self.ws.config.seed,
        )
        branch = wt.branch_name(run_id, exp.id, "baseline")
        wt.set_branch(self.repo, branch, base)
        exp = self.ledger.update(exp.id, branch=branch)
        exp = self._announce(self.execute(exp))
        if exp.status != Status.ok.value:
            return None
        exp = self.ledger.update(exp.id, kept=True)
        wt.set_branch(self.repo, wt.best_branch(run_id), base)
        return exp

    def _propose_and_run(
        self, run_id: str, parent: Experiment, propose: Proposer, proposer: str
    ) -> Experiment | None:
        history = self.ledger.experiments()
        ctx = ProposalContext(
            source=self.trainer_source(parent.commit_sha).decode(),
            trainer=self.ws.config.trainer,
            parent=parent,
            history=history,
            digest=build_digest(history, parent),
            trainer_env=self.ws.config.trainer_env,
            budget=self.budget,
        )
        common = dict(run_id=run_id, kind="proposal", parent_id=parent.id, parent_commit=parent.commit_sha)
        common |= dict(proposer=proposer, seed=self.ws.config.seed)
        tree = wt.add_worktree(self.repo, self.ws.state / "worktrees" / "pending", None, parent.commit_sha)
        proposal = None
        try:
            try:
                proposal = propose(ctx, tree)
                if proposal is None:
                    return None
                check_trainer(tree / self.ws.config.trainer)
            except ProposalError as exc:
                usage = exc.usage or Usage()
                exp = self.ledger.add_experiment(
                    **common,
                    status=REJECTED,
                    title=exc.title
                    or (proposal.title if "proposal" in locals() and proposal else "(no usable proposal)"),
                    reason=str(exc),
                    tokens=usage.prompt_tokens + usage.completion_tokens,
                    usd=usage.usd,
                    finished_at=time.time(),
                )
                return self._announce(exp)
            exp = self.ledger.add_experiment(
                **common,
                status=RUNNING,
                title=proposal.title,
                hypothesis=proposal.hypothesis,
                category=proposal.category,
                tokens=proposal.usage.prompt_tokens + proposal.usage.completion_tokens,
                usd=proposal.usage.usd,
            )
            commit = wt.commit_all(tree, proposal.commit_message())
            branch = wt.branch_name(run_id, exp.id, proposal.title)
            wt.set_branch(self.repo, branch, commit)
            change = diff_fingerprint(wt.diff(self.repo, parent.commit_sha, commit))
            exp = self.ledger.update(exp.id, branch=branch, commit_sha=commit, fingerprint=change)
            reason = ""
            if commit == parent.commit_sha:
                reason = "the proposal changed nothing"
            elif (repeat := self._find_repeat(exp, history)) is not None:
                reason = f"repeat of experiment {repeat.id} ({repeat.title}): same change"
            if reason:
                return self._announce(
                    self.ledger.update(exp.id, status=REJECTED, reason=reason, finished_at=time.time())
                )
        finally:
            wt.remove_worktree(self.repo, tree)
        exp = self.execute(exp)
        threshold = self.ws.config.acceptance.min_delta_bpb
        if exp.status == Status.ok.value and exp.delta_bpb is not None and exp.delta_bpb < -threshold:
            exp = self.ledger.update(exp.id, kept=True)
            wt.set_branch(self.repo, wt.best_branch(run_id), exp.commit_sha)
        return self._announce(exp)

    def _find_repeat(self, exp: Experiment, history: list[Experiment]) -> Experiment | None:
        for other in history:
            if (
                other.fingerprint == exp.fingerprint
                and other.kind == "proposal"
                and other.status != "infra_error"
            ):
                return other
        return None

    def _announce(self, exp: Experiment) -> Experiment:
        self.console.print(describe(exp))
        return exp

    # --- replay -----------------------------------------------------------------------------------

    def replay(self, exp_id: int) -> tuple[Experiment, Experiment, list[str]]:
        original = self.ledger.get(exp_id)
        if not original.commit_sha:
            raise AgentgolfError(f"experiment {exp_id} has no commit to replay (status {original.status})")
        copy = self.ledger.add_experiment(
            run_id=original.run_id,
            kind="replay",
            status=RUNNING,
            parent_id=original.parent_id,
            parent_commit=original.parent_commit,
            commit_sha=original.commit_sha,
            branch=original.branch,
            title=original.title,
            hypothesis=original.hypothesis,
            category=original.category,
            proposer=original.proposer,
            seed=original.seed,
            replay_of=original.id,
        )
        copy = self.execute(copy)
        return original, copy, drift(original.manifest, copy.manifest)


def _run_exists(ledger: Ledger, run_id: str) -> bool:
    try:
        ledger.get_run(run_id)
    except AgentgolfError:
        return False
    return True


def describe(exp: Experiment) -> str:
    """One line per experiment, for the terminal."""
    bpb = f"val_bpb {exp.val_bpb:.4f}" if exp.val_bpb is not None else ""
    delta = f" (Δ {exp.delta_bpb:+.4f})" if exp.delta_bpb is not None else ""
    colour = {"ok": "green", "rejected": "yellow"}.get(exp.status, "red")
    kept = " [bold]kept[/]" if exp.kept and exp.kind == "proposal" else ""
    reason = f" — {exp.reason}" if exp.reason and exp.status != "ok" else ""
    return f"#{exp.id} {exp.title}: [{colour}]{exp.status}[/] {bpb}{delta}{kept}{reason}"


def workspace_budget(ws: Workspace, time_budget: float | None, size_budget: int | None) -> Budget:
    """The workspace's budget with the command line's overrides applied."""
    changes: dict[str, float | int] = {}
    if time_budget is not None:
        changes["train_seconds"] = time_budget
    if size_budget is not None:
        changes["size_bytes"] = size_budget
    try:
        return Budget.model_validate({**ws.config.budget.model_dump(), **changes})
    except ValueError as exc:
        raise AgentgolfError(f"invalid budget: {str(exc).splitlines()[-1].strip()}") from exc
