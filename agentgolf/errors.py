"""The one error family: everything a user can cause or fix is an `AgentgolfError`.

The CLI catches this type and prints its message as one line. Third-party errors (git, pydantic,
sqlite) are wrapped where they arise, so the message names the user's input, not our internals.
Anything else is a bug: the CLI prints one line and the path of a log file holding the traceback.
"""

from __future__ import annotations


class AgentgolfError(Exception):
    """Raised with a message that tells the user what is wrong and, where it helps, what to do."""


def first_line(exc: BaseException) -> str:
    """The most telling single line of a third-party error: for pydantic, each failing field and what is
    wrong with it (`budget.size_bytes: Input should be greater than 0`); else the first line."""
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ == "ValidationError" and callable(errors):  # pydantic: the field and what is wrong
        try:
            return "; ".join(
                f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']}" for e in errors()[:3]
            )
        except (TypeError, KeyError):
            pass
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
