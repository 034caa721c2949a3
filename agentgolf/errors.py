"""The one error family: everything a user can cause or fix is an `AgentgolfError`.

The CLI catches this type and prints its message as one line. Third-party errors (git, pydantic,
sqlite) are wrapped where they arise, so the message names the user's input, not our internals.
Anything else is a bug: the CLI prints one line and the path of a log file holding the traceback.
"""

from __future__ import annotations


class AgentgolfError(Exception):
    """Raised with a message that tells the user what is wrong and, where it helps, what to do."""


def first_line(exc: BaseException) -> str:
    """The most telling single line of a third-party error (pydantic and git put it last or first)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if type(exc).__name__ == "ValidationError" else lines[0]
