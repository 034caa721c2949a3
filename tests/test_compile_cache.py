"""The warm compile cache: built only by the baseline's own training, then copied into each phase and never
written back. Real bwrap, real trainers (the toy, with a stand-in for Inductor's and Triton's writes: a CPU
toy compiles nothing, and a real compile of the baseline takes minutes here), real scoring; the attacks
poison what they can reach, and a second candidate shows what the first left behind: nothing.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from agentgolf.agent.controller.executor import LocalConfig, LocalExecutor
from agentgolf.sandbox.isolation.bwrap import find_bwrap
from agentgolf.sandbox.isolation.compile_cache import BUILD_PREFIX, INSIDE_TEMPLATE, CacheUse, CompileCache
from agentgolf.sandbox.result import SandboxResult, Status
from tests.sandbox_support import MAIN_GUARD, TEST_BUDGET, TOY, data_spec

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")

ENTRY = Path("inductor") / "fxgraph" / "entry"
KERNEL = Path("triton") / "kernel.cubin"

# What the baseline's compile leaves: an Inductor entry and a Triton kernel, where the variables point.
BUILDS = """
def cache_work():
    import os
    for var, name, text in (("TORCHINDUCTOR_CACHE_DIR", "fxgraph/entry", "compiled by the baseline"),
                            ("TRITON_CACHE_DIR", "kernel.cubin", "kernel of the baseline")):
        path = os.path.join(os.environ[var], name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
"""

# A candidate: reads its copy (the positive control), poisons it, then goes for the template itself.
POISONS = f"""
def cache_work():
    import os
    root = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    print("CACHE_DIR", root, os.environ.get("TRITON_CACHE_DIR"), flush=True)
    entry = os.path.join(root or "/nowhere", "fxgraph", "entry")
    print("SAW", open(entry).read() if os.path.exists(entry) else "<nothing>", flush=True)
    if root:
        with open(entry, "w") as f:
            f.write("POISON")
    for path in ("{INSIDE_TEMPLATE}/inductor/fxgraph/entry", "{INSIDE_TEMPLATE}/planted"):
        try:
            with open(path, "w") as f:
                f.write("POISON")
            print("TEMPLATE WRITTEN", path, flush=True)
        except OSError as e:
            print("TEMPLATE refused errno", e.errno, flush=True)
"""


def _trainer(folder: Path, name: str, cache_code: str) -> Path:
    """The toy trainer, doing `cache_code` before it trains (only when run, not when scored)."""
    toy = TOY.read_text()
    assert toy.endswith(MAIN_GUARD)
    guard = 'if __name__ == "__main__":\n    cache_work()\n    main()\n'
    path = folder / name
    path.write_text(toy[: -len(MAIN_GUARD)] + "\n" + cache_code + "\n\n" + guard)
    return path


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


def _log(run_dir: Path) -> str:
    return (run_dir / "train.log").read_text()


@needs_bwrap
def test_the_template_is_built_by_the_baseline_copied_in_and_never_written_back(data, tmp_path):
    """The baseline (trusted) builds the template; a candidate gets a private copy it can read and change, the
    template read-only beside it; the next candidate sees the baseline's entries, not the first one's poison."""
    cache = CompileCache(tmp_path / "state" / "compile-cache")
    executor = LocalExecutor(data, LocalConfig(), cache)
    baseline = _trainer(tmp_path, "baseline.py", BUILDS)
    cache.trust(baseline.read_bytes())
    runs = tmp_path / "runs"
    built = executor.run(baseline, runs / "baseline", 1337, {}, None, TEST_BUDGET)
    assert built.status is Status.ok, built.reason
    assert (cache.template / ENTRY).read_text() == "compiled by the baseline"
    assert (cache.template / KERNEL).read_text() == "kernel of the baseline"
    assert not list(cache.root.glob(f"{BUILD_PREFIX}*"))  # the build became the template

    candidate = _trainer(tmp_path, "candidate.py", POISONS)
    first = executor.run(candidate, runs / "first", 1337, {}, None, TEST_BUDGET)
    log = _log(runs / "first")
    assert first.status is Status.ok, first.reason
    assert "CACHE_DIR /tmp/compile-cache/inductor /tmp/compile-cache/triton" in log, log
    assert "SAW compiled by the baseline" in log  # the copy holds the template's entries
    assert log.count(f"TEMPLATE refused errno {errno.EROFS}") == 2 and "TEMPLATE WRITTEN" not in log
    assert (cache.template / ENTRY).read_text() == "compiled by the baseline"  # its poison stayed in its copy
    assert sorted(p.name for p in cache.template.iterdir()) == ["inductor", "triton"]

    second = executor.run(candidate, runs / "second", 1337, {}, None, TEST_BUDGET)
    assert second.status is Status.ok, second.reason
    assert "SAW compiled by the baseline" in _log(runs / "second")  # not "POISON"


@needs_bwrap
def test_an_untrusted_trainer_never_builds_the_template(data, tmp_path):
    """Before any template exists, a candidate's phase gets no cache to write: what it compiles, or plants, dies
    with it. The same trainer trusted (the control) does build one."""
    cache = CompileCache(tmp_path / "compile-cache")
    executor = LocalExecutor(data, LocalConfig(), cache)
    attacker = _trainer(tmp_path, "attacker.py", POISONS)
    result = executor.run(attacker, tmp_path / "runs" / "attack", 1337, {}, None, TEST_BUDGET)
    assert result.status is Status.ok, result.reason
    assert "CACHE_DIR None None" in _log(tmp_path / "runs" / "attack")
    assert not cache.template.exists() and not list(cache.root.glob("*"))
    builder = _trainer(tmp_path, "builder.py", BUILDS)
    cache.trust(builder.read_bytes())
    assert executor.run(builder, tmp_path / "runs" / "build", 1337, {}, None, TEST_BUDGET).status is Status.ok
    assert (cache.template / ENTRY).read_text() == "compiled by the baseline"


def test_only_a_finished_nonempty_build_becomes_the_template_and_the_first_wins(tmp_path):
    cache = CompileCache(tmp_path, tag="2.11.0+cu128")
    assert cache.use_for(b"candidate") is None
    cache.trust(b"baseline")
    failed = cache.use_for(b"baseline")
    assert failed == CacheUse(build=failed.build) and failed.build.is_dir()
    (failed.build / "entry").write_text("half")
    assert not cache.finish(failed, SandboxResult(status=Status.timeout))
    assert not failed.build.exists() and not cache.template.exists()
    empty = cache.use_for(b"baseline")
    assert not cache.finish(empty, SandboxResult(status=Status.ok))  # compiled nothing: no template
    first, second = cache.use_for(b"baseline"), cache.use_for(b"baseline")
    (first.build / "entry").write_text("first")
    (second.build / "entry").write_text("second")
    assert cache.finish(first, SandboxResult(status=Status.over_time))  # trained and scored: complete
    assert not cache.finish(second, SandboxResult(status=Status.ok))  # another builder got there first
    assert (cache.template / "entry").read_text() == "first" and not second.build.exists()
    assert cache.use_for(b"candidate") == CacheUse(template=tmp_path / "2.11.0+cu128")
    assert LocalExecutor(None, LocalConfig(compile_cache=False), cache).cache is None  # type: ignore[arg-type]
