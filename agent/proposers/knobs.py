"""The trainer's settings as text: read the value in force and write a new one where it is in force.

A setting's value in force is the line of the active PRESET in `PRESETS`, else the
`os.environ.get("NAME", default)` line of `Hyperparameters`; a setting the workspace's `trainer_env` sets
wins over both, so editing the file would change nothing and `set_edits` refuses it. Every proposer
edits settings through here, and the search reads past experiments' settings back the same way.
"""

from __future__ import annotations

import ast
import difflib
import re

from agentgolf.agent.proposers.proposal import Edit, ProposalError
from agentgolf.challenge import TRAINER_FILE
from agentgolf.sandbox.runner import HARNESS_ENV_KEYS


def _value_pattern(name: str, preset: str | None, source: str) -> re.Match[str] | None:
    """Find the literal default of NAME that is in effect for `preset` (group 1: prefix, 2: literal)."""
    key = re.escape(name)
    if preset:
        block = re.search(rf'["\']{re.escape(preset)}["\']\s*:\s*\{{(.*?)\n\s*\}}', source, re.S)
        if block:
            found = re.compile(rf'(["\']{key}["\']\s*:\s*)([^,\n]+)').search(
                source, block.start(1), block.end(1)
            )
            if found:
                return found
    return re.search(rf'(os\.environ\.get\(\s*["\']{key}["\']\s*,\s*)([^)\n]+)', source)


def _format(old: float | int | str, value: float) -> str:
    if isinstance(old, int) and not isinstance(old, bool):
        return str(max(1, round(value)))
    text = f"{value:.6g}"
    text = text if any(c in text for c in ".en") else text + ".0"
    return repr(text) if isinstance(old, str) else text


def current_value(source: str, name: str, preset: str | None) -> float | int | str:
    match = _value_pattern(name, preset, source)
    if match is None:
        raise ProposalError(f"the trainer has no default for {name}")
    return ast.literal_eval(match.group(2).strip())


def hparam_edits(source: str, changes: dict[str, float], preset: str | None) -> list[Edit]:
    """Search/replace edits that set each NAME's effective default to the given value."""
    edits = []
    for name, value in changes.items():
        match = _value_pattern(name, preset, source)
        if match is None:
            raise ProposalError(f"the trainer has no default for {name}")
        old = ast.literal_eval(match.group(2).strip())
        edits.append(Edit(search=match.group(0), replace=match.group(1) + _format(old, value)))
    return edits


def set_edits(
    source: str, values: dict[str, float | int | str], trainer_env: dict[str, str], path: str = TRAINER_FILE
) -> list[Edit]:
    """A proposal's `set`: edits that make each NAME's value in force the given one, where it is in force
    (the active preset's line, else the `Hyperparameters` default); refused where the file cannot win."""
    preset = trainer_env.get("PRESET")
    known = sorted(set(re.findall(r'os\.environ\.get\(\s*["\']([A-Z][A-Z0-9_]*)["\']', source)))
    edits = []
    for name, value in values.items():
        if name in HARNESS_ENV_KEYS:
            raise ProposalError(f"set {name}: the harness sets {name} itself; the file's value is never used")
        if name in trainer_env:
            raise ProposalError(
                f"set {name}: the workspace's trainer_env sets {name}={trainer_env[name]}, which wins over "
                "the file, so editing the file changes nothing; choose another setting or change the code"
            )
        match = _value_pattern(name, preset, source)
        if match is None:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ProposalError(f"set {name}: the trainer reads no setting {name}{hint}")
        old = ast.literal_eval(match.group(2).strip())
        edits.append(
            Edit(path=path, search=match.group(0), replace=match.group(1) + _literal(name, old, value))
        )
    return edits


def _literal(name: str, old: object, value: float | int | str) -> str:
    """The new value written as the old one was: an int stays an int, a string a string."""
    if isinstance(old, str):
        if not _numeric(old):
            return repr(str(value))
        return repr(_literal(name, ast.literal_eval(old.strip()), value))  # "64" stays a quoted int
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProposalError(f"set {name}: {value!r} is not a number ({name} is {old!r})") from None
    if isinstance(old, int) and not isinstance(old, bool):
        if not number.is_integer():
            raise ProposalError(f"set {name}: {name} is an integer ({old}), not {value!r}")
        return str(int(number))
    return _format(old, number)


def _numeric(text: str) -> bool:
    """A string default that holds a number (`os.environ.get("HIDDEN", "64")`): written back as one."""
    try:
        return isinstance(ast.literal_eval(text.strip()), int | float)
    except (ValueError, SyntaxError):
        return False


def value_in_force(source: str, name: str, trainer_env: dict[str, str]) -> float | int | str:
    """What the trainer runs with: the workspace's trainer_env when it sets NAME, else the file's value."""
    default = current_value(source, name, trainer_env.get("PRESET"))
    if name not in trainer_env:
        return default
    text = trainer_env[name]
    try:
        return type(default)(float(text)) if isinstance(default, (int, float)) else text
    except ValueError:
        return text


def apply_in_memory(source: str, edits: list[Edit]) -> str:
    """The source with each edit made once, as `apply_edits` would on the file."""
    for number, edit in enumerate(edits, 1):
        if source.count(edit.search) != 1:
            raise ProposalError(f"edit {number}: search text not found exactly once: {edit.search[:80]!r}")
        source = source.replace(edit.search, edit.replace)
    return source
