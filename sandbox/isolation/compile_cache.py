"""A warm compile cache for training phases: built once from the baseline's own training, copied into each.

Without it every experiment compiles cold: inductor and Triton write into the phase's private /tmp, which is
charged to its memory and thrown away (about a minute per experiment on an H100, 10% of a 600 s slot).

- **Built from trusted code only.** A training phase whose trainer is byte for byte one the harness trusts
  (the baseline's, `CompileCache.trust`) compiles into a fresh host folder bound writable at the cache path.
  When it ends ok (or only over its time allowance: it trained and was scored), that folder becomes the
  template `.agentgolf/compile-cache/<torch version>`, by one rename; a second builder that finishes later
  is thrown away. A failed build is deleted.
- **Shared read-only, never writable.** Every other phase gets the template bound read-only at
  INSIDE_TEMPLATE and a private copy of it in its own /tmp (the launcher copies it before the trainer
  starts), where TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR point. What a candidate compiles, or plants, in
  its copy dies with its phase: it can poison no other experiment's cache.
- **Only with bubblewrap.** Without it a candidate could write the template on the host, and /tmp is not
  its own: no cache is used.
- **Before any template exists** an untrusted phase gets none and compiles cold, as before.

A trainer that compiles nothing (the CPU preset) leaves an empty build, which is deleted: no template.
A new torch version gets a folder of its own; Inductor and Triton key their entries by everything else
(device, code, options), so a stale entry is a miss, never wrong code.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import re
import shutil
import threading
import uuid
from pathlib import Path

from pydantic import BaseModel

from agentgolf.sandbox.result import SandboxResult, Status

CACHE_FOLDER = "compile-cache"  # under a workspace's .agentgolf/: one template per torch version
INSIDE_CACHE = Path("/tmp/compile-cache")  # where a phase compiles: its own tmpfs (or the build folder)
INSIDE_TEMPLATE = Path("/sandbox/compile-cache")  # the template, bound read-only
PUBLISHED = (Status.ok, Status.over_time)  # a build that trained and was scored; its entries are complete
BUILD_PREFIX = ".build-"  # a build in progress: `.build-<torch version>-<random>`, next to the templates
COPY_FAILED = "agentgolf: the compile cache could not be copied in; compiling cold"
# The launcher step before the trainer: copy the template ($2) into the phase's cache folder ($1), then exec.
COPY_STEP = f'{{ mkdir -p "$1" && cp -a "$2/." "$1/"; }} || echo "{COPY_FAILED}" >&2; shift 2; exec "$@"'


class CacheUse(BaseModel):
    """What one phase does with the cache: copy a template in, or (trusted) build one; at most one is set."""

    template: Path | None = None  # host folder, bound read-only and copied into the phase's /tmp
    build: Path | None = (
        None  # host folder, bound writable at INSIDE_CACHE: the trusted phase compiles into it
    )


def torch_tag() -> str:
    """The torch version the harness (and so every phase) runs, as a folder name: "2.11.0+cu128"."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        version = "no-torch"
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", version)


def cache_env(folder: Path) -> dict[str, str]:
    """Where Inductor and Triton keep their caches in a phase (the layout of the trainer's COMPILE_CACHE_DIR)."""
    return {
        "COMPILE_CACHE_DIR": str(folder),
        "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor"),
        "TRITON_CACHE_DIR": str(folder / "triton"),
    }


def copy_in(argv: list[str], template: Path, folder: Path) -> list[str]:
    """`argv` run after a private copy of `template` (as seen inside) is made at `folder`."""
    return ["/bin/sh", "-c", COPY_STEP, "sh", str(folder), str(template), *argv]


class CompileCache:
    """A workspace's compile caches (`root`: .agentgolf/compile-cache) and the trainers trusted to build one."""

    def __init__(self, root: Path, tag: str | None = None):
        self.root = Path(root).absolute()
        self.tag = tag or torch_tag()
        self._trusted: set[str] = set()
        self._lock = threading.Lock()

    @property
    def template(self) -> Path:
        return self.root / self.tag

    def trust(self, source: bytes) -> None:
        """A trainer whose phase may build the template: the baseline's own bytes (the harness's code)."""
        with self._lock:
            self._trusted.add(hashlib.sha256(source).hexdigest())

    def trusted(self, source: bytes) -> bool:
        with self._lock:
            return hashlib.sha256(source).hexdigest() in self._trusted

    def use_for(self, source: bytes) -> CacheUse | None:
        """The template where there is one; else a fresh build folder if `source` is trusted; else nothing."""
        if self.template.is_dir():
            return CacheUse(template=self.template)
        if not self.trusted(source):
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        build = self.root / f"{BUILD_PREFIX}{self.tag}-{uuid.uuid4().hex[:12]}"
        build.mkdir()
        return CacheUse(build=build)

    def finish(self, use: CacheUse | None, result: SandboxResult) -> bool:
        """After the phase: a build that ended well and holds entries becomes the template, unless another
        builder got there first; any other build is deleted. True when this one became the template."""
        if use is None or use.build is None:
            return False
        published = False
        try:
            if result.status in PUBLISHED and any(use.build.iterdir()) and not self.template.exists():
                with contextlib.suppress(OSError):  # lost the race to another builder: keep theirs
                    os.rename(use.build, self.template)
                    published = True
        finally:
            if not published:
                shutil.rmtree(use.build, ignore_errors=True)
        return published
