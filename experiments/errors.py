"""The one error type the CLI prints as a single line: bad input or state the user can fix."""


class AgentgolfError(Exception):
    """Raised with a message that tells the user what is wrong and, where it helps, what to do."""
