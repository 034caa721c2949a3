"""The tracking settings (`run --track`, `track` in the config): which dashboards, where their files go.

Both libraries are optional (`pip install 'agentgolf[track]'`) and imported only when a run tracks; this
module imports neither, so the command line can parse `--track` and the preflight can refuse a missing
library in one line before anything trains.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from agentgolf.errors import AgentgolfError

Backend = Literal["tensorboard", "wandb"]
BACKENDS: tuple[str, ...] = ("tensorboard", "wandb")
OFF = "none"  # `--track none`: no tracking, whatever the config says
INSTALL = "pip install 'agentgolf[track]'"
# What each backend imports: TensorBoard's writer is torch's (torch is a dependency), its files tensorboard's.
LIBRARIES: dict[str, tuple[str, ...]] = {"tensorboard": ("tensorboard",), "wandb": ("wandb",)}


class TrackConfig(BaseModel):
    """Which dashboards a run streams each experiment to, and where their files go."""

    backends: list[Backend] = Field(
        default_factory=list,
        description="tensorboard and/or wandb (W&B offline, `wandb sync` later); empty: off",
    )
    folder: Path = Field(
        Path(".agentgolf/track"),
        description="where the files go (relative: to the workspace root): tensorboard/<run id>/, wandb/",
    )
    wandb_project: str = Field(
        "agentgolf", min_length=1, description="the W&B project `wandb sync` uploads to"
    )
    poll_seconds: float = Field(
        2.0, gt=0, description="how often a training log is read for new points while it trains"
    )
    close_seconds: float = Field(
        60.0, gt=0, description="how long closing one experiment may wait for its files to be complete"
    )

    @field_validator("backends")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


def parse_backends(text: str) -> list[str]:
    """`--track tensorboard,wandb` as a list; `none` is the empty list (tracking off). ValueError, one line,
    naming the valid ones, for anything else."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names == [OFF]:
        return []
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        what = f"unknown backend {unknown[0]!r}" if unknown else "no backend given"
        raise ValueError(f"{what}: choose {' and/or '.join(BACKENDS)} (comma-separated), or {OFF}")
    return list(dict.fromkeys(names))


def missing_libraries(backends: list[str]) -> list[str]:
    """The libraries the chosen backends need that cannot be imported here."""
    missing = []
    for backend in backends:
        for name in LIBRARIES.get(backend, ()):
            try:
                found = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(name)
    return missing


def check_libraries(cfg: TrackConfig) -> None:
    """Before anything trains: a backend whose library is missing is refused in one line."""
    missing = missing_libraries(cfg.backends)
    if missing:
        raise AgentgolfError(
            f"--track {','.join(cfg.backends)}: {' and '.join(missing)} not installed; {INSTALL} "
            f"(or --track {OFF})"
        )
