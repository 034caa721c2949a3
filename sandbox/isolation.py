"""Start one untrusted process under limits it cannot change, capture its output, and kill all of it.

Two modes. "bwrap": bubblewrap gives the process its own user, PID, network, IPC and UTS namespaces, a
root made of read-only system binds plus exactly the host paths the caller names, and no network. Killing
the outer bwrap kills the namespace's init and with it every process inside. "none": the same limits and
the same kill, but no filesystem or network isolation; stragglers that left the process group are found
by a per-run marker in their environment. In both modes each phase also gets its own pids cgroup when one
can be made (it caps the task count and lists every member for the kill), and rlimits are applied before
exec, so they are inherited by everything the candidate starts.

As root, RLIMIT_NPROC is not enforced (the kernel exempts uid 0, also inside a user namespace), so when
running as root the process limit comes from a pids cgroup; without one it is not enforced and we say so.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

ISOLATION_ENV = "AGENTGOLF_ISOLATION"  # "bwrap" (default when available) or "none"
MARKER_ENV = "AGENTGOLF_RUN_MARKER"  # set in every sandboxed process; lets a sweep of /proc find stragglers
BWRAP_CANDIDATES = ("/usr/bin/bwrap", "/usr/local/bin/bwrap")

SANDBOX_HOME = "/tmp"  # HOME inside the sandbox: a private tmpfs
SANDBOX_HOSTNAME = "sandbox"
HOSTS_TEXT = f"127.0.0.1 localhost {SANDBOX_HOSTNAME}\n::1 localhost ip6-localhost {SANDBOX_HOSTNAME}\n"
SYSTEM_RO_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# Readable by uid 0 inside the sandbox because host root owns them; hidden behind /dev/null or an empty dir.
SECRET_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers")
SECRET_DIRS = ("/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d")
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"

# The launcher prints this to the log once the sandbox is set up, just before exec'ing the candidate: a log
# without it means the sandbox itself failed (infra_error). A candidate cannot take back a line already printed.
READY_LINE = "[agentgolf] sandbox ready"
LAUNCHER = f'echo "{READY_LINE}" >&2 && exec "$@"'
HEAD_BYTES = 4096  # the start of the log, kept to look for READY_LINE

READ_CHUNK = 1 << 16
TAIL_BYTES = 64 * 1024  # kept in memory for parsing and for log_tail, even past the log cap
DRAIN_SECONDS = 5.0  # how long to wait for a pipe to reach EOF after the process tree is dead
KILL_ROUNDS = 20  # sweeps of the cgroup / marker before giving up on a process that keeps forking
KILL_ROUND_SLEEP = 0.05
BWRAP_PROBE_SECONDS = 10
CGROUP_OVERHEAD_TASKS = 4  # bwrap (outer + init) and the launcher shell, on top of the candidate's budget

CGROUP_V1_PIDS = Path("/sys/fs/cgroup/pids")
CGROUP_V2_ROOT = Path("/sys/fs/cgroup")


class IsolationError(RuntimeError):
    """Isolation was requested but cannot be provided (for example bwrap is not installed)."""


# --------------------------------------------------------------------------------------------------
# Choosing the mode


def find_bwrap() -> str | None:
    found = shutil.which("bwrap")
    if found:
        return found
    return next((p for p in BWRAP_CANDIDATES if os.access(p, os.X_OK)), None)


def resolve_isolation(requested: str | None = None) -> tuple[str, str]:
    """Return (mode, warning). An explicit request wins over AGENTGOLF_ISOLATION; bwrap is the default.

    Asking for "bwrap" where it is missing is an error; not asking falls back to "none" with a warning.
    """
    wanted = (requested or os.environ.get(ISOLATION_ENV) or "").strip().lower()
    if wanted not in ("", "bwrap", "none"):
        raise IsolationError(f"unknown isolation mode {wanted!r}: use 'bwrap' or 'none'")
    if wanted == "none":
        return (
            "none",
            "NO ISOLATION (requested): budgets are enforced, but the trainer can read any host file, "
            "including the validation data, and use the network",
        )
    bwrap = find_bwrap()
    problem = bwrap_works(bwrap) if bwrap else "bubblewrap is not installed (apt install bubblewrap)"
    if not problem:
        return "bwrap", ""
    if wanted == "bwrap":
        raise IsolationError(f"isolation 'bwrap' requested but unusable: {problem}")
    return (
        "none",
        f"NO ISOLATION ({problem}): budgets are enforced, but the trainer can read any host file, "
        "including the validation data, and use the network",
    )


# --------------------------------------------------------------------------------------------------
# What a phase is allowed


class Limits(BaseModel):
    """Limits applied from outside: a wall clock for the whole tree, and rlimits inherited by every child."""

    wall_seconds: float = Field(gt=0)
    max_file_bytes: int = Field(gt=0)
    memory_bytes: int | None = None  # RLIMIT_AS; leave None on GPU runs (CUDA reserves huge address space)
    max_processes: int = Field(gt=0)


class PhaseSpec(BaseModel):
    """One sandboxed process: argv and cwd as seen inside, host paths bound in, its whole environment."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    ro_binds: list[tuple[Path, Path]] = []  # (host path, path inside)
    rw_binds: list[tuple[Path, Path]] = []
    gpu: bool = False
    limits: Limits
    log_path: Path
    log_bytes: int
    protocol: bool = False  # stdin/stdout become pipes to the caller; only stderr goes to the log


def python_ro_paths() -> list[Path]:
    """Where this interpreter and its packages live, so the sandbox can run the same Python and torch."""
    import site
    import sysconfig

    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    candidates += list(site.getsitepackages())
    user_site = site.getusersitepackages()
    if isinstance(user_site, str) and os.path.isdir(user_site):
        candidates.append(user_site)
    candidates.append(os.path.dirname(os.path.realpath(sys.executable)))
    return _outermost([Path(c) for c in candidates if c and os.path.isdir(c)])


def _outermost(paths: list[Path]) -> list[Path]:
    """Drop paths nested inside others so each tree is bound once, parents before children."""
    resolved = sorted({p.absolute() for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for p in resolved:
        if not any(p == k or k in p.parents for k in kept):
            kept.append(p)
    return kept


def bwrap_command(spec: PhaseSpec, bwrap: str) -> list[str]:
    """The bubblewrap argv for a phase: nothing of the host but read-only system paths and the named binds."""
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    cmd += ["--cap-drop", "ALL", "--hostname", SANDBOX_HOSTNAME, "--clearenv"]
    for path in SYSTEM_RO_PATHS:
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    # /tmp first: a RAM-backed, size-capped scratch; binds below may land inside it (a venv under /tmp).
    cmd += ["--size", str(spec.limits.max_file_bytes), "--tmpfs", "/tmp"]
    for path in python_ro_paths():
        cmd += ["--ro-bind", str(path), str(path)]
    for path in SECRET_FILES:
        if os.path.isfile(path):
            cmd += ["--ro-bind", "/dev/null", path]
    for path in SECRET_DIRS:
        if os.path.isdir(path):
            cmd += ["--tmpfs", path, "--remount-ro", path]
    cmd += ["--ro-bind", str(hosts_file()), "/etc/hosts"]  # torchrun resolves its own hostname
    cmd += ["--proc", "/proc"]
    cmd += ["--dev", "/dev"]  # a minimal /dev (null, zero, random, tty, shm): no host disks
    if spec.gpu:  # only the NVIDIA device nodes, and sysfs (read-only) for NVML and NCCL's topology
        for node in gpu_device_nodes():
            cmd += ["--dev-bind", node, node]
        cmd += ["--ro-bind", "/sys", "/sys"]
    for host, inside in spec.ro_binds:
        cmd += ["--ro-bind", str(host), str(inside)]
    for host, inside in spec.rw_binds:
        cmd += ["--bind", str(host), str(inside)]
    for key, value in spec.env.items():
        cmd += ["--setenv", key, value]
    cmd += ["--chdir", str(spec.cwd), "--"]
    return cmd


@functools.lru_cache(maxsize=1)
def hosts_file() -> Path:
    """An /etc/hosts for the sandbox (loopback only, with its hostname), written once per harness process."""
    path = Path(tempfile.gettempdir()) / f"agentgolf-sandbox-hosts-{os.getuid()}"
    if not path.is_file() or path.read_text() != HOSTS_TEXT:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(HOSTS_TEXT)
        os.replace(tmp, path)
    return path


def gpu_device_nodes() -> list[str]:
    """/dev/nvidia0.., nvidiactl, nvidia-uvm(-tools), nvidia-modeset and the nvidia-caps folder, where present."""
    return sorted(str(p) for p in Path("/dev").glob("nvidia*"))


@functools.lru_cache(maxsize=1)
def bwrap_works(bwrap: str) -> str:
    """Try a throwaway sandbox once per process; returns "" if it works, else bwrap's complaint.

    Catches machines where bubblewrap is installed but user namespaces are disabled or restricted.
    """
    spec = PhaseSpec(
        argv=["/bin/true"],
        cwd=Path("/"),
        env={},
        limits=Limits(wall_seconds=1, max_file_bytes=2**20, max_processes=1),
        log_path=Path(os.devnull),
        log_bytes=1,
    )
    try:
        done = subprocess.run(
            bwrap_command(spec, bwrap) + ["/bin/true"],
            capture_output=True,
            text=True,
            timeout=BWRAP_PROBE_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit code {done.returncode}")


def launcher_argv(argv: list[str]) -> list[str]:
    """Wrap argv in a tiny shell step that reports readiness on the log before exec'ing argv."""
    return ["/bin/sh", "-c", LAUNCHER, "sh", *argv]


# --------------------------------------------------------------------------------------------------
# Process limit: rlimits and a pids cgroup


def count_user_tasks(uid: int) -> int:
    """Tasks (processes and threads) this uid owns now: RLIMIT_NPROC counts them all."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                n += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return n


class PidsCgroup:
    """A pids cgroup holding one phase: caps its task count and lists every member for the final kill."""

    def __init__(self, path: Path):
        self.path = path
        self._procs = str(path / "cgroup.procs")  # computed here: enter() runs between fork and exec

    @classmethod
    def create(cls, name: str, max_tasks: int) -> PidsCgroup | None:
        """Make one under the v1 pids hierarchy or the v2 root, or return None where we may not."""
        for base in (CGROUP_V1_PIDS, CGROUP_V2_ROOT):
            if base == CGROUP_V2_ROOT and "pids" not in _read(base / "cgroup.subtree_control"):
                continue
            if not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
                continue
            path = base / name
            try:
                path.mkdir()
                (path / "pids.max").write_text(str(max_tasks))
            except OSError:
                _rmdir_quiet(path)
                continue
            return cls(path)
        return None

    def enter(self) -> None:
        """Move the calling process in (called in the child between fork and exec)."""
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.path / "cgroup.procs").split()]

    def limit_hit(self) -> bool:
        """The kernel counts refused forks in pids.events ("max N")."""
        for line in _read(self.path / "pids.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max" and value.strip() not in ("", "0"):
                return True
        return False

    def remove(self) -> None:
        """rmdir, retried: the kernel may still be tearing down tasks we just killed (EBUSY)."""
        for _ in range(KILL_ROUNDS):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(KILL_ROUND_SLEEP)
        log.warning("could not remove cgroup %s", self.path)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


@functools.lru_cache(maxsize=1)
def process_limit_enforced() -> bool:
    """RLIMIT_NPROC binds every uid but root; root needs a pids cgroup we are allowed to create."""
    if os.getuid() != 0:
        return True
    probe = PidsCgroup.create(f"agentgolf-probe-{uuid.uuid4().hex}", 1)
    if probe is None:
        return False
    probe.remove()
    return True


def make_preexec(limits: Limits, cgroup: PidsCgroup | None) -> Callable[[], None]:
    """rlimits and cgroup membership, applied in the child before exec so every descendant inherits them."""
    nproc = count_user_tasks(os.getuid()) + limits.max_processes

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if limits.memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if cgroup is not None:
            cgroup.enter()

    return preexec


# --------------------------------------------------------------------------------------------------
# Killing a whole tree


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries this run's marker (ours, or anyone's when we are root)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_tree(pgid: int | None, marker: str, cgroup: PidsCgroup | None) -> int:
    """SIGKILL the process group, every cgroup member and every marked process, until none is left.

    Returns how many stragglers survived all rounds (0 is the expected answer).
    """
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    left: list[int] = []
    for _ in range(KILL_ROUNDS):
        left = sorted(set(marked_pids(marker)) | set(cgroup.pids() if cgroup else []))
        if not left:
            return 0
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(KILL_ROUND_SLEEP)
    return len(left)


# --------------------------------------------------------------------------------------------------
# Output capture


class LogCapture:
    """Drain a pipe into a file up to a byte cap, keep draining past it, and keep the last bytes in memory.

    The child never blocks on a full pipe (that would let it stall the harness), and a log that hits the
    cap ends with a note saying how much was dropped.
    """

    def __init__(self, fd: int, path: Path, cap: int):
        self.fd, self.path, self.cap = fd, path, cap
        self.written = 0
        self.dropped = 0
        self.error: OSError | None = None
        self._tail = bytearray()
        self._head = bytearray()
        self._stop = threading.Event()
        self._file = open(path, "wb")
        self._thread = threading.Thread(target=self._run, name=f"log:{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                if not ready:
                    if self._stop.is_set():
                        break
                    continue
                chunk = os.read(self.fd, READ_CHUNK)
                if not chunk:
                    break
                self._take(chunk)
        except OSError as e:  # harness-side I/O failure (disk full...): reported as infra_error
            self.error = e
        finally:
            self._finish()

    def _take(self, chunk: bytes) -> None:
        room = self.cap - self.written
        if room > 0:
            part = chunk[:room]
            self._file.write(part)
            self._file.flush()
            self.written += len(part)
        self.dropped += max(0, len(chunk) - max(room, 0))
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        self._tail += chunk
        if len(self._tail) > TAIL_BYTES:
            del self._tail[: len(self._tail) - TAIL_BYTES]

    def _finish(self) -> None:
        try:
            if self.dropped:
                note = (
                    f"\n[agentgolf: log truncated at {self.cap} bytes; {self.dropped} more bytes dropped]\n"
                )
                self._file.write(note.encode())
            self._file.close()
        except OSError as e:
            self.error = self.error or e
        try:
            os.close(self.fd)
        except OSError:
            pass

    def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Wait for EOF; if a leaked process still holds the pipe, stop reading anyway."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    @property
    def saw_ready(self) -> bool:
        return READY_LINE.encode() in self._head

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def tail(self, max_chars: int | None = None) -> str:
        text = bytes(self._tail).decode("utf-8", errors="replace")
        return text if max_chars is None else text[-max_chars:]

    def text(self) -> str:
        """What is worth parsing: the log file plus the in-memory tail (which outlives the cap)."""
        try:
            head = self.path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            head = ""
        return head + "\n" + self.tail() if self.truncated else head


# --------------------------------------------------------------------------------------------------
# The process


class PhaseOutcome(BaseModel):
    returncode: int | None
    ready: bool  # the sandbox was set up and the candidate's command started
    timed_out: bool
    aborted: bool = False  # killed by the harness before it finished, for a reason already decided
    wall_seconds: float
    signal: int | None = None  # the signal that ended the candidate's top process, if any
    limit_hit: bool = False  # the pids cgroup refused a fork
    survivors: int = 0  # processes that could not be killed (should be 0)
    log_error: str | None = None  # harness-side I/O error while writing the log


class SandboxedProcess:
    """One phase's process tree: start it, talk to it (protocol mode), wait for it, kill all of it.

    A watchdog kills the whole tree at the wall-clock limit, so blocking reads in the caller also end.
    """

    def __init__(self, spec: PhaseSpec, isolation: str, marker: str | None = None):
        self.spec, self.isolation = spec, isolation
        self.marker = marker or uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.cgroup: PidsCgroup | None = None
        self.capture: LogCapture | None = None
        self.timed_out = False
        self.aborted = False
        self._timer: threading.Timer | None = None
        self._t0 = 0.0
        self._killed_lock = threading.Lock()

    @property
    def stdin(self):
        return self.proc.stdin if self.proc else None

    @property
    def stdout(self):
        return self.proc.stdout if self.proc else None

    def start(self) -> int:
        """Launch the phase; returns the pid of its top process (bwrap's, or the launcher's)."""
        spec = self.spec
        env = {**spec.env, MARKER_ENV: self.marker}
        argv = launcher_argv(spec.argv)
        cwd: Path | None = spec.cwd
        host_env = env
        if self.isolation == "bwrap":
            bwrap = find_bwrap()
            if bwrap is None:
                raise IsolationError("bubblewrap disappeared between checks")
            argv = bwrap_command(spec.model_copy(update={"env": env}), bwrap) + argv
            host_env = {"PATH": MINIMAL_PATH, MARKER_ENV: self.marker}
            cwd = None
        self.cgroup = PidsCgroup.create(
            f"agentgolf-{self.marker}", spec.limits.max_processes + CGROUP_OVERHEAD_TASKS
        )
        log_r, log_w = os.pipe()
        try:
            self.capture = LogCapture(log_r, spec.log_path, spec.log_bytes)  # drains until the child's EOF
        except OSError:
            os.close(log_r)
            os.close(log_w)
            self._drop_cgroup()
            raise
        pipe = subprocess.PIPE if spec.protocol else subprocess.DEVNULL
        self._t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=host_env,
                stdin=pipe,
                stdout=pipe if spec.protocol else log_w,
                stderr=log_w,
                preexec_fn=make_preexec(spec.limits, self.cgroup),
                start_new_session=True,
            )
        except BaseException:
            self._drop_cgroup()
            raise
        finally:
            os.close(log_w)  # the capture sees EOF once every process holding the write end is gone
        self._timer = threading.Timer(spec.limits.wall_seconds, self._on_deadline)
        self._timer.daemon = True
        self._timer.start()
        return self.proc.pid

    def _drop_cgroup(self) -> None:
        if self.cgroup:
            self.cgroup.remove()
            self.cgroup = None

    def _on_deadline(self) -> None:
        if self.proc is not None and self.proc.poll() is None:  # not if it just exited on its own
            self.timed_out = True
            self.kill()

    def abort(self) -> None:
        """Kill the tree now because the caller is done with it (not a timeout, not the kernel)."""
        self.aborted = True
        self.kill()

    def kill(self) -> int:
        """SIGKILL everything this phase started; safe to call more than once, from any thread."""
        with self._killed_lock:
            pgid = self.proc.pid if self.proc else None
            return kill_tree(pgid, self.marker, self.cgroup)

    def abort_after(self, seconds: float) -> None:
        """Give the top process a moment to exit by itself (so its own exit status is seen), then abort."""
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.abort()

    def run(self, on_start: Callable[[int], None] | None = None) -> PhaseOutcome:
        """start(), report the pid, wait(); if anything here fails (or is interrupted), kill the tree first."""
        pid = self.start()
        try:
            if on_start:
                on_start(pid)
            return self.wait()
        except BaseException:
            self.abort()
            self.wait()
            raise

    def wait(self) -> PhaseOutcome:
        """Wait for the top process, then kill whatever it left behind and finish the log."""
        assert self.proc is not None and self.capture is not None, "start() first"
        try:
            rc = self.proc.wait()
        except BaseException:  # interrupted: never leave the tree running
            self.abort()
            rc = self.proc.wait()
            raise
        wall = time.monotonic() - self._t0
        if self._timer:
            self._timer.cancel()
        survivors = self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.capture.close()
        limit_hit = bool(self.cgroup and self.cgroup.limit_hit())
        self._drop_cgroup()
        if survivors:
            log.error("%d process(es) of run %s survived SIGKILL", survivors, self.marker)
        return PhaseOutcome(
            returncode=rc,
            ready=self.capture.saw_ready,
            timed_out=self.timed_out,
            aborted=self.aborted,
            wall_seconds=wall,
            signal=_signal_of(rc, self.isolation),
            limit_hit=limit_hit,
            survivors=survivors,
            log_error=str(self.capture.error) if self.capture.error else None,
        )


def _signal_of(rc: int | None, isolation: str) -> int | None:
    """The signal that ended the candidate: negative rc directly, or bwrap's 128+N convention."""
    if rc is None:
        return None
    if rc < 0:
        return -rc
    if isolation == "bwrap" and 128 < rc < 128 + 65:
        return rc - 128
    return None
