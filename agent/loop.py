"""The experiment loop: proposer -> workspace (branch + commit) -> sandbox -> ledger -> next proposal.

One orchestrator thread owns the ledger and git refs. Sandboxed runs go to a pool of slots (GPU groups,
or one CPU slot), and the next proposal is prepared in the background while experiments train, so the
hardware does not wait for the LLM. Every experiment gets its ledger row before it trains, so a crash of
the loop leaves a visible row that `agentgolf run --resume` re-runs in place: nothing lost, nothing twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import git
from pydantic import BaseModel
from rich.console import Console

from agentgolf.agent import playbook
from agentgolf.agent.acceptance import judge, noise_sigma
from agentgolf.agent.digest import build_digest
from agentgolf.agent.live import LiveView
from agentgolf.agent.proposal import (
    Proposal,
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
from agentgolf.sandbox import slurm
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.result import DataSpec, SandboxResult, Status
from agentgolf.sandbox.runner import run_sandboxed

PROPOSERS = (playbook.NAME, "openai", "command")
INCONCLUSIVE = "inconclusive"
CONFIRMING = "confirming"  # looked better; a re-run with another seed is pending
INFRA_RETRIES = 2  # an infra error (the machine, not the idea) is retried this many times, uncharged
POLL_SECONDS = 0.5


class RunCaps(BaseModel):
    """When a run stops: whichever comes first."""

    experiments: int
    gpu_hours: float | None = None
    usd: float | None = None


class RunSummary(BaseModel):
    run_id: str
    experiments: int
    best_id: int | None
    best_bpb: float | None
    stop_reason: str


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


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


class Prepared(BaseModel):
    """A proposal committed on a detached worktree, waiting for a slot."""

    parent_id: int
    proposal: Proposal | None = None
    commit: str = ""
    error: str = ""
    usage: Usage = Usage()


class Loop:
    """One workspace's experiments: the repo, the ledger, the data and the budget they share."""

    def __init__(self, ws: Workspace, ledger: Ledger, budget: Budget, console: Console | None = None):
        self.ws = ws
        self.ledger = ledger
        self.budget = budget
        self.console = console or Console(stderr=True)
        self.repo = wt.open_repo(ws.root)
        self.data: DataSpec = ws.data_spec()
        self._data_hashes: dict[str, str] | None = None
        self.view = LiveView(self.console)
        self.stopping = threading.Event()  # set when the loop goes down: SLURM waits return, jobs live on

    # --- one experiment ---------------------------------------------------------------------------

    def trainer_source(self, commit: str) -> bytes:
        try:
            blob = self.repo.commit(commit).tree / self.ws.config.trainer
        except (KeyError, ValueError, git.BadName) as exc:
            raise AgentgolfError(f"commit {commit[:10]} has no {self.ws.config.trainer}") from exc
        return blob.data_stream.read()

    def prepare_run_dir(self, exp: Experiment, gpus: list[int] | None) -> tuple[Path, dict]:
        """Write the exact committed trainer into the run folder and record the manifest."""
        source = self.trainer_source(exp.commit_sha)
        run_dir = self.ws.run_dir(exp.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_gpt.py").write_bytes(source)
        if self._data_hashes is None:
            self._data_hashes = data_fingerprint(self.data, self.ws.state / "hashes.json")
        manifest = build_manifest(
            commit=exp.commit_sha,
            parent_commit=exp.parent_commit,
            trainer_source=source,
            data=self.data,
            data_hashes=self._data_hashes,
            seed=exp.seed if exp.seed is not None else self.ws.config.seed,
            env=dict(self.ws.config.trainer_env),
            budget=self.budget,
            gpus=gpus,
            proposer=exp.proposer,
            tokens=exp.tokens,
            usd=exp.usd,
        )
        self.ledger.update(exp.id, manifest=manifest)
        return run_dir, manifest

    def sandbox(self, exp: Experiment, gpus: list[int] | None) -> SandboxResult:
        """Runs in a worker thread: no ledger access here, only the sandbox."""
        run_dir = self.ws.run_dir(exp.id)
        pid_file = run_dir / "pids"

        def on_start(pid: int) -> None:
            with open(pid_file, "a") as f:
                f.write(f"{pid} {process_start_time(pid)}\n")

        seed = exp.seed if exp.seed is not None else self.ws.config.seed
        env = dict(self.ws.config.trainer_env)
        if self.ws.config.executor == "slurm":  # a new job, or this row's job from before a restart
            job = slurm.reusable_job(run_dir) or slurm.submit(
                run_dir / "train_gpt.py", run_dir, self.data, self.budget, env, seed, self.ws.config.slurm
            )
            return slurm.wait(job, run_dir, self.stopping)
        return run_sandboxed(
            run_dir / "train_gpt.py",
            run_dir,
            self.data,
            self.budget,
            env=env,
            seed=seed,
            gpus=gpus,
            on_start=on_start,
        )

    def record(self, exp: Experiment, result: SandboxResult, gpus: list[int] | None) -> Experiment:
        facts = slurm.queue_facts(self.ws.run_dir(exp.id))
        if facts:  # job id, node and queue wait (which never counts against the time budget)
            self.ledger.update(exp.id, manifest={**self.ledger.get(exp.id).manifest, **facts})
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
            gpu_seconds=result.wall_seconds * max(1, len(gpus or [])),
            isolation=result.isolation,
            trust=result.trust,
            log_tail=result.log_tail,
            finished_at=time.time(),
        )

    def execute(self, exp: Experiment, gpus: list[int] | None = None) -> Experiment:
        """Train and score one row now, in this thread (replay, and tests)."""
        gpus = gpus if gpus is not None else self.ws.config.gpus
        self.prepare_run_dir(exp, gpus)
        try:
            result = self.sandbox(exp, gpus)
        except KeyboardInterrupt:
            self.ledger.update(
                exp.id, status=INTERRUPTED, reason="interrupted by the user", finished_at=time.time()
            )
            raise
        return self.record(exp, result, gpus)

    # --- a run ------------------------------------------------------------------------------------

    def run(
        self,
        caps: RunCaps,
        proposer: str = playbook.NAME,
        *,
        resume: str | None = None,
        gpus_per_experiment: int | None = None,
    ) -> RunSummary:
        if caps.experiments < 1:
            raise AgentgolfError("--budget must be at least 1 (the first experiment is the baseline)")
        slots = self._slots(gpus_per_experiment)
        propose = make_proposer(proposer, self.ws)
        run = self._resume(resume) if resume else self._start(caps, proposer)
        self.console.print(
            f"[bold]run {run.id}[/] on {run.base_commit[:10]}: {caps.experiments} experiment(s), "
            f"proposer {proposer}, {len(slots)} slot(s)"
        )
        orchestrator = _Orchestrator(self, run, caps, propose, proposer, slots)
        try:
            with self.view:
                stop = orchestrator.drive()
        except KeyboardInterrupt:
            orchestrator.abandon("interrupted by the user")
            self.ledger.update_run(run.id, status="interrupted", stop_reason="interrupted by the user")
            raise
        except BaseException as exc:
            orchestrator.abandon(f"the loop stopped: {exc}")
            self.ledger.update_run(run.id, status="stopped", stop_reason=str(exc))
            raise
        self.ledger.update_run(run.id, status="finished", stop_reason=stop)
        best = orchestrator.best
        self.console.print(f"run {run.id} stopped: {stop}")
        return RunSummary(
            run_id=run.id,
            experiments=orchestrator.charged(),
            best_id=best.id if best else None,
            best_bpb=best.val_bpb if best else None,
            stop_reason=stop,
        )

    def _slots(self, per_experiment: int | None) -> list[list[int] | None]:
        if self.ws.config.executor == "slurm":  # SLURM places each job; we only bound how many are in flight
            return [None] * self.ws.config.slurm.max_concurrent
        gpus = self.ws.config.gpus
        if not gpus:
            return [None]
        k = per_experiment or len(gpus)
        if k < 1 or k > len(gpus) or len(gpus) % k:
            raise AgentgolfError(f"--gpus-per-experiment {k} must divide the {len(gpus)} configured GPU(s)")
        return [gpus[i : i + k] for i in range(0, len(gpus), k)]

    def _start(self, caps: RunCaps, proposer: str) -> Run:
        base = wt.head_commit(self.repo)
        self.trainer_source(base)  # fail early if the trainer is not committed
        run_id = new_run_id()
        while _run_exists(self.ledger, run_id):
            time.sleep(1)
            run_id = new_run_id()
        run = Run(
            id=run_id,
            created_at=time.time(),
            base_commit=base,
            settings={**caps.model_dump(), "proposer": proposer},
        )
        self.ledger.add_run(run)
        return run

    def _resume(self, run_id: str) -> Run:
        if run_id == "latest":
            runs = self.ledger.runs()
            if not runs:
                raise AgentgolfError("there is no run to resume")
            run_id = runs[-1].id
        run = self.ledger.get_run(run_id)
        for exp in self.ledger.experiments(run_id=run.id, status=RUNNING):
            if slurm.live_job(self.ws.run_dir(exp.id)):
                self.console.print(
                    f"#{exp.id} {exp.title}: its SLURM job is still queued or running; re-attaching"
                )
                continue
            killed = kill_leftovers(self.ws.run_dir(exp.id))
            note = f" (killed {killed} leftover process(es))" if killed else ""
            if exp.commit_sha:
                self.console.print(
                    f"#{exp.id} {exp.title} was in flight when the loop died: running it again{note}"
                )
                self.ledger.update(exp.id, reason="re-run after the loop was interrupted")
            else:
                self.ledger.update(
                    exp.id,
                    status=INTERRUPTED,
                    reason="the loop died before it was committed",
                    finished_at=time.time(),
                )
        self.ledger.update_run(run.id, status="running", stop_reason="")
        return run

    # --- replay -----------------------------------------------------------------------------------

    def replay(self, exp_id: int, seeds: int = 1) -> tuple[Experiment, list[Experiment], list[str]]:
        original = self.ledger.get(exp_id)
        if not original.commit_sha:
            raise AgentgolfError(f"experiment {exp_id} has no commit to replay (status {original.status})")
        if seeds < 1:
            raise AgentgolfError("--seeds must be at least 1")
        base_seed = original.seed if original.seed is not None else self.ws.config.seed
        copies = []
        for k in range(seeds):
            copy = self.remeasure(original, "replay", base_seed + k)
            copies.append(self.execute(copy))
        return original, copies, drift(original.manifest, copies[0].manifest)

    def remeasure(self, original: Experiment, kind: str, seed: int, title: str = "") -> Experiment:
        """A new row that measures the same commit again with another seed: replay, confirm or calibration."""
        return self.ledger.add_experiment(
            run_id=original.run_id,
            kind=kind,
            status=RUNNING,
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

    # --- helpers for the orchestrator ----------------------------------------------------------------

    def announce(self, exp: Experiment) -> Experiment:
        self.view.log(describe(exp))
        return exp

    def prepare_proposal(self, parent: Experiment, history: list[Experiment], propose: Proposer) -> Prepared:
        """Runs in the proposer thread: a detached worktree, the proposer's change, checks, one commit."""
        ctx = ProposalContext(
            source=self.trainer_source(parent.commit_sha).decode(),
            trainer=self.ws.config.trainer,
            parent=parent,
            history=history,
            digest=build_digest(history, parent),
            trainer_env=self.ws.config.trainer_env,
            budget=self.budget,
        )
        tree = self.ws.state / "worktrees" / f"pending-{parent.id}-{len(history)}"
        wt.add_worktree(self.repo, tree, None, parent.commit_sha)
        proposal = None
        try:
            proposal = propose(ctx, tree)
            if proposal is None:
                return Prepared(parent_id=parent.id)
            check_trainer(tree / self.ws.config.trainer, self.budget, self.ws.state / "import-check")
            commit = wt.commit_all(tree, proposal.commit_message())
            return Prepared(parent_id=parent.id, proposal=proposal, commit=commit, usage=proposal.usage)
        except ProposalError as exc:
            title = exc.title if len(exc.title) >= 3 else "(no usable proposal)"
            described = proposal or Proposal(title=title)
            return Prepared(
                parent_id=parent.id, proposal=described, error=str(exc), usage=exc.usage or described.usage
            )
        finally:
            wt.remove_worktree(self.repo, tree)

    def rebase(self, commit: str, parent_commit: str, onto: str) -> str | None:
        """Move a prepared change onto a newer best; None if it no longer applies cleanly."""
        return wt.rebase_change(
            self.repo, parent_commit, commit, onto, self.ws.state / "worktrees" / "rebase"
        )


class _Orchestrator:
    """The scheduling state of one run; every ledger write happens on the calling thread."""

    def __init__(self, loop: Loop, run: Run, caps: RunCaps, propose: Proposer, proposer: str, slots: list):
        self.loop, self.run, self.caps, self.propose, self.proposer = loop, run, caps, propose, proposer
        self.ledger = loop.ledger
        self.cfg = loop.ws.config.acceptance
        self.free = list(slots)
        self.running: dict[Future, tuple[Experiment, list[int] | None]] = {}
        self.pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="slot")
        self.proposer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proposer")
        self.pending: Future | None = None
        self.infra_retries: dict[int, int] = {}
        self.exhausted = False
        self.fatal = ""
        self.launched: set[int] = set()
        self._rows: list[Experiment] = []
        self._rows_at = -1
        self.best: Experiment | None = None

    # -- bookkeeping from the ledger (so resume needs no other state) --

    def rows(self) -> list[Experiment]:
        """This run's rows, re-read only after a write (this thread is the run's only writer)."""
        if self._rows_at != self.ledger.writes:
            self._rows = self.ledger.experiments(run_id=self.run.id)
            self._rows_at = self.ledger.writes
        return self._rows

    def charged(self) -> int:
        """Experiments that count against --budget: the baseline and every proposal, rejected ones too
        (so a proposer that only produces rejects still ends). Calibration and confirmation seeds are
        extra measurements of those and count only against the GPU-hour cap."""
        return sum(1 for e in self.rows() if e.kind in ("baseline", "proposal"))

    def spend(self) -> tuple[float, float]:
        rows = self.rows()
        return sum(e.gpu_seconds or 0.0 for e in rows) / 3600, sum(e.usd for e in rows)

    def calibration(self) -> list[Experiment]:
        return [e for e in self.rows() if e.kind in ("baseline", "calibration")]

    def samples(self, exp: Experiment) -> list[float]:
        """All scored measurements of the same commit in this run: the row and its confirmations."""
        return [
            e.val_bpb
            for e in self.rows()
            if e.val_bpb is not None
            and e.status in ("ok", INCONCLUSIVE, CONFIRMING)
            and (e.id == exp.id or (e.kind in ("confirm", "calibration") and e.replay_of == exp.id))
        ]

    def noise(self) -> tuple[float, int]:
        values = [e.val_bpb for e in self.calibration() if e.val_bpb is not None and e.status == "ok"]
        return noise_sigma(values, self.cfg.fallback_sigma_bpb), max(1, len(values) - 1)

    def current_best(self) -> Experiment | None:
        kept = [e for e in self.rows() if e.kept and e.kind in ("baseline", "proposal")]
        return kept[-1] if kept else None

    # -- the main loop --

    def drive(self) -> str:
        self.best = self.current_best()
        while True:
            stop = self._stop_reason()
            if not stop:
                self._schedule()
                stop = self._stop_reason()
            if not self.running and (stop or self.pending is None):
                self._wind_down(stop or "nothing left to schedule")
                return stop or "nothing left to schedule"
            self._wait()

    def _stop_reason(self) -> str:
        if self.fatal:
            return self.fatal
        gpu_hours, usd = self.spend()
        if self.caps.gpu_hours is not None and gpu_hours >= self.caps.gpu_hours:
            return f"GPU-hour cap reached ({gpu_hours:.2f} h)"
        if self.caps.usd is not None and usd >= self.caps.usd:
            return f"LLM dollar cap reached (${usd:.2f})"
        rows = self.rows()
        base = next((e for e in rows if e.kind == "baseline"), None)
        if base is not None and base.status not in (RUNNING, "ok"):
            return "the baseline did not produce a score; fix it before proposing changes"
        if any(e.status == CONFIRMING for e in rows):
            return ""  # a win waiting for its confirmation is finished before the run stops
        if any(e.status == RUNNING and e.commit_sha and e.id not in self.launched for e in rows):
            return ""  # rows left in flight by a dead loop (--resume) are finished before the run stops
        if self.charged() >= self.caps.experiments:
            return "budget spent"
        if self.exhausted:
            return f"the {self.proposer} proposer has nothing new to try"
        return ""

    def _schedule(self) -> None:
        while self.free:
            exp = self._next_measurement()
            if exp is None:
                break
            self._launch(exp)
        self._ensure_pending()

    def _next_measurement(self) -> Experiment | None:
        """What to train next: baseline, calibration seeds, confirmations, then a prepared proposal."""
        run, loop = self.run, self.loop
        for exp in self.rows():  # rows left running by a dead loop (--resume) are trained again, in place
            if exp.status == RUNNING and exp.commit_sha and exp.id not in self.launched:
                return exp
        base = next((e for e in self.rows() if e.kind == "baseline"), None)
        if base is None:
            base = self.ledger.add_experiment(
                run_id=run.id,
                kind="baseline",
                status=RUNNING,
                title="Baseline",
                hypothesis="The unmodified trainer: the reference every change is measured against.",
                proposer="baseline",
                commit_sha=run.base_commit,
                parent_commit=run.base_commit,
                seed=loop.ws.config.seed,
            )
            branch = wt.branch_name(run.id, base.id, "baseline")
            wt.set_branch(loop.repo, branch, run.base_commit)
            return self.ledger.update(base.id, branch=branch)
        seeds = self.calibration()
        if len(seeds) < self.cfg.noise_seeds:
            seed = loop.ws.config.seed + len(seeds)
            return loop.remeasure(base, "calibration", seed, title=f"Baseline, seed {seed}")
        if any(e.status == RUNNING for e in seeds) or base.status != "ok":
            return None  # acceptance needs the noise floor first
        for exp in self.rows():
            if exp.status == CONFIRMING and not self._confirmation_running(exp):
                done = len(self.samples(exp))
                seed = (exp.seed or loop.ws.config.seed) + 1000 * done
                return loop.remeasure(exp, "confirm", seed, title=f"{exp.title} (confirmation)")
        if self.charged() >= self.caps.experiments:
            return None
        return self._take_prepared()

    def _confirmation_running(self, exp: Experiment) -> bool:
        return any(e.kind == "confirm" and e.replay_of == exp.id and e.status == RUNNING for e in self.rows())

    def _ensure_pending(self) -> None:
        if self.pending is not None or self.exhausted or self.best is None:
            return
        if self.charged() >= self.caps.experiments:
            return
        if len(self.calibration()) < self.cfg.noise_seeds:
            return
        history = self.ledger.experiments()
        self.pending = self.proposer_pool.submit(self.loop.prepare_proposal, self.best, history, self.propose)

    def _take_prepared(self) -> Experiment | None:
        if self.pending is None or not self.pending.done():
            return None
        future, self.pending = self.pending, None
        try:
            prepared: Prepared = future.result()
        except AgentgolfError as exc:  # e.g. the LLM endpoint is down for good: finish what runs, then stop
            self.fatal = f"proposer failed: {exc}"
            return None
        if prepared.proposal is None:
            self.exhausted = True
            return None
        if not prepared.error and self.best is not None and prepared.parent_id != self.best.id:
            # The best moved on while this was prepared: carry the change over if it still applies.
            old_parent = self.ledger.get(prepared.parent_id)
            moved = self.loop.rebase(prepared.commit, old_parent.commit_sha, self.best.commit_sha)
            if moved is not None:
                prepared = prepared.model_copy(update={"commit": moved, "parent_id": self.best.id})
        return self._register(prepared)

    def _register(self, prepared: Prepared) -> Experiment | None:
        loop, run, proposal = self.loop, self.run, prepared.proposal
        parent = self.ledger.get(prepared.parent_id)
        exp = self.ledger.add_experiment(
            run_id=run.id,
            kind="proposal",
            status=RUNNING,
            parent_id=parent.id,
            parent_commit=parent.commit_sha,
            title=proposal.title,
            hypothesis=proposal.hypothesis,
            category=proposal.category,
            proposer=self.proposer,
            seed=loop.ws.config.seed,
            tokens=prepared.usage.prompt_tokens + prepared.usage.completion_tokens,
            usd=prepared.usage.usd,
        )
        reason = prepared.error
        if not reason:
            branch = wt.branch_name(run.id, exp.id, proposal.title)
            wt.set_branch(loop.repo, branch, prepared.commit)
            change = diff_fingerprint(wt.diff(loop.repo, parent.commit_sha, prepared.commit))
            exp = self.ledger.update(exp.id, branch=branch, commit_sha=prepared.commit, fingerprint=change)
            if prepared.commit == parent.commit_sha:
                reason = "the proposal changed nothing"
            else:
                repeat = next(
                    (
                        e
                        for e in self.ledger.experiments()
                        if e.id != exp.id
                        and e.kind == "proposal"
                        and e.fingerprint == change
                        and e.status != "infra_error"
                    ),
                    None,
                )
                if repeat is not None:
                    reason = f"repeat of experiment {repeat.id} ({repeat.title}): same change"
        if reason:
            loop.announce(self.ledger.update(exp.id, status=REJECTED, reason=reason, finished_at=time.time()))
            return None
        return exp

    def _launch(self, exp: Experiment) -> None:
        gpus = self.free.pop(0)
        self.launched.add(exp.id)
        self.loop.prepare_run_dir(exp, gpus)
        self.loop.view.started(exp)
        self.running[self.pool.submit(self.loop.sandbox, exp, gpus)] = (exp, gpus)

    def _wait(self) -> None:
        futures = list(self.running)
        # A finished proposal waits for a slot; only an unfinished one may wake us (else: a busy loop).
        if self.pending is not None and not self.pending.done():
            futures.append(self.pending)
        done, _ = wait(futures, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        for future in done:
            if future is self.pending:
                continue  # picked up by _schedule
            exp, gpus = self.running.pop(future)
            self.free.append(gpus)
            self.loop.view.finished(exp)
            try:
                result = future.result()
            except Exception as exc:  # a harness bug or a machine failure: the idea is not charged
                result = SandboxResult(status=Status.infra_error, reason=f"harness error: {exc}")
            self._finish(exp, result, gpus)
        self.loop.view.refresh(self)

    def _finish(self, exp: Experiment, result: SandboxResult, gpus: list[int] | None) -> None:
        loop = self.loop
        if result.status is Status.infra_error and self.infra_retries.get(exp.id, 0) < INFRA_RETRIES:
            self.infra_retries[exp.id] = self.infra_retries.get(exp.id, 0) + 1
            self.ledger.update(exp.id, reason=f"infra error, retrying: {result.reason}")
            loop.view.log(f"#{exp.id} infra error ({result.reason}); retrying without charging the idea")
            self.free.remove(gpus)
            self._launch(exp)
            return
        exp = loop.record(exp, result, gpus)
        if exp.kind == "baseline":
            if exp.status == "ok":
                exp = self.ledger.update(exp.id, kept=True)
                wt.set_branch(loop.repo, wt.best_branch(self.run.id), exp.commit_sha)
                self.best = exp
            loop.announce(exp)
        elif exp.kind == "calibration":
            loop.announce(exp)
        elif exp.kind in ("proposal", "confirm"):
            target = self.ledger.get(exp.replay_of) if exp.kind == "confirm" else exp
            if exp.kind == "confirm":
                loop.announce(exp)
            if target.status in ("ok", CONFIRMING) and exp.status == "ok":
                self._decide(target)
            elif exp.kind == "confirm":  # the confirmation itself failed: the win is not confirmed
                self.ledger.update(
                    target.id, status=INCONCLUSIVE, reason=f"confirmation run failed: {exp.status}"
                )
                loop.announce(self.ledger.get(target.id))
            else:
                loop.announce(exp)

    def _decide(self, exp: Experiment) -> None:
        loop = self.loop
        parent = self.ledger.get(exp.parent_id)
        parent_samples = self.samples(parent)
        sigma, dof = self.noise()
        verdict = judge(self.samples(exp), parent_samples, sigma, dof, self.cfg)
        if verdict.decision == "confirm":
            loop.announce(self.ledger.update(exp.id, status=CONFIRMING, reason=verdict.reason))
            return
        if verdict.decision == "promote":
            if self.best is not None and parent.id != self.best.id:
                reason = f"{verdict.reason}, but the best moved on to experiment {self.best.id} meanwhile"
                loop.announce(self.ledger.update(exp.id, status=INCONCLUSIVE, reason=reason))
                return
            exp = self.ledger.update(exp.id, status="ok", kept=True, reason=verdict.reason)
            wt.set_branch(loop.repo, wt.best_branch(self.run.id), exp.commit_sha)
            self.best = exp
            loop.announce(exp)
            return
        status = INCONCLUSIVE if verdict.decision == "inconclusive" else "ok"
        loop.announce(self.ledger.update(exp.id, status=status, reason=verdict.reason))

    def _wind_down(self, reason: str) -> None:
        """A prepared proposal that never ran is dropped (nothing charged); an unconfirmed win stays unconfirmed."""
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        for exp in self.rows():
            if exp.status == CONFIRMING:
                self.ledger.update(
                    exp.id, status=INCONCLUSIVE, reason=f"not confirmed: the run stopped ({reason})"
                )
        self.pool.shutdown(wait=True)
        self.proposer_pool.shutdown(wait=False, cancel_futures=True)

    def abandon(self, reason: str) -> None:
        """The loop is going down: stop the sandboxes and leave their rows `running` for --resume."""
        self.loop.stopping.set()
        for exp, _ in self.running.values():
            self.ledger.update(exp.id, reason=f"in flight when {reason}")
            if not (self.loop.ws.run_dir(exp.id) / slurm.JOB_FILE).exists():  # cluster jobs outlive the loop
                kill_leftovers(self.loop.ws.run_dir(exp.id))
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.proposer_pool.shutdown(wait=False, cancel_futures=True)


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a pid: with the pid it identifies one process, even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def kill_leftovers(run_dir: Path) -> int:
    """Kill the phase processes recorded for a run folder (pid + start time) that are still alive."""
    pid_file = run_dir / "pids"
    if not pid_file.is_file():
        return 0
    killed = 0
    for line in pid_file.read_text().splitlines():
        pid, started = int(line.split()[0]), line.split()[1]
        if process_start_time(pid) != started:
            continue  # gone, or the pid now belongs to someone else
        try:
            os.killpg(pid, signal.SIGKILL)  # phases lead their own process group
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
        killed += 1
    pid_file.unlink()
    return killed


def cancel_run(ws: Workspace, ledger: Ledger, run_id: str) -> list[int]:
    """Cancel a run's experiments in flight (SLURM jobs and local phases) and mark them; returns their ids."""
    cancelled = []
    for exp in ledger.experiments(run_id=run_id, status=RUNNING):
        run_dir = ws.run_dir(exp.id)
        job = slurm.live_job(run_dir)
        if job:
            slurm.cancel([job])
        else:
            kill_leftovers(run_dir)
        ledger.update(exp.id, status=INTERRUPTED, reason="cancelled by the user", finished_at=time.time())
        cancelled.append(exp.id)
    if cancelled or ledger.get_run(run_id).status == "running":  # a finished run stays finished
        ledger.update_run(run_id, status="cancelled", stop_reason="cancelled by the user")
    return cancelled


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
    colour = {"ok": "green", "rejected": "yellow", INCONCLUSIVE: "yellow", CONFIRMING: "cyan"}.get(
        exp.status, "red"
    )
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
