"""Optional machinery is imported only where it is used (issue 21, item 1): the GPU image lacks bm25s, optuna,
colorlog, openai and submitit, and `agentgolf init`, `ledger` and `status` must work there. Each check runs the
real CLI in a subprocess under bench/import_blocker (a sitecustomize that makes the named packages
unimportable, as on the image)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = ROOT / "bench" / "import_blocker"


def gpu_data():
    spec = importlib.util.spec_from_file_location("gpu_data_for_tests", ROOT / "bench" / "gpu_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blocked_run(argv: list[str], blocked, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(BLOCKER), "AGENTGOLF_BLOCK_IMPORTS": ",".join(blocked)}
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_cli_runs_without_the_optional_packages(tmp_path):
    optional = gpu_data().OPTIONAL
    assert set(optional) == {"bm25s", "optuna", "colorlog", "openai", "submitit"}
    cli = ["-m", "agentgolf.agent.cli.main"]
    # the positive control: the blocker is in force in these processes
    probe = blocked_run(["-c", "import bm25s"], optional, tmp_path)
    assert probe.returncode == 1 and "No module named 'bm25s' (blocked" in probe.stderr, probe.stderr

    done = blocked_run([*cli, "--help"], optional, tmp_path)
    assert done.returncode == 0 and "init" in done.stdout, done.stderr
    done = blocked_run([*cli, "init", "ws", "--demo"], optional, tmp_path, timeout=300)
    assert done.returncode == 0 and "workspace ready" in done.stdout, done.stdout + done.stderr
    ws = tmp_path / "ws"
    done = blocked_run([*cli, "ledger", "--json"], optional, ws)
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stderr
    done = blocked_run([*cli, "status", "--json"], optional, ws)
    assert "ModuleNotFoundError" not in done.stderr and "blocked" not in done.stderr, done.stderr
    # ...while the one command that ranks with BM25 does need it: the import is there, only later
    done = blocked_run([*cli, "similar", "lower the learning rate"], optional, ws)
    assert done.returncode != 0 and "bm25s" in done.stderr, done.stdout + done.stderr


def test_every_agentgolf_module_imports_without_the_optional_packages(tmp_path):
    code = (
        "import importlib, pkgutil, sys, agentgolf\n"
        "bad = {}\n"
        "for m in pkgutil.walk_packages(agentgolf.__path__, 'agentgolf.'):\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except Exception as e:\n"
        "        bad[m.name] = repr(e)\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = blocked_run(["-c", code], gpu_data().OPTIONAL, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wheel_missing_from_the_pack_fails_the_install_check_on_the_cpu(tmp_path):
    """The dry run blocks what the image lacks and WHEELS does not carry; drop bm25s from WHEELS and the
    check that the GPU check runs after its install (bench/gpu_harness.py imports) fails, naming it."""
    data = gpu_data()
    assert data.blocked_imports() == ["alembic", "distro", "jiter", "openai", "sqlalchemy", "submitit"]
    without = tuple(s for s in data.WHEELS if not s.startswith("bm25s"))
    blocked = data.blocked_imports(without)
    assert "bm25s" in blocked
    argv = [str(ROOT / "bench" / "gpu_harness.py"), "imports", "--workspace", str(tmp_path / "ws")]
    done = blocked_run(argv, blocked, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    facts = json.loads(line[len("RESULT ") :])
    assert facts["packages"]["bm25s"].startswith("FAIL ModuleNotFoundError") and facts["bm25"].startswith(
        "FAIL"
    )
    assert facts["packages"]["optuna"] == "4.9.0" and facts["tpe"].startswith("OK")  # no sqlalchemy needed
    assert facts["cli_init"].startswith("exit 0") and facts["ok"] is False


def test_the_carried_wheels_meet_each_others_requirements():
    """Each carried package, as installed here at the carried version, asks for versions of the other
    carried ones that the pack holds (pydantic 2.14.4 needs typing-extensions >= 4.16.0, say)."""
    data = gpu_data()
    pins = {Requirement(s).name.lower(): Requirement(s) for s in data.WHEELS}
    checked = 0
    for name, pin in pins.items():
        dist = importlib.metadata.distribution(name)
        if dist.version not in pin.specifier:
            continue  # another version here: its metadata says nothing of the carried one
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": "", "python_version": "3.12"}):
                continue
            carried = pins.get(req.name.lower())
            if carried is not None:
                (version,) = [str(s.version) for s in carried.specifier]
                assert version in req.specifier, f"{name} needs {req}, the pack carries {carried}"
                checked += 1
    assert checked >= 5
    specs = data.install_specs()
    assert "typing-extensions>=4.16.0" in specs and "bm25s==0.3.16" in specs and "optuna==4.9.0" in specs
