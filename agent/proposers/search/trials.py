"""What the ledger tells the offline search: each past experiment as a config and an outcome.

A row's config is read back from its own trainer (`git show <commit>:train_gpt.py`): the knob values in
force, and for each technique whether the lines its patch adds are there. That works for any row and
survives a resume, with no state beyond the ledger and the repository. The baseline and this search's
rows count; another proposer's row counts when its trainer is exactly the baseline with those knob
values and techniques. Rows the machine failed (infra_error) or the loop cut short (interrupted) say
nothing about the idea and are left out.
"""

from __future__ import annotations

import difflib
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from agentgolf.agent.judge.deltas import Scores
from agentgolf.agent.proposers.knobs import apply_in_memory, set_edits
from agentgolf.agent.proposers.proposal import ProposalContext, ProposalError
from agentgolf.agent.proposers.search import artifact_size, space
from agentgolf.agent.proposers.search.space import TECHNIQUE_PREFIX, Config, Knob
from agentgolf.agent.proposers.techniques import Technique, apply_technique, catalogue
from agentgolf.challenge import TRAINER_FILE
from agentgolf.experiments.ledger import Experiment, lineage
from agentgolf.experiments.status import SCORED_KINDS, Kind, RowStatus

IGNORED = frozenset({RowStatus.infra_error, RowStatus.interrupted})  # the machine's fault, not the idea's
COMPLETED = frozenset({RowStatus.ok, RowStatus.inconclusive})  # scored, and the score stands
UNDECIDED = frozenset({RowStatus.running, RowStatus.confirming, RowStatus.rejected})  # seen, no result yet

SourceAt = Callable[[str, str, str], "str | None"]  # (repository, commit, path) -> the file, or None


class Point(BaseModel):
    id: int
    parent_id: int | None = None
    status: RowStatus
    val_bpb: float | None = None  # on the full budget's scale: the mean of its runs (deltas.py)
    config: Config
    delta: float | None = None  # Δ vs parent (deltas.py): paired, or the difference of the means


class Evidence(BaseModel):
    """Everything one proposal is made from; rebuilt from the ledger every time."""

    trainer: str
    trainer_env: dict[str, str]
    size_limit: int
    knobs: list[Knob]
    techniques: list[Technique]
    marks: dict[str, frozenset[str]]  # technique -> the lines its patch adds to the baseline
    skipped: dict[str, str] = {}  # technique -> why its patch does not apply to this baseline
    base_config: Config
    parent: Point
    parent_source: str
    points: list[Point]
    done_titles: set[str]  # this proposer's titles that were tried (for the fixed first moves)
    ratio: float  # learned stored bytes per counted byte (artifact_size)
    taken: set[tuple] = set()  # configs handed out in this run whose rows are not in the ledger yet

    @property
    def by_id(self) -> dict[int, Point]:
        return {p.id: p for p in [*self.points, self.parent]}

    @property
    def seen(self) -> dict[tuple, int]:
        """Config key -> the first row that holds it."""
        out: dict[tuple, int] = {}
        for p in self.points:
            out.setdefault(space.key(p.config), p.id)
        return out

    def read(self, source: str) -> Config:
        """A trainer's config: its searched knob values and which techniques it carries."""
        config = space.read_knobs(source, self.knobs, self.trainer_env)
        lines = {line.strip() for line in source.splitlines()}
        config.update({TECHNIQUE_PREFIX + n: marks <= lines for n, marks in self.marks.items()})
        return config

    def told(self, penalty: float) -> list[tuple[Point, float]]:
        """The trials the study learns from: completed scores, and failures at the worst score + penalty."""
        done = [(p, p.val_bpb) for p in self.points if p.status in COMPLETED and p.val_bpb is not None]
        if not done:
            return []
        worst = max(v for _, v in done) + penalty
        failed = [(p, worst) for p in self.points if p.status not in COMPLETED | UNDECIDED]
        return sorted(done + failed, key=lambda pv: pv[0].id)

    def distributions(self) -> dict:
        """Optuna's distribution for each knob and technique, wide enough for every recorded value."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict = {}
        for knob in self.knobs:
            base = self.base_config[knob.name]
            is_int = isinstance(base, int)
            values = [float(p.config[knob.name]) for p in [*self.points, self.parent]]
            low, high = space.bounds(knob, float(base), self.size_limit, values, is_int)
            log = knob.log and low > 0  # a recorded 0 (a knob switched off) leaves a log scale
            out[knob.name] = (
                IntDistribution(int(low), int(high), log=log)
                if is_int
                else FloatDistribution(low, high, log=log)
            )
        for name in self.marks:
            out[TECHNIQUE_PREFIX + name] = CategoricalDistribution((False, True))
        return out


def gather(
    ctx: ProposalContext, names: tuple[str, ...], default_ratio: float, source_at: SourceAt
) -> Evidence:
    """The evidence for the next proposal on `ctx.parent`: the baseline is the root of its lineage."""
    env, rows = ctx.trainer_env, {e.id: e for e in ctx.history}
    scores = Scores(ctx.history)

    def source(e: Experiment) -> str | None:
        if e.id == ctx.parent.id:
            return ctx.source
        return source_at(str(ctx.root), e.commit_sha, ctx.trainer) if ctx.root and e.commit_sha else None

    base_source = source(lineage(ctx.parent, rows.get)[0]) or ctx.source
    in_parent = {k.name for k in space.searched(ctx.source, env)}
    knobs = [
        k
        for k in space.searched(base_source, env)
        if k.name in in_parent
        and (k.scale != "baseline" or float(space.read_knobs(base_source, [k], env)[k.name]) > 0)
    ]
    techniques, marks, skipped = [], {}, {}
    for t in catalogue():
        found, why = _marks(base_source, t)
        if found:
            techniques.append(t)
            marks[t.name] = found
        else:
            skipped[t.name] = why
    evidence = Evidence(
        trainer=ctx.trainer,
        trainer_env=env,
        size_limit=ctx.budget.size_bytes,
        knobs=knobs,
        techniques=techniques,
        marks=marks,
        skipped=skipped,
        base_config={},
        parent=Point(
            id=ctx.parent.id,
            status=ctx.parent.status,
            val_bpb=_full_scale(ctx.parent, rows, scores),
            config={},
        ),
        parent_source=ctx.source,
        points=[],
        done_titles={e.title for e in ctx.history if e.proposer in names and e.status not in IGNORED},
        ratio=default_ratio,
    )
    evidence.base_config = evidence.read(base_source)
    evidence.parent.config = evidence.read(ctx.source)
    records = []
    for e in ctx.history:
        if e.status in IGNORED or e.kind not in SCORED_KINDS:
            continue
        text = source(e)
        try:
            config = evidence.read(text) if text is not None else None
        except ProposalError:
            continue  # a trainer that lost a knob: not a point of this space
        if config is None:
            continue
        if (
            e.kind != Kind.baseline
            and e.proposer not in names
            and not _explained(evidence, base_source, text)
        ):
            continue  # another proposer changed more than this search's knobs and techniques
        evidence.points.append(
            Point(
                id=e.id,
                parent_id=e.parent_id,
                status=e.status,
                val_bpb=_full_scale(e, rows, scores),
                config=config,
                delta=scores.delta(e),
            )
        )
        if e.artifact_bytes and (found := artifact_size.record(text, env, e.artifact_bytes)):
            records.append(found)
    evidence.ratio = artifact_size.bytes_ratio(records, default_ratio)
    return evidence


def _full_scale(e: Experiment, rows: dict[int, Experiment], scores: Scores) -> float | None:
    """A row's score on the full budget's scale: the mean of its runs (its own score where none counts);
    a screened row (fidelity ladder) counts as its parent's full-budget mean plus its Δ vs parent on the
    screen (deltas.py)."""
    if not e.rung:
        mean = scores.mean(e)
        return mean if mean is not None else e.val_bpb
    parent = rows.get(e.parent_id) if e.parent_id is not None else None
    delta = scores.delta(e, parent) if parent is not None else None
    base = _full_scale(parent, rows, scores) if parent is not None and not parent.rung else None
    return None if base is None or delta is None else base + delta


def _explained(evidence: Evidence, base_source: str, text: str) -> bool:
    """Whether this trainer is exactly the baseline with its techniques and knob values: then its score
    is a point of this space, whoever proposed it."""
    config, rebuilt = evidence.read(text), base_source
    try:
        for t in evidence.techniques:
            if config[TECHNIQUE_PREFIX + t.name]:
                rebuilt = patched(rebuilt, t)
        moved = {
            k.name: config[k.name] for k in evidence.knobs if config[k.name] != evidence.base_config[k.name]
        }
        rebuilt = apply_in_memory(rebuilt, set_edits(rebuilt, moved, evidence.trainer_env, evidence.trainer))
    except ProposalError:
        return False
    return rebuilt == text


def patched(source: str, t: Technique) -> str:
    """The trainer with the technique's patch applied, in a scratch folder: the worktree is untouched."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / TRAINER_FILE
        path.write_text(source)
        apply_technique(Path(scratch), t)
        return path.read_text()


def _marks(base_source: str, t: Technique) -> tuple[frozenset[str], str]:
    return _marks_cached(base_source, t.model_dump_json())


@functools.lru_cache(maxsize=256)
def _marks_cached(base_source: str, technique: str) -> tuple[frozenset[str], str]:
    """The non-blank lines the patch adds to the baseline (all of them present means the technique is on),
    or none and why it does not apply to this baseline (then it is no move of this search)."""
    try:
        after = patched(base_source, Technique.model_validate_json(technique))
    except ProposalError as exc:
        return frozenset(), str(exc).splitlines()[0][:160] if str(exc) else "its patch does not apply"
    before = {line.strip() for line in base_source.splitlines()}
    diff = difflib.unified_diff(base_source.splitlines(), after.splitlines(), lineterm="", n=0)
    added = (line[1:].strip() for line in diff if line.startswith("+") and not line.startswith("+++"))
    found = frozenset(s for s in added if s and s not in before)
    return found, "" if found else "its patch adds nothing to this trainer"
