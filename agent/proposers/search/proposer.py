"""The offline proposer: a search over the trainer's knobs and the leaderboard's techniques, rebuilt from
the ledger on every proposal, so a resumed run needs no state of its own.

Every past experiment whose config can be read (trials.py) becomes a trial of an in-memory Optuna study.
On top of the current best it proposes, in order: the playbook's single moves; each technique alone;
once, the gains that beat their parent but were not kept, combined; then TPE, a few knobs at a time
around the best, with what was kept already in the parent. Failed runs go in with a penalized score
(the worst completed score plus `failure_penalty_bpb`) rather than as FAIL trials, which TPE ignores:
a region that crashes or overflows the budget then counts as bad and is sampled less, instead of being
proposed again. A config whose predicted artifact is over the size limit is never proposed
(artifact_size.py), nor one the ledger already holds.
"""

from __future__ import annotations

import functools
import random
import subprocess
import threading
import warnings
from pathlib import Path

from pydantic import BaseModel, Field

from agentgolf.agent.proposers.knobs import apply_in_memory, set_edits, value_in_force
from agentgolf.agent.proposers.proposal import Proposal, ProposalContext, ProposalError
from agentgolf.agent.proposers.search import artifact_size, space
from agentgolf.agent.proposers.search.space import TECHNIQUE_PREFIX, Config
from agentgolf.agent.proposers.search.trials import COMPLETED, Evidence, Point, gather, patched

NAME = "search"
ALIASES = ("playbook",)  # the fixed list this search replaced; old workspaces name it in config.json


class SearchConfig(BaseModel):
    """How the offline search proposes; every number here changes which configs it tries."""

    startup_trials: int = Field(10, ge=1, description="completed trials before TPE models (random before)")
    failure_penalty_bpb: float = Field(
        0.1, ge=0, description="a failed run scores the worst completed + this"
    )
    float_digits: int = Field(3, ge=1, le=6, description="significant digits a float knob is written with")
    max_asks: int = Field(200, ge=1, description="TPE samples tried per proposal before giving up")
    accum_seqs: int = Field(8, ge=1, description="TRAIN_BATCH_TOKENS must split into this x TRAIN_SEQ_LEN")
    default_bytes_ratio: float = Field(
        1.0, gt=0, description="stored model bytes per counted byte before any run has recorded its size"
    )
    subspace_knobs: int = Field(
        3, ge=0, description="knobs one TPE proposal moves, drawn at random, the rest stay the best's; 0: all"
    )
    shown_changes: int = Field(3, ge=1, description="changed knobs a hypothesis explains")


class Candidate(BaseModel):
    source: str
    config: Config
    changed: dict[str, float | int]  # knob -> new value, what `set` records
    added: list[str]  # techniques patched in
    size: int


class Refusal(BaseModel):
    """Why a target config is not proposed; an oversize one still teaches the study this proposal."""

    reason: str
    oversize: bool = False


class SearchProposer:
    """The proposer of one run: writes the chosen config's trainer into the worktree and describes it.

    Proposals may be prepared several at once from the same ledger, so under a lock it remembers what it
    handed out until the rows are in the ledger; everything else comes from the ledger each time."""

    def __init__(self, config: SearchConfig, seed: int):
        self.config, self.seed = config, seed
        self.lock = threading.Lock()
        self.taken: set[tuple] = set()
        self.taken_titles: set[str] = set()

    def __call__(self, ctx: ProposalContext, tree: Path) -> Proposal | None:
        with self.lock:
            found = propose(ctx, self.config, self.seed, self.taken, self.taken_titles)
            if found is None:
                return None
            proposal, candidate = found
            self.taken.add(space.key(candidate.config))
            self.taken_titles.add(proposal.title)
        (tree / ctx.trainer).write_text(candidate.source)
        return proposal


def propose(
    ctx: ProposalContext,
    cfg: SearchConfig,
    seed: int,
    taken: set[tuple] | None = None,
    taken_titles: set[str] | None = None,
) -> tuple[Proposal, Candidate] | None:
    """The next config to try and the trainer that runs it; None when nothing new fits. `taken`: configs
    (and titles) already handed out that the ledger does not hold yet."""
    g = gather(ctx, (NAME, *ALIASES), cfg.default_bytes_ratio, _source_at)
    g.taken, g.done_titles = set(taken or ()), g.done_titles | set(taken_titles or ())
    for number, move in enumerate(space.LIBRARY, 1):
        if move.title in g.done_titles or any(k not in g.base_config for k in (*move.scale, *move.set)):
            continue
        target = dict(g.parent.config)
        target.update({k: float(g.parent.config[k]) * f for k, f in move.scale.items()})
        target.update(move.set)
        found = _realize(g, target, cfg)
        if isinstance(found, Candidate):
            why = f"Playbook move {number}/{len(space.LIBRARY)}, tried first as a single change: {move.hypothesis}"
            return _proposal(g, found, move.title, move.category, why, cfg), found
    for number, t in enumerate(g.techniques, 1):
        flag = TECHNIQUE_PREFIX + t.name
        if t.title in g.done_titles or g.parent.config.get(flag):
            continue
        found = _realize(g, {**g.parent.config, flag: True}, cfg)
        if isinstance(found, Candidate):
            why = f"Technique {number}/{len(g.techniques)}, alone: {t.hypothesis} Reported: {t.reported_effect}."
            return _proposal(g, found, t.title, t.category, why, cfg), found
    return _combined(g, cfg) or _from_tpe(g, cfg, seed + len(ctx.history))


def _combined(g: Evidence, cfg: SearchConfig) -> tuple[Proposal, Candidate] | None:
    """The changes that beat their own parent but were not kept (inconclusive, or overtaken), all at once
    on the best: small gains that were each within the noise may add up. Where two set the same knob,
    the better-scoring row's value wins."""
    by_id, chain, at = g.by_id, set(), g.parent
    while at is not None and at.id not in chain:
        chain.add(at.id)
        at = by_id.get(at.parent_id) if at.parent_id is not None else None
    better = []
    for p in g.points:
        parent = by_id.get(p.parent_id) if p.parent_id is not None else None
        if p.id in chain or p.status not in COMPLETED or parent is None:
            continue
        if p.val_bpb is not None and p.delta is not None and p.delta < 0:  # Δ vs parent (deltas.py)
            better.append((p.val_bpb, p, parent))
    if len(better) < 2:
        return None
    target = dict(g.parent.config)
    for _, p, parent in sorted(better, key=lambda b: -b[0]):
        target.update({k: new for k, (_, new) in space.changes(parent.config, p.config).items()})
    found = _realize(g, target, cfg)
    if not isinstance(found, Candidate):
        return None
    rows = sorted(better, key=lambda b: b[1].id)
    named = ", ".join(f"#{p.id} ({p.delta:+.4f} bpb)" for _, p, _ in rows)
    why = f"Combines the changes that beat their own parent but were not kept: {named}."
    title = "Combine " + ", ".join(f"#{p.id}" for _, p, _ in rows)
    return _proposal(g, found, title[:120], "", why, cfg), found


def _from_tpe(g: Evidence, cfg: SearchConfig, seed: int) -> tuple[Proposal, Candidate] | None:
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            n_startup_trials=cfg.startup_trials, seed=seed, multivariate=True
        )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    dists = g.distributions()
    told = g.told(cfg.failure_penalty_bpb)
    for point, value in told:
        try:
            study.add_trial(create_trial(params=point.config, distributions=dists, value=value))
        except ValueError:
            continue  # a hand-written value this space cannot hold (a float where it writes ints)
    worst = max((v for _, v in told), default=None)
    rng = random.Random(seed)
    movable = sorted(n for n in dists if not (n.startswith(TECHNIQUE_PREFIX) and g.parent.config.get(n)))
    for _ in range(cfg.max_asks):
        names = movable
        if 0 < cfg.subspace_knobs < len(movable):
            names = sorted(rng.sample(movable, cfg.subspace_knobs))
        trial = study.ask({n: dists[n] for n in names})
        found = _realize(g, {**g.parent.config, **trial.params}, cfg)
        if isinstance(found, Candidate):
            why = _tpe_context(g, told)
            return _proposal(g, found, "", "", why, cfg), found
        if found.oversize and worst is not None:  # steer away from what cannot fit
            study.tell(trial, worst + cfg.failure_penalty_bpb)
        else:
            study.tell(trial, state=TrialState.FAIL)
    return None


def _realize(g: Evidence, target: Config, cfg: SearchConfig) -> Candidate | Refusal:
    """The parent's trainer moved to `target` (techniques the parent has stay on), or why it cannot be."""
    source, added = g.parent_source, []
    for t in g.techniques:
        flag = TECHNIQUE_PREFIX + t.name
        if target.get(flag) and not g.parent.config.get(flag):
            try:
                source = patched(source, t)
            except ProposalError as exc:
                return Refusal(reason=f"technique {t.name} does not apply: {exc}")
            added.append(t.name)
    env, heads = g.trainer_env, _heads(source, g.trainer_env)
    current, changed = g.read(source), {}
    for knob in g.knobs:
        if target[knob.name] == g.parent.config[knob.name]:
            continue  # not moved: the parent's value (or a technique's) stays exactly as it is written
        is_int = isinstance(g.base_config[knob.name], int)
        value = space.written(knob, float(target[knob.name]), is_int, heads, g.size_limit, cfg.float_digits)
        if value != current[knob.name]:
            changed[knob.name] = value
    try:
        source = apply_in_memory(source, set_edits(source, changed, env, g.trainer))
    except ProposalError as exc:
        return Refusal(reason=str(exc))
    config = g.read(source)
    problem = space.shape_problem(source, env, cfg.accum_seqs)
    if problem:
        return Refusal(reason=problem)
    if space.key(config) in g.seen:
        return Refusal(reason=f"already in the ledger as #{g.seen[space.key(config)]}")
    if space.key(config) in g.taken:
        return Refusal(reason="already proposed in this run, not yet in the ledger")
    try:
        size = artifact_size.predict_bytes(source, env, g.ratio)
    except (ProposalError, ValueError):  # a trainer whose shape we cannot read: the sandbox measures it
        size = artifact_size.code_bytes(source)
    if size > g.size_limit:
        return Refusal(
            reason=f"predicted {size:,} bytes, over the {g.size_limit:,}-byte limit", oversize=True
        )
    return Candidate(source=source, config=config, changed=changed, added=added, size=size)


def _heads(source: str, env: dict[str, str]) -> int:
    """The attention heads MODEL_DIM must split into; 1 for a trainer without NUM_HEADS (not ours)."""
    try:
        return max(1, int(float(value_in_force(source, "NUM_HEADS", env))))
    except (ProposalError, ValueError):
        return 1


def _proposal(g: Evidence, c: Candidate, title: str, category: str, why: str, cfg: SearchConfig) -> Proposal:
    moved = space.changes(g.parent.config, c.config)
    parts = [f"{_short(k)} {_val(a)}->{_val(b)}" for k, (a, b) in moved.items()]
    if not title:
        title = "Search: " + ", ".join(parts)
        title = title if len(title) <= 120 else title[:116] + " ..."
    if not category:
        first = next(iter(moved), "")
        named = [t.category for t in g.techniques if TECHNIQUE_PREFIX + t.name == first]
        category = named[0] if named else space.BY_NAME[first].category if first in space.BY_NAME else "other"
    evidence = [_evidence(g, k, a, b) for k, (a, b) in list(moved.items())[: cfg.shown_changes]]
    more = f" (and {len(moved) - cfg.shown_changes} more)" if len(moved) > cfg.shown_changes else ""
    on = f"on top of #{g.parent.id} ({_score(g.parent)})"
    hypothesis = f"{why} Builds {on}; this moves {'; '.join(evidence)}{more}."
    effect = ", ".join(space.show(k, v) for k, v in c.changed.items())
    techniques = f"; techniques: {', '.join(c.added)}" if c.added else ""
    if g.skipped:  # the techniques whose patch does not fit this trainer, and why: not moves of this search
        shown = [f"{n} ({why})" for n, why in sorted(g.skipped.items())]
        more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
        hypothesis += f" Techniques skipped, their patch does not apply here: {'; '.join(shown[:3])}{more}."
    return Proposal(
        title=title,
        hypothesis=hypothesis,
        category=category,
        expected_effect=f"set {effect or 'nothing'}{techniques}; predicted artifact {c.size:,} of "
        f"{g.size_limit:,} bytes",
        set=c.changed,
    )


def _tpe_context(g: Evidence, told: list[tuple[Point, float]]) -> str:
    failed = sum(1 for p, _ in told if p.status not in COMPLETED)
    scored = [(p, v) for p, v in told if p.status in COMPLETED]
    best = min(scored, key=lambda pv: pv[1], default=None)
    head = f"TPE over {len(told)} trials ({failed} failed or penalized)"
    if best is None:
        return head + "."
    diff = space.changes(g.base_config, best[0].config)
    shown = ", ".join(space.show(k, b) for k, (_, b) in list(diff.items())[:3]) or "the baseline"
    return f"{head}; best so far #{best[0].id} ({shown}, {best[1]:.4f} bpb)."


def _evidence(g: Evidence, name: str, old, new) -> str:
    """One changed knob and the closest earlier try of the same knob: what it did against its parent."""
    label = f"{_short(name)} {_val(old)}→{_val(new)}"
    tries = []
    for p in g.points:
        parent = g.by_id.get(p.parent_id) if p.parent_id is not None else None
        if parent is None or parent.config.get(name) == p.config.get(name):
            continue
        tries.append((_distance(p.config.get(name), new), -p.id, p, parent))
    if not tries:
        return f"{label} (untried)"
    *_, p, parent = min(tries, key=lambda t: t[:2])
    was = f"{_val(parent.config.get(name))}→{_val(p.config.get(name))}"
    if p.delta is not None and p.status in COMPLETED:
        return f"{label}, which #{p.id} tried ({was}: {p.delta:+.4f} bpb)"
    return f"{label}, which #{p.id} tried ({was}: {p.status})"


def _distance(a, b) -> float:
    if isinstance(a, bool) or isinstance(b, bool) or a is None:
        return 0.0 if a == b else 1.0
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-12)


def _score(p: Point) -> str:
    return f"{p.val_bpb:.4f} bpb" if p.val_bpb is not None else str(p.status)


def _short(name: str) -> str:
    return name.removeprefix(TECHNIQUE_PREFIX)


def _val(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@functools.lru_cache(maxsize=4096)
def _source_at(root: str, commit: str, path: str) -> str | None:
    """The trainer at a commit; a commit never changes, so it is read once per process."""
    proc = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=root, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None
