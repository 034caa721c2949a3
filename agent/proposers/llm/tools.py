"""The tools an LLM works with in a proposal session on the experiment's worktree: view, search, edit, set,
apply_technique, try, show_experiment, similar, refresh, note_to_self and submit. Each call returns text for the model, never raises for the model's mistakes:
a bad argument, an edit that does not apply or a change that does not compile comes back as the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from pydantic import ValidationError

from agentgolf.agent.proposers import techniques
from agentgolf.agent.proposers.briefing import board
from agentgolf.agent.proposers.briefing.digest import line
from agentgolf.agent.proposers.briefing.facts import outcome
from agentgolf.agent.proposers.briefing.retrieval import search
from agentgolf.agent.proposers.knobs import set_edits
from agentgolf.agent.proposers.proposal import (
    CATEGORIES,
    Edit,
    Proposal,
    ProposalContext,
    ProposalError,
    apply_edits,
    check_compiles,
    diff_fingerprint,
)

VIEW_LINES = 200  # the most lines one view returns
SEARCH_HITS = 40
DIFF_CHARS = 4_000
TEXT_SUFFIXES = (".py", ".md", ".txt", ".json", ".toml", ".cfg", ".sh", ".yaml", ".yml")
DATA_MANIFEST = "DATA_MANIFEST.json"  # `view` of this name shows the dataset's manifest (not in the tree)


def _function(name: str, description: str, properties: dict, required: list[str]) -> dict:
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return {"name": name, "description": description, "parameters": schema}


STR, INT = {"type": "string"}, {"type": "integer"}
TOOLS = [
    _function(
        "view",
        f"Show lines start..end (1-based, inclusive, at most {VIEW_LINES}) of a file, numbered.",
        {"path": STR, "start": INT, "end": INT},
        ["path", "start", "end"],
    ),
    _function(
        "search",
        "Find lines matching a regular expression in the trainer's folder; returns path:line: text.",
        {"pattern": STR},
        ["pattern"],
    ),
    _function(
        "edit",
        "Replace the exact text `search` (it must occur exactly once) with `replace` in a file. "
        "Reports whether it applied and, if not, why, with the file's closest lines.",
        {"path": STR, "search": STR, "replace": STR},
        ["path", "search", "replace"],
    ),
    _function(
        "set",
        "Change settings where they are in force (the active PRESET line, else the Hyperparameters default), "
        'e.g. {"values": {"MATRIX_LR": 0.01}}.',
        {"values": {"type": "object", "additionalProperties": {"type": ["number", "string"]}}},
        ["values"],
    ),
    _function(
        "apply_technique",
        "Apply one of the known techniques (by its name in the catalogue) to the trainer: its tested patch, "
        "merged three ways where the trainer moved near it. Says whether it applied.",
        {"name": STR},
        ["name"],
    ),
    _function(
        "try",
        "A smoke run of the trainer as you edited it: a few steps (default 3) in the sandbox, uncharged, no "
        "score kept. Returns the loss at each step, the step time, the artifact size after export and "
        "whether load_model reads the artifact back.",
        {"steps": INT},
        [],
    ),
    _function(
        "show_experiment",
        "An earlier experiment's facts (status, score, why it came out so), its train-loss points and step "
        "facts, and its diff against its parent.",
        {"id": INT},
        ["id"],
    ),
    _function(
        "refresh",
        "Re-read the ledger now: results decided since your session began, what is training or being "
        "prepared by other sessions (their titles once submitted), and the budget left.",
        {},
        [],
    ),
    _function(
        "note_to_self",
        "Write one line in the run's lab notebook (a finding for later sessions, e.g. 'the warmdown "
        "outlasts the budget at this step time'); every later proposal of this run reads it.",
        {"text": STR},
        ["text"],
    ),
    _function(
        "similar",
        "Past experiments most like an idea (BM25 over their titles, hypotheses and diffs), with outcomes.",
        {"query": STR},
        ["query"],
    ),
    _function(
        "submit",
        "Finish: describe the change you made with edit/set. It is checked (it changed something, it "
        "compiles, it was not tried before); on a problem you are told why and may fix it.",
        {
            "title": STR,
            "hypothesis": STR,
            "category": {"type": "string", "enum": list(CATEGORIES)},
            "expected_effect": STR,
        },
        ["title", "hypothesis", "category", "expected_effect"],
    ),
]
NAMES = [t["name"] for t in TOOLS]


class Workbench:
    """One session's tools over one worktree; `submitted` is set once submit accepts the change."""

    def __init__(self, ctx: ProposalContext, tree: Path):
        self.ctx, self.tree = ctx, tree
        self.submitted: Proposal | None = None
        self.calls: dict[str, int] = {}
        self.settings: dict[str, float | int | str] = {}  # what `set` changed, for the commit message
        self.applied: list[techniques.Technique] = []  # techniques applied with apply_technique

    def call(self, name: str, arguments: str) -> str:
        self.calls[name] = self.calls.get(name, 0) + 1
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            return f"error: the arguments are not valid JSON ({exc.msg}); send an object"
        if not isinstance(args, dict):
            return "error: the arguments must be a JSON object"
        handler = getattr(self, f"_{name}", None) if name in NAMES else None
        if handler is None:
            return f"error: no tool {name!r}; the tools are {', '.join(NAMES)}"
        try:
            return handler(**args)
        except TypeError as exc:
            return f"error: bad arguments for {name}: {exc}"
        except ProposalError as exc:
            return f"not applied: {exc}"

    def _file(self, path: str) -> Path:
        target = (self.tree / path).resolve()
        if self.tree.resolve() not in target.parents or not target.is_file():
            raise ProposalError(f"no file {path!r} in the trainer's folder")
        return target

    def _view(self, path: str, start: int = 1, end: int = VIEW_LINES) -> str:
        if path.strip("./") == DATA_MANIFEST and self.ctx.desk is not None:
            lines = self.ctx.desk.manifest().splitlines()
        else:
            lines = self._file(path).read_text().splitlines()
        start = max(1, int(start))
        end = min(len(lines), int(end), start + VIEW_LINES - 1)
        shown = "\n".join(f"{i:>5}: {lines[i - 1]}" for i in range(start, end + 1))
        return f"{path} lines {start}-{end} of {len(lines)}:\n{shown}"

    def _search(self, pattern: str) -> str:
        try:
            regex = re.compile(pattern)
        except re.error:
            regex = re.compile(re.escape(pattern))
        hits = []
        for path in sorted(p for p in self.tree.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES):
            if ".git" in path.parts:
                continue
            for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if regex.search(text):
                    hits.append(f"{path.relative_to(self.tree)}:{number}: {text.strip()[:160]}")
        more = f"\n... and {len(hits) - SEARCH_HITS} more" if len(hits) > SEARCH_HITS else ""
        return "\n".join(hits[:SEARCH_HITS]) + more if hits else f"no line matches {pattern!r}"

    def _edit(self, path: str, search: str, replace: str) -> str:
        changed = apply_edits(self.tree, [Edit(path=path, search=search, replace=replace)])
        return "applied" + _but(compile_problem(changed))

    def _set(self, values: dict) -> str:
        trainer = self.tree / self.ctx.trainer
        edits = set_edits(
            trainer.read_text(), values, self.ctx.trainer_env, self.ctx.trainer
        )  # as edited so far
        changed = apply_edits(self.tree, edits)
        self.settings.update(values)
        shown = "; ".join(f"{e.search.strip()} -> {e.replace.strip()}" for e in edits)
        return f"applied: {shown}" + _but(compile_problem(changed))

    def _apply_technique(self, name: str) -> str:
        found = techniques.find(name)
        if found is None:
            return f"no technique {name!r}; the catalogue has {', '.join(t.name for t in techniques.catalogue())}"
        techniques.apply_technique(self.tree, found)  # a ProposalError comes back as "not applied: ..."
        self.applied.append(found)
        return f"applied technique {found.name} ({found.title})" + _but(
            compile_problem([self.tree / self.ctx.trainer])
        )

    def _try(self, steps: int = 3) -> str:
        if self.ctx.desk is None:
            return "try is not available in this session (no sandbox was given to it)"
        problem = compile_problem([p for p in self.tree.rglob("*.py") if ".git" not in p.parts])
        if problem:
            return f"not run: {problem}"
        return self.ctx.desk.try_run(self.tree, steps)

    def _refresh(self) -> str:
        if self.ctx.desk is None:
            return "refresh is not available in this session (no ledger was given to it)"
        return self.ctx.desk.refresh()

    def _note_to_self(self, text: str) -> str:
        if self.ctx.desk is None:
            return "not noted: no notebook in this session"
        return self.ctx.desk.note(text)

    def _show_experiment(self, id: int) -> str:
        exp = next((e for e in self.ctx.history if e.id == int(id)), None)
        if exp is None:
            return f"no experiment {id} in the ledger"
        runs = self.ctx.runs_dir
        why = outcome(exp, runs / str(exp.id) if runs else None, self.ctx.budget.size_bytes)
        text = [line(exp, lambda e: why), f"hypothesis: {exp.hypothesis or '-'}"]
        if self.ctx.desk is not None:
            text.append(self.ctx.desk.points(exp))
        diff = self._git("diff", exp.parent_commit, exp.commit_sha) if exp.commit_sha else ""
        if diff and exp.parent_commit != exp.commit_sha:
            clipped = diff[:DIFF_CHARS] + ("\n... (diff cut)" if len(diff) > DIFF_CHARS else "")
            text.append(f"diff against its parent:\n{clipped}")
        return "\n".join(text)

    def _similar(self, query: str) -> str:
        hits = search(self.ctx.history, query, self.ctx.root)
        if not hits:
            return f"nothing tried so far resembles {query!r}"
        runs, size = self.ctx.runs_dir, self.ctx.budget.size_bytes
        return "\n".join(
            f"{line(e, lambda e: outcome(e, runs / str(e.id) if runs else None, size))} (similarity {score:.2f})"
            for e, score in hits
        )

    def _git(self, *args: str) -> str:
        root = self.ctx.root or self.tree
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else ""

    def _submit(
        self, title: str, hypothesis: str = "", category: str = "other", expected_effect: str = ""
    ) -> str:
        try:
            proposal = Proposal(
                title=title[:120],
                hypothesis=hypothesis,
                category=category,
                expected_effect=expected_effect,
                set=self.settings,
            )
        except ValidationError as exc:
            return f"not submitted: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}"
        diff = subprocess.run(["git", "diff"], cwd=self.tree, capture_output=True, text=True).stdout
        if not diff.strip():
            return "not submitted: you have not changed anything yet; use edit or set first"
        problem = compile_problem([p for p in self.tree.rglob("*.py") if ".git" not in p.parts])
        if problem:
            return f"not submitted: {problem}; fix it first"
        fingerprint = diff_fingerprint(diff)
        repeat = next(
            (e for e in self.ctx.history if e.kind == "proposal" and e.fingerprint == fingerprint), None
        )
        if repeat is not None:
            return f"not submitted: this exact change was already tried as experiment {repeat.id}; change it"
        if self.applied and not any(f"Technique {t.name}" in proposal.hypothesis for t in self.applied):
            named = ", ".join(t.name for t in self.applied)  # so the catalogue can say how it did here
            proposal.hypothesis = f"Technique {named}: {proposal.hypothesis}".strip()
        self.submitted = proposal
        if self.ctx.root is not None and self.ctx.name:  # the other sessions see its title from now on
            board.submitted(self.ctx.root, self.ctx.name, proposal.title, _changed(diff), fingerprint)
        return "submitted"


def _changed(diff: str, shown: int = 6) -> str:
    """A diff's changed lines, compacted as context.change_summary shows them."""
    changed = [
        f"{t[0]} {' '.join(t[1:].split())}"[:110]
        for t in diff.splitlines()
        if t[:1] in "+-" and not t.startswith(("+++", "---")) and t[1:].strip()
    ]
    more = f" | (+{len(changed) - shown} more changed lines)" if len(changed) > shown else ""
    return " | ".join(changed[:shown]) + more or "whitespace only"


def compile_problem(paths: list[Path]) -> str:
    try:
        check_compiles(paths)
    except ProposalError as exc:
        return str(exc)
    return ""


def _but(problem: str) -> str:
    return f", but {problem}; fix it before you submit" if problem else ""
