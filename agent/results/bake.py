"""The settings a row trained with, written into its submitted trainer as defaults, so the file trains them.

The harness runs a trainer with the workspace's `trainer_env` (and a rung's) in its environment: a PRESET,
knob overrides, which win over the file's own defaults. The challenge runs the file bare. So a records
folder's train_gpt.py gets those values as `os.environ.setdefault` lines, placed before anything of the file
can read its environment (after the module docstring and `from __future__` imports) and run only when it
is run as a script (`torchrun train_gpt.py`): importing it, as the scorer does, stays free of side effects,
as the trainer contract asks. An explicit environment variable still wins, as it did in the harness. The
harness's own variables (data paths, seed, clock: sandbox.runner.HARNESS_ENV_KEYS) were never the row's
settings and are not baked.
"""

from __future__ import annotations

import ast
import io

from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.runner import ENV_NAME, HARNESS_ENV_KEYS

BEGIN = "# --- agentgolf submit: the settings this record was scored with (its trainer_env), as defaults ---"
END = "# --- end of the settings agentgolf baked in ---"


def settings(exp: Experiment) -> dict[str, str]:
    """The variables the row's settings added to its trainer's environment (its manifest's `env`)."""
    env = exp.manifest.get("env") or {}
    return {k: str(v) for k, v in sorted(env.items()) if k not in HARNESS_ENV_KEYS}


def bake(source: bytes, env: dict[str, str]) -> bytes:
    """`source` with `env` set as defaults at its top when run as a script; unchanged when env is empty."""
    if not env:
        return source
    bad = [k for k in env if not ENV_NAME.match(k)]
    if bad:
        raise AgentgolfError(f"cannot bake {bad[0]!r} into the trainer: not an environment variable name")
    try:
        text = source.decode("utf-8")
        at = _insertion_line(text)
    except (UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise AgentgolfError(
            f"cannot bake the trainer's settings into it: it does not parse ({exc})"
        ) from exc
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = _lines(text)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    block = [BEGIN, 'if __name__ == "__main__":', "    import os", ""]
    block += [f"    os.environ.setdefault({k!r}, {v!r})" for k, v in env.items()]
    before, after = lines[:at], lines[at:]
    block = ([""] if before and before[-1].strip() else []) + [*block, END]
    block += [""] if after and after[0].strip() else []  # one blank line either side
    return "".join([*before, *(line + newline for line in block), *after]).encode("utf-8")


def _insertion_line(text: str) -> int:
    """How many lines come before the block: the module docstring and `from __future__` imports, or else
    the leading comments (a shebang, an encoding line)."""
    body = ast.parse(text).body
    end = 0
    for i, node in enumerate(body):
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if not (docstring and isinstance(node.value.value, str)) and not future:
            break
        end = node.end_lineno or end
    if end:
        return end
    lines = _lines(text)
    return next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))


def _lines(text: str) -> list[str]:
    """Lines as Python's parser counts them (str.splitlines also splits at form feeds and the like)."""
    return io.StringIO(text, newline="").readlines()
