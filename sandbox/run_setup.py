"""One run's setup: its settings, its folders on the host, and how they look from inside the sandbox.

Shared by both phases (sandbox/train_phase.py, sandbox/scoring/score_phase.py): where the trainer and its artifact
live, the base environment every phase starts from (a GPU phase's with the CUDA variables the harness has,
sandbox/isolation/bwrap.py: cuda_env), the limits a phase runs under, whether CUDA starts in the slot's sandbox
(sandbox/isolation/cuda_probe.py), and the training phase's compile cache (sandbox/isolation/compile_cache.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
from pathlib import Path

from agentgolf.challenge import TRAINER_FILE
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.isolation import cuda_probe
from agentgolf.sandbox.isolation.bwrap import MINIMAL_PATH, SANDBOX_HOME, cuda_env, cuda_visible_devices
from agentgolf.sandbox.isolation.compile_cache import (
    INSIDE_CACHE,
    INSIDE_TEMPLATE,
    CacheUse,
    cache_env,
    copy_in,
)
from agentgolf.sandbox.isolation.limits import Limits, harness_disk_reserve
from agentgolf.sandbox.result import DataSpec

TRAINER_NAME = TRAINER_FILE
ARTIFACT_NAME = "final_model.int8.ptz"
TRAIN_LOG, SCORE_LOG = "train.log", "score.log"

INSIDE_TRAIN = Path("/sandbox/train")
INSIDE_SCORE = Path("/sandbox/score")
INSIDE_SHARDS = Path("/data/shards")
INSIDE_TOKENIZERS = Path("/data/tokenizers")

LOG_TAIL_CHARS = 4000


class RunSetup:
    """One experiment's folders, environment and phases' shared settings."""

    def __init__(
        self,
        source,
        run_dir,
        data,
        budget,
        user_env,
        seed,
        gpus,
        self_reported,
        patterns,
        on_start,
        mode,
        compile_cache: CacheUse | None = None,
    ):
        self.source: bytes = source
        self.run_dir: Path = run_dir.absolute()
        self.data: DataSpec = data
        self.budget: Budget = budget
        self.user_env: dict[str, str] = user_env
        self.seed: int = seed
        self.gpus: list[int] | None = gpus
        self.self_reported: bool = self_reported
        self.patterns = patterns
        self.on_start = on_start
        self.mode: str = mode
        self.train_dir = self.run_dir / "train"
        self.score_dir = self.run_dir / "score"
        self.limit_notes: list[str] = []  # limits this machine could not enforce, from every phase
        # the training phase's compile cache; only with bubblewrap, where the template cannot be written
        self.compile_cache: CacheUse | None = compile_cache if mode == "bwrap" else None

    def inside(self, host: Path, inside: Path) -> Path:
        """Where a host path appears to the candidate: its bind target, or itself without isolation."""
        return inside if self.mode == "bwrap" else host

    def home(self) -> Path:
        """The candidate's HOME: the sandbox's private /tmp, or run_dir/home without isolation."""
        return Path(SANDBOX_HOME) if self.mode == "bwrap" else self.run_dir / "home"

    def base_env(self, home: Path) -> dict[str, str]:
        venv_bin = Path(sys.executable).parent
        return {
            "PATH": f"{venv_bin}:{MINIMAL_PATH}",
            "HOME": str(home),
            "TMPDIR": SANDBOX_HOME if self.mode == "bwrap" else str(home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **(cuda_env() if self.gpus else {}),  # where the driver and CUDA are, as the harness has them
        }

    def cuda_problem(self) -> str | None:
        """None if CUDA starts in this slot's sandbox (or the run has no GPU), else the probe's line (asked
        once per process and slot: sandbox/isolation/cuda_probe.py)."""
        if not self.gpus:
            return None
        env = cuda_probe.probe_env(self.base_env(self.home()), self.user_env, self.cuda_visible(self.gpus))
        return cuda_probe.cuda_problem(self.mode, self.gpus, env, self.hidden()) or None

    def cache_env(self) -> dict[str, str]:
        """The training phase's compile cache folders (its private copy, or the trusted build)."""
        return cache_env(INSIDE_CACHE) if self.compile_cache else {}

    def cache_argv(self, argv: list[str]) -> list[str]:
        """The training command, after a private copy of the template is made (when there is one)."""
        if self.compile_cache is None or self.compile_cache.template is None:
            return argv
        return copy_in(argv, INSIDE_TEMPLATE, INSIDE_CACHE)

    def cache_binds(self) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
        """(read-only, writable) binds of the compile cache: the template, or the trusted build's folder."""
        use = self.compile_cache
        if use is None:
            return [], []
        if use.template is not None:
            return [(use.template, INSIDE_TEMPLATE)], []
        return [], [(use.build, INSIDE_CACHE)] if use.build is not None else []

    def cpu_threads(self) -> int | None:
        """The thread count a CPU run's training is clocked for, in CPU seconds (sandbox/cpu.py; Budget.train_clock):
        its OMP_NUM_THREADS, which the local executor sets for every CPU slot, else (train_clock "cpu") the
        cores it may run on. None: the wall clock (a GPU run, "wall", or "auto" with no thread count)."""
        value = self.user_env.get("OMP_NUM_THREADS", "")
        given = int(value) if value.isdigit() and int(value) > 0 else None
        clock = self.budget.train_clock
        if self.gpus or clock == "wall" or (clock == "auto" and given is None):
            return None
        return given or len(os.sched_getaffinity(0))

    def limits(self, wall: float, cpu: float | None = None) -> Limits:
        b = self.budget
        return Limits(
            wall_seconds=wall,
            cpu_seconds=cpu,
            max_file_bytes=b.max_file_bytes,
            memory_bytes=None if self.gpus else b.memory_bytes,
            max_processes=b.max_processes,
            phase_memory_bytes=b.phase_memory_bytes,
            disk_bytes=b.disk_bytes,
            disk_reserve_bytes=harness_disk_reserve(b.log_bytes, b.size_bytes),
        )

    def writable(self, folders: list[Path]) -> list[Path]:
        """The host folders a phase can write, counted against disk_bytes: those bound writable, plus the
        shared home without isolation (with it, /tmp is the sandbox's own and measured inside)."""
        return [*folders, self.run_dir / "home"] if self.mode == "none" else list(folders)

    def cuda_visible(self, gpus: list[int]) -> str:
        """CUDA_VISIBLE_DEVICES for a phase on these GPUs (sandbox/isolation/bwrap.py: cuda_visible_devices)."""
        return cuda_visible_devices(gpus) if gpus else ""

    def prepare(self) -> None:
        for sub in ("train", "score", "verify", "data", "home"):  # a re-run in place starts clean
            shutil.rmtree(self.run_dir / sub, ignore_errors=True)
        self.train_dir.mkdir()
        (self.train_dir / TRAINER_NAME).write_bytes(self.source)
        if self.mode == "none":
            (self.run_dir / "home").mkdir()

    def missing_data(self) -> str | None:
        d = self.data
        if not d.train_files:
            return "the data spec lists no training shards"
        if not d.val_files:
            return "the data spec lists no validation shards"
        for path in [*d.train_files, *d.val_files, d.tokenizer]:
            if not Path(path).is_file():
                return f"missing data file on the host: {path}"
        names = [Path(p).name for p in [*d.train_files, *d.val_files]]
        if len(set(names)) != len(names):
            return "two data shards share a file name"
        return None

    def hidden(self) -> list[Path]:
        """What no phase may see through a system bind: the data's folders and every run folder."""
        d = self.data
        folders = {Path(f).absolute().parent for f in [*d.train_files, *d.val_files, d.tokenizer]}
        runs = self.run_dir.parent
        state = runs.parent if runs.parent.name == ".agentgolf" else runs  # the ledger and config too
        return sorted(folders | {state})

    def reclaim(self) -> None:
        """Give the harness back what the candidate locked: a folder it chmod 000ed is its own failure to
        deliver an artifact (`crash`), not the machine's. Links are left alone, never followed."""
        with contextlib.suppress(OSError):
            os.chmod(self.train_dir, stat.S_IRWXU)
        for folder, dirs, files in os.walk(self.train_dir, onerror=lambda e: None):  # top-down: parents first
            for name in [*dirs, *files]:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    with contextlib.suppress(OSError):
                        os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)

    def artifact_path(self) -> Path:
        return self.train_dir / ARTIFACT_NAME
