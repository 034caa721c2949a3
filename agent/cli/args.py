"""The command line's argument checks: argparse errors as one line (exit 2, no usage block), and numbers
that must be positive, so that a negative budget is refused before anything starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from agentgolf.agent.tracking.config import parse_backends
from agentgolf.errors import AgentgolfError


class BadArguments(AgentgolfError):
    """argparse refused the command line; the CLI prints it as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a bad argument raises BadArguments (one line: `--help` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        raise BadArguments(f"{self.prog}: {message} (see {self.prog} --help)")


def at_least(low: float, kind: Callable[[str], float] = int) -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` no smaller than `low`."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and value >= low):
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value

    return parse


def positive(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def track_backends(text: str) -> list[str]:
    """An argparse type: `--track tensorboard,wandb`, or `none` (the empty list: no tracking)."""
    try:
        return parse_backends(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
