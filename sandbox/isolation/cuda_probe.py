"""Can CUDA start inside a GPU phase's sandbox? Asked once per process for each slot, before its first phase.

The probe is trusted code run exactly as a phase would be: the slot's device nodes, the CUDA variables the
harness passes through and the folders they name (sandbox/isolation/bwrap.py), the phase's base environment, its
CUDA_VISIBLE_DEVICES. It imports torch, initialises CUDA, counts the slot's GPUs and, where Triton is
installed, asks it where libcuda is, as its first compile would. Its verdict is one line.

A failure is the machine's, not the candidate's: the run ends `infra_error` with that line, before any
training, instead of a trainer that cannot see its GPU (it would fall back to the CPU, or crash as if its
own code were at fault). A torch built without CUDA has nothing to probe: it passes, and the trainer's own
check (no silent CPU fallback) decides what such a run does. That is what a CPU machine with fake device
nodes tests (tests/test_gpu_env.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from agentgolf.sandbox.isolation.bwrap import (
    CUDA_ENV_KEYS,
    MINIMAL_PATH,
    SANDBOX_HOME,
    bwrap_command,
    find_bwrap,
)
from agentgolf.sandbox.isolation.limits import Limits
from agentgolf.sandbox.phase import PhaseSpec

CUDA_PROBE_SECONDS = 180  # importing torch and creating a CUDA context on every GPU of an 8-GPU slot
PROBE_MARK = "CUDA_PROBE"
PROBE_FILE_BYTES = 2**30  # what the probe may write (Triton's libcuda lookup runs ldconfig, nothing more)
PROBE_PROCESSES = 256  # tasks: CUDA's own threads, and the ldconfig Triton starts
PROBE_LINE_CHARS = 400  # the longest verdict carried into a result's reason

# One line on stdout, always: "CUDA_PROBE ok ...", "CUDA_PROBE cpu-build ..." or "CUDA_PROBE fail ...".
PROBE_SOURCE = f"""
import importlib.util, os, sys
def say(*words):
    print({PROBE_MARK!r}, *words, flush=True)
    sys.exit(0)
try:
    import torch
except Exception as e:
    say("fail", "import torch:", type(e).__name__, str(e).strip().splitlines()[-1:])
if torch.version.cuda is None:
    say("cpu-build", "torch", torch.__version__, "was built without CUDA")
want = int(sys.argv[1])
try:
    torch.cuda.init()
    found = torch.cuda.device_count()
except Exception as e:
    lines = str(e).strip().splitlines()
    say("fail", "torch.cuda.init():", type(e).__name__, lines[-1] if lines else "")
if found != want:
    say("fail", f"torch sees {{found}} GPU(s), the slot has {{want}}; LD_LIBRARY_PATH={{os.environ.get('LD_LIBRARY_PATH')}}")
if importlib.util.find_spec("triton") is not None:
    try:
        from triton.backends.nvidia.driver import libcuda_dirs
        libcuda_dirs()
    except ImportError:
        pass
    except Exception as e:
        lines = str(e).strip().splitlines()
        say("fail", "Triton cannot find libcuda:", type(e).__name__, lines[-1] if lines else "")
say("ok", found, "GPU(s),", torch.cuda.get_device_name(0), "torch", torch.__version__, "CUDA", torch.version.cuda)
"""

_verdicts: dict[tuple, str] = {}
_lock = threading.Lock()


def probe_env(base: dict[str, str], user: dict[str, str], visible: str) -> dict[str, str]:
    """What of a phase's environment the probe gets: PATH and the CUDA variables (the user's win, as in the
    phase), the slot's CUDA_VISIBLE_DEVICES, and a HOME and TMPDIR of its own."""
    keep = {k: v for k, v in base.items() if k not in ("HOME", "TMPDIR")}
    cuda = {k: v for k, v in user.items() if k in CUDA_ENV_KEYS or k == "PATH"}
    return {**keep, **cuda, "CUDA_VISIBLE_DEVICES": visible}


def cuda_problem(isolation: str, gpus: list[int], env: dict[str, str], hidden: list[Path]) -> str:
    """ "" if CUDA starts for this slot inside its sandbox, else one line saying what failed. Asked once per
    process for each (isolation, slot, environment); later phases on the same slot reuse the verdict."""
    key = (isolation, tuple(gpus), tuple(sorted(env.items())))
    with _lock:
        if key not in _verdicts:
            _verdicts[key] = _probe(isolation, gpus, env, hidden)
        return _verdicts[key]


def forget() -> None:
    """Drop the verdicts (tests; a machine whose driver was fixed while the harness ran)."""
    with _lock:
        _verdicts.clear()


def _probe(isolation: str, gpus: list[int], env: dict[str, str], hidden: list[Path]) -> str:
    with tempfile.TemporaryDirectory(prefix="agentgolf-cuda-probe-") as home:
        inside_home = SANDBOX_HOME if isolation == "bwrap" else home
        full_env = {"PATH": MINIMAL_PATH, **env, "HOME": inside_home, "TMPDIR": inside_home}
        argv = [sys.executable, "-c", PROBE_SOURCE, str(len(gpus))]
        run_env: dict[str, str] = full_env
        if isolation == "bwrap":
            bwrap = find_bwrap()
            if bwrap is None:
                return "CUDA probe: bubblewrap disappeared between checks"
            spec = PhaseSpec(
                argv=argv,
                cwd=Path("/"),
                env=full_env,
                gpus=gpus,
                limits=Limits(
                    wall_seconds=CUDA_PROBE_SECONDS,
                    max_file_bytes=PROBE_FILE_BYTES,
                    max_processes=PROBE_PROCESSES,
                    disk_bytes=PROBE_FILE_BYTES,
                ),
                log_path=Path(os.devnull),
                log_bytes=1,
                hidden=hidden,
            )
            argv = bwrap_command(spec, bwrap) + argv
            run_env = {"PATH": MINIMAL_PATH}
        try:
            done = subprocess.run(
                argv, env=run_env, cwd=home, capture_output=True, text=True, timeout=CUDA_PROBE_SECONDS
            )
        except subprocess.TimeoutExpired:
            return f"CUDA probe inside the sandbox did not answer within {CUDA_PROBE_SECONDS} s"
        except OSError as e:
            return f"CUDA probe could not start: {e}"
    return verdict(done.returncode, done.stdout, done.stderr)


def verdict(returncode: int, stdout: str, stderr: str) -> str:
    """The probe's answer as a reason ("" when CUDA works or torch has no CUDA): its own line, else the last
    line of what it (or bwrap, refusing to start) wrote to stderr."""
    lines = [line for line in stdout.splitlines() if line.startswith(PROBE_MARK + " ")]
    if lines:
        words = lines[-1].split(" ", 2)
        if len(words) > 1 and words[1] in ("ok", "cpu-build"):
            return ""
        return f"CUDA is not usable inside the sandbox: {lines[-1][:PROBE_LINE_CHARS]}"
    tail = [line for line in stderr.strip().splitlines() if line.strip()]
    said = tail[-1][:PROBE_LINE_CHARS] if tail else f"exit code {returncode}, no output"
    return f"CUDA probe failed inside the sandbox: {said}"
