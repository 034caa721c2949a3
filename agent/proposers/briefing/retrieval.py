"""Similar past attempts: BM25 (the `bm25s` library) over each earlier proposal's title, hypothesis and
diff, the title and the hypothesis weighed above the diff (an idea's words over the code's), for every proposer. The JSON path shows the nearest ones before a proposal runs, the tool session
has a `similar` tool, and a CLI agent runs `agentgolf similar "IDEA"`.

A score is BM25's, divided by the score the query gets against itself in the same index, so that one
threshold (0..1) means the same on a ledger of ten rows or of ten thousand. Diffs come from git in one
`git diff-tree --stdin` call and are kept per commit (a commit never changes).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from agentgolf.experiments.ledger import Experiment

DIFF_CHARS = 2_000  # of each diff's changed lines, indexed
TITLE_WEIGHT = 3  # how many times a title counts, against a diff's once
HYPOTHESIS_WEIGHT = 2
_DIFFS: dict[str, str] = {}  # commit -> its changed lines (a commit is immutable)
_LOCK = threading.Lock()

DiffOf = Callable[[Experiment], str]


def _bm25s():
    """bm25s, imported here: only a ranking needs it, never loading a workspace (the GPU image lacks it)."""
    import bm25s

    return bm25s


def _stem(words: list[str]) -> list[str]:
    """Plurals as singulars (`lrs` is `lr`, `rates` is `rate`): enough for ideas named in a few words.
    bm25s passes its vocabulary as one list."""
    return [w[:-1] if len(w) >= 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def _tokens(texts: list[str]) -> list[list[str]]:
    return _bm25s().tokenize(texts, stopwords="en", stemmer=_stem, return_ids=False, show_progress=False)


def _document(e: Experiment, diff: str) -> str:
    """What an idea is said to be weighs more than the lines its diff touched: the title TITLE_WEIGHT times,
    the hypothesis HYPOTHESIS_WEIGHT times, then the diff once."""
    return "\n".join([e.title] * TITLE_WEIGHT + [e.hypothesis] * HYPOTHESIS_WEIGHT + [diff])


def similar_attempts(
    history: list[Experiment],
    query: str,
    diff_of: DiffOf | None = None,
    k: int = 3,
    threshold: float = 0.3,
) -> list[tuple[Experiment, float]]:
    """The past proposals most like `query`, best first, each with its relative score (>= threshold)."""
    past = [e for e in history if e.kind == "proposal"]
    query_tokens = _tokens([query])[0]
    if not past or not query_tokens or k <= 0:
        return []
    docs = [_document(e, diff_of(e) if diff_of else "") for e in past]
    retriever = _bm25s().BM25()
    # The query too, weighed as a title: its self-score, the most a row named by the query alone gets.
    retriever.index([*_tokens(docs), query_tokens * TITLE_WEIGHT], show_progress=False)
    scores = retriever.get_scores(query_tokens)
    self_score = float(scores[-1])
    if self_score <= 0:
        return []
    ranked = sorted(range(len(past)), key=lambda i: (-scores[i], -past[i].id))
    hits = [(past[i], round(float(scores[i]) / self_score, 3)) for i in ranked[:k] if scores[i] > 0]
    return [(e, score) for e, score in hits if score >= threshold]


class GitDiffs:
    """The changed lines of each proposal's commit, from the workspace's git; call `prefetch(history)`
    first to fetch every uncached commit in one `git diff-tree --stdin`."""

    def __init__(self, root: Path | None):
        self.root = root

    def __call__(self, e: Experiment) -> str:
        if self.root is None or not e.commit_sha or e.commit_sha == e.parent_commit:
            return ""
        return _DIFFS.get(e.commit_sha, "")

    def prefetch(self, history: list[Experiment]) -> GitDiffs:
        wanted = [e.commit_sha for e in history if e.kind == "proposal" and e.commit_sha]
        with _LOCK:
            missing = [c for c in dict.fromkeys(wanted) if c not in _DIFFS]
            if self.root is not None and missing:
                _DIFFS.update(_changed_lines(self.root, missing))
        return self


def _changed_lines(root: Path, commits: list[str]) -> dict[str, str]:
    proc = subprocess.run(
        ["git", "diff-tree", "--stdin", "-p", "-U0", "--no-color"],
        cwd=root,
        input="\n".join(commits) + "\n",
        capture_output=True,
        text=True,
    )
    out: dict[str, list[str]] = {c: [] for c in commits}
    current: list[str] | None = None
    for line in proc.stdout.splitlines():
        if line in out:
            current = out[line]
        elif current is not None and line[:1] in "+-" and not line.startswith(("+++", "---")):
            current.append(line[1:].strip())
    return {c: "\n".join(lines)[:DIFF_CHARS] for c, lines in out.items()}


def search(
    history: list[Experiment], query: str, root: Path | None, k: int = 5, threshold: float = 0.1
) -> list[tuple[Experiment, float]]:
    """`similar_attempts` with the workspace's diffs: for the tool and the command line."""
    return similar_attempts(history, query, GitDiffs(root).prefetch(history), k, threshold)
