"""The import check: a candidate trainer imported in the sandbox, with no data in view, before any training."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.isolation.bwrap import MINIMAL_PATH, SANDBOX_HOME, resolve_isolation
from agentgolf.sandbox.isolation.limits import Limits
from agentgolf.sandbox.isolation.process import SandboxedProcess
from agentgolf.sandbox.phase import PhaseSpec
from agentgolf.sandbox.run_setup import INSIDE_TRAIN, TRAINER_NAME

IMPORT_CHECK = (
    "import importlib.util, sys; s = importlib.util.spec_from_file_location('candidate', sys.argv[1]); "
    "m = importlib.util.module_from_spec(s); sys.modules['candidate'] = m; s.loader.exec_module(m); "
    "assert callable(getattr(m, 'load_model', None)), 'load_model(artifact_path, device) is missing'"
)
IMPORT_CHECK_SECONDS = 120.0


def check_import(
    trainer: Path, work_dir: Path, budget: Budget, *, isolation: str | None = None
) -> str | None:
    """Import a candidate trainer in the sandbox (no data in view): None if it imports, else the error line.

    This runs the candidate's module-level code, so it gets the same isolation and limits as training.
    """
    mode, _ = resolve_isolation(isolation)
    work_dir = Path(work_dir).absolute()
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    (work_dir / TRAINER_NAME).write_bytes(Path(trainer).read_bytes())
    inside = INSIDE_TRAIN if mode == "bwrap" else work_dir
    home = Path(SANDBOX_HOME) if mode == "bwrap" else work_dir
    env = {"PATH": f"{Path(sys.executable).parent}:{MINIMAL_PATH}", "HOME": str(home), "LANG": "C.UTF-8"}
    env |= {"PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(home)}
    spec = PhaseSpec(
        argv=[sys.executable, "-c", IMPORT_CHECK, TRAINER_NAME],
        cwd=inside,
        env=env,
        ro_binds=[(work_dir, INSIDE_TRAIN)] if mode == "bwrap" else [],
        limits=Limits(
            wall_seconds=min(IMPORT_CHECK_SECONDS, budget.train_kill_seconds),
            max_file_bytes=budget.max_file_bytes,
            memory_bytes=budget.memory_bytes,
            max_processes=budget.max_processes,
        ),
        log_path=work_dir / "import.log",
        log_bytes=budget.log_bytes,
    )
    outcome = SandboxedProcess(spec, mode).run()
    if outcome.timed_out:
        return f"importing {TRAINER_NAME} took over {spec.limits.wall_seconds:.0f} s"
    if outcome.returncode == 0:
        return None
    lines = [
        line for line in (work_dir / "import.log").read_text(errors="replace").splitlines() if line.strip()
    ]
    lines = [line for line in lines if not line.startswith("[agentgolf]")]
    return f"{TRAINER_NAME} fails to import: {lines[-1] if lines else f'exit code {outcome.returncode}'}"
