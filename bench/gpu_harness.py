"""The GPU check's calls into the real harness (agentgolf.sandbox), with no workspace, git or proposer.

    python bench/gpu_harness.py smoke   --data DIR --run-dir DIR [--fake-dev DIR] [--train-seconds S]
    python bench/gpu_harness.py trainer --data DIR --run-dir DIR --fake-dev DIR [--train-seconds S]   (dry run)
    python bench/gpu_harness.py score   --data DIR --run-dir DIR --artifact FILE --trainer-log LOG [--gpu]
    python bench/gpu_harness.py imports --workspace DIR      (after the install: agentgolf's packages and CLI)

`smoke`: bench/gpu_smoke.py run as the trainer by run_sandboxed with gpus=[0] (torchrun inside bubblewrap, the
stripped environment, the slot's device nodes). If its `cuda` step fails and LD_LIBRARY_PATH is set here, it is
run again with LD_LIBRARY_PATH passed as trainer env, and the last line says which try had CUDA.
`trainer`: the real baseline trainer through run_sandboxed with gpus=[0] and a short budget (the dry run's
sandbox leg, on fake device nodes: the training phase runs, and the scorer's cuda:0 cannot).
`score`: the harness's scorer and verifier on an artifact a plain trainer run left, against that trainer's
own roundtrip val_bpb and eval time read from its log (bench/gpu_check.py's parser).
--data DIR is bench/gpu_data.py's shards folder (datasets/..., tokenizers/...). Each prints a few lines and a
last line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import pkgutil
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SMOKE = BENCH / "gpu_smoke.py"
FAKE_NODES = ("nvidia0", "nvidiactl", "nvidia-uvm")


def data_spec(folder: Path, vocab_size: int):
    from agentgolf.sandbox.result import DataSpec

    (dataset,) = sorted((folder / "datasets").iterdir())
    (tokenizer,) = sorted((folder / "tokenizers").glob("*.model"))
    return DataSpec(
        train_files=sorted(dataset.glob("fineweb_train_*.bin")),
        val_files=sorted(dataset.glob("fineweb_val_*.bin")),
        tokenizer=tokenizer,
        vocab_size=vocab_size,
    )


def use_fake_devices(root: Path) -> str:
    """Fake /dev/nvidia* nodes under root, and the harness pointed at them: character devices with /dev/null's
    numbers as root (they open for real), else empty files (bubblewrap binds them the same way)."""
    from agentgolf.sandbox.isolation import bwrap

    root.mkdir(parents=True, exist_ok=True)
    kind = "char devices"
    for name in FAKE_NODES:
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
        try:
            os.mknod(root / name, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            (root / name).write_bytes(b"")
            kind = "plain files"
    bwrap.DEVICE_ROOT = root
    return f"fake device nodes ({kind}) in {root}: {', '.join(FAKE_NODES)}"


def _budget(train_seconds: float, grace: float | None):
    from agentgolf.sandbox.budget import Budget

    return Budget(train_seconds=train_seconds, **({} if grace is None else {"train_grace_seconds": grace}))


def _smoke_once(args, data, env: dict[str, str], label: str) -> dict:
    from agentgolf.sandbox.runner import run_sandboxed

    run_dir = args.run_dir / label
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.monotonic()
    result = run_sandboxed(SMOKE, run_dir, data, _budget(args.train_seconds, args.grace), gpus=[0], env=env)
    log = run_dir / "train.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    lines = [line[line.index("SMOKE ") :] for line in text.splitlines() if "SMOKE " in line]
    print(f"--- try {label}: trainer env {sorted(env) or 'none'}, {time.monotonic() - start:.1f} s")
    print("\n".join(lines) or "(no SMOKE line: see the tail below)")
    if not any(line.startswith("SMOKE done") for line in lines):
        print("train.log tail:\n" + text[-1500:])
    print(f"status {result.status.value} ({result.reason[:300]}); isolation {result.isolation}")
    if result.limits_not_enforced:
        print("limits not enforced: " + "; ".join(result.limits_not_enforced))
    steps = {p[1]: p[2] for p in (line.split() for line in lines) if len(p) > 2 and p[2] in ("OK", "FAIL")}
    return {"label": label, "steps": steps, "status": result.status.value, "isolation": result.isolation,
            "limits_not_enforced": result.limits_not_enforced}  # fmt: skip


def smoke(args) -> dict:
    if args.fake_dev:
        print(use_fake_devices(args.fake_dev))
    data = data_spec(args.data, args.vocab_size)
    # the dry run's switch to CPU stand-ins for the device steps travels as trainer env; nothing else does
    base = {"SMOKE_CPU_STANDIN": "1"} if os.environ.get("SMOKE_CPU_STANDIN") == "1" else {}
    tries = [_smoke_once(args, data, base, "stripped")]
    ld = os.environ.get("LD_LIBRARY_PATH")
    if tries[0]["steps"].get("cuda") != "OK" and ld:
        tries.append(_smoke_once(args, data, {**base, "LD_LIBRARY_PATH": ld}, "ld_library_path"))
    elif tries[0]["steps"].get("cuda") != "OK":
        print("--- no second try: LD_LIBRARY_PATH is not set here")
    worked = next((t["label"] for t in tries if t["steps"].get("cuda") == "OK"), "none")
    print(
        f"cuda inside the sandbox: {worked}"
        + (" (pass LD_LIBRARY_PATH)" if worked == "ld_library_path" else "")
    )
    return {"cuda_worked": worked, "tries": tries}


def trainer(args) -> dict:
    """The real trainer on gpus=[0], fake nodes; its recipe comes from this process's environment (TINY_ENV)."""
    from agentgolf.sandbox.runner import run_sandboxed

    print(use_fake_devices(args.fake_dev))
    names = os.environ.get("GPU_CHECK_TRAINER_ENV", "").split()
    env = {k: os.environ[k] for k in names if k in os.environ}
    budget = _budget(args.train_seconds, args.grace)
    judged = budget.for_gpus(True) if hasattr(budget, "for_gpus") else budget  # what run_sandboxed applies
    shutil.rmtree(args.run_dir, ignore_errors=True)
    result = run_sandboxed(ROOT / "baseline" / "train_gpt.py", args.run_dir, data_spec(args.data, args.vocab_size),
                           budget, gpus=[0], env=env)  # fmt: skip
    log = (
        (args.run_dir / "train.log").read_text(errors="replace")
        if (args.run_dir / "train.log").is_file()
        else ""
    )
    artifact = args.run_dir / "train" / "final_model.int8.ptz"
    facts = {
        "status": result.status.value, "reason": result.reason[:300], "isolation": result.isolation,
        "train_phase_s": result.train_seconds, "steps": result.steps, "train_seconds": judged.train_seconds,
        "grace_s": judged.train_grace_seconds, "allowed_s": getattr(judged, "train_allowed_seconds", None),
        "artifact": artifact.is_file(), "torchrun": "world_size:1" in log,
        "limits_not_enforced": result.limits_not_enforced,
    }  # fmt: skip
    for key, value in facts.items():
        print(f"{key}: {value}")
    return facts


def score(args) -> dict:
    sys.path.insert(0, str(BENCH))
    from gpu_check import parse_log

    from agentgolf.sandbox.isolation.bwrap import resolve_isolation
    from agentgolf.sandbox.metrics import compile_patterns
    from agentgolf.sandbox.result import SandboxResult, Status
    from agentgolf.sandbox.run_setup import RunSetup
    from agentgolf.sandbox.scoring.score_phase import score_artifact

    mode, warning = resolve_isolation(None)
    shutil.rmtree(args.run_dir, ignore_errors=True)
    args.run_dir.mkdir(parents=True)
    env = json.loads(args.env) if args.env else {}
    run = RunSetup(
        source=(ROOT / "baseline" / "train_gpt.py").read_bytes(), run_dir=args.run_dir,
        data=data_spec(args.data, args.vocab_size), budget=_budget(60, None), user_env=env, seed=1337,
        gpus=[0] if args.gpu else None, self_reported=False, patterns=compile_patterns(None), on_start=None,
        mode=mode,
    )  # fmt: skip
    run.prepare()
    shutil.copyfile(args.artifact, run.artifact_path())
    start = time.monotonic()
    result = score_artifact(run, SandboxResult(status=Status.ok))
    wall = time.monotonic() - start
    own = parse_log(args.trainer_log.read_text(errors="replace")) if args.trainer_log.is_file() else {}
    ver = result.verification or {}
    facts = {
        "status": result.status.value, "reason": result.reason[:300], "isolation": mode, "warning": warning,
        "device": "cuda:0" if args.gpu else "cpu", "harness_val_bpb": result.val_bpb,
        "trainer_val_bpb": own.get("val_bpb"), "trainer_eval_s": own.get("eval_s"),
        "harness_minus_trainer": result.val_bpb - own["val_bpb"] if result.val_bpb and own.get("val_bpb") else None,
        "scoring_wall_s": wall, "score_s": result.score_seconds, "verify_s": result.verify_seconds,
        "load_s": result.load_seconds, "predict_s": result.predict_seconds, "val_tokens": result.val_tokens,
        "verification": {k: ver.get(k) for k in ("positions", "max_gap_nats", "tolerance_nats") if k in ver},
        "limits_not_enforced": list(run.limit_notes),
    }  # fmt: skip
    if facts["trainer_eval_s"] and result.score_seconds:
        facts["harness_over_trainer_eval"] = (result.score_seconds + (result.verify_seconds or 0)) / facts[
            "trainer_eval_s"
        ]
    for key, value in facts.items():
        print(f"{key}: {value}")
    return facts


def imports(args) -> dict:
    """After the install: each package agentgolf's path needs, every agentgolf module, optuna's in-memory TPE
    and a bm25s ranking, then `agentgolf init` (no data) and `ledger --json` in a fresh workspace."""
    facts: dict = {"packages": {}, "modules_failed": {}}
    for name in (
        "pydantic",
        "git",
        "tenacity",
        "rich",
        "numpy",
        "sentencepiece",
        "bm25s",
        "optuna",
        "colorlog",
    ):
        try:
            module = importlib.import_module(name)
            facts["packages"][name] = getattr(module, "__version__", "ok")
        except Exception as e:  # noqa: BLE001
            facts["packages"][name] = f"FAIL {type(e).__name__}: {e}"
    import agentgolf

    for info in pkgutil.walk_packages(agentgolf.__path__, "agentgolf."):
        try:
            importlib.import_module(info.name)
        except Exception as e:  # noqa: BLE001
            facts["modules_failed"][info.name] = f"{type(e).__name__}: {e}"
    facts["tpe"] = _try(_tpe)
    facts["bm25"] = _try(_bm25)
    cli = [sys.executable, "-m", "agentgolf.agent.cli.main"]
    shutil.rmtree(args.workspace, ignore_errors=True)
    for label, argv, cwd in (("help", ["--help"], None), ("init", ["init", str(args.workspace)], None),
                             ("ledger", ["ledger", "--json"], args.workspace)):  # fmt: skip
        done = subprocess.run([*cli, *argv], cwd=cwd, capture_output=True, text=True, timeout=120)
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
        facts[f"cli_{label}"] = f"exit {done.returncode}: {tail[0][:200]}"
    for key, value in facts.items():
        print(f"{key}: {value}")
    bad = [v for v in facts["packages"].values() if str(v).startswith("FAIL")]
    ok = (
        not bad
        and not facts["modules_failed"]
        and all(
            str(facts[k]).startswith(("OK", "exit 0"))
            for k in ("tpe", "bm25", "cli_help", "cli_init", "cli_ledger")
        )
    )
    facts["ok"] = ok
    return facts


def _try(fn) -> str:
    try:
        return f"OK {fn()}"
    except Exception as e:  # noqa: BLE001
        return f"FAIL {type(e).__name__}: {e}"


def _tpe():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    for _ in range(4):
        trial = study.ask()
        study.tell(trial, (trial.suggest_float("lr", 1e-3, 1e-1, log=True) - 0.01) ** 2)
    return f"{len(study.trials)} trials, best {study.best_value:.2e}"


def _bm25():
    from agentgolf.agent.proposers.briefing.retrieval import _bm25s, _tokens

    bm25s = _bm25s()
    docs = _tokens(["lower the muon learning rate", "wider model", "longer warmdown schedule"])
    retriever = bm25s.BM25()
    retriever.index(docs, show_progress=False)
    scores = retriever.get_scores(_tokens(["muon learning rate"])[0])
    return f"best doc {int(scores.argmax())}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("smoke", "trainer", "score"):
        p = sub.add_parser(name)
        p.add_argument("--data", type=Path, required=True)
        p.add_argument("--run-dir", type=Path, required=True)
        p.add_argument("--vocab-size", type=int, default=int(os.environ.get("VOCAB_SIZE", 1024)))
        p.add_argument("--fake-dev", type=Path, required=name == "trainer")
        p.add_argument("--train-seconds", type=float, default=45.0)
        p.add_argument("--grace", type=float, help="train_grace_seconds (default: the Budget's)")
        if name == "score":
            p.add_argument("--artifact", type=Path, required=True)
            p.add_argument("--trainer-log", type=Path, required=True)
            p.add_argument("--gpu", action="store_true", help="score on cuda:0 (gpus=[0])")
            p.add_argument("--env", help="trainer env for the workers, as JSON")
    p = sub.add_parser("imports")
    p.add_argument("--workspace", type=Path, required=True)
    args = parser.parse_args()
    facts = {"smoke": smoke, "trainer": trainer, "score": score, "imports": imports}[args.cmd](args)
    print(("SANDBOX_LEG " if args.cmd == "trainer" else "RESULT ") + json.dumps(facts, default=str))
    if args.cmd == "imports":
        return 0 if facts["ok"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
