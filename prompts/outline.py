"""An outline of a long trainer for a prompt: its Hyperparameters in full, then every class and function
with its line range, so the model can `view` what it needs instead of receiving 3,000 lines each turn.

A leaderboard trainer is 3-4 times the baseline's 1,100 lines, and the whole source was 96% of every
request, resent on every turn of a session; the outline is a few percent of that.
"""

from __future__ import annotations

import ast

SETTINGS_CLASS = "Hyperparameters"
DOC_CHARS = 100


def outline(source: str, path: str) -> str:
    """The outline, or the whole source when it does not parse (a model still needs to see it)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    lines = source.splitlines()
    out = [
        f"(An outline: the file has {len(lines):,} lines. Read any part with view({path!r}, start, end); "
        "search(pattern) finds lines.)"
    ]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == SETTINGS_CLASS:
            end = node.end_lineno or node.lineno
            out.append(f"\n# lines {node.lineno}-{end}, in full:")
            out.extend(lines[node.lineno - 1 : end])
            out.append("")
            continue
        out.extend(_entries(node, ""))
    return "\n".join(out)


def _entries(node: ast.AST, indent: str) -> list[str]:
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return []
    kind = "class" if isinstance(node, ast.ClassDef) else "def"
    if kind == "def":
        args = ", ".join(a.arg for a in node.args.args)
        head = f"{kind} {node.name}({args})"
    else:
        head = f"class {node.name}"
    doc = ast.get_docstring(node)
    said = f"  # {doc.splitlines()[0][:DOC_CHARS]}" if doc else ""
    found = [f"{indent}{head}: lines {node.lineno}-{node.end_lineno}{said}"]
    if kind == "class":
        for child in node.body:
            found.extend(_entries(child, indent + "    "))
    return found
