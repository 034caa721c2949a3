"""Resource isolation of a phase: its GPUs' device nodes only, a memory cgroup that counts /tmp and /dev/shm,
a cap on the bytes it writes in all, and a result that names every limit this machine could not enforce.

Real sandboxes (bubblewrap), real cgroups, real trainers that attack; each attack has an honest control that
passes under the same limits.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest

from agentgolf.sandbox.isolation import bwrap, cgroup
from agentgolf.sandbox.isolation.bwrap import GpuDevice, find_bwrap
from agentgolf.sandbox.isolation.cgroup import PhaseCgroup
from agentgolf.sandbox.isolation.limits import MIN_ENTRY_BYTES, written_bytes
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.runner import run_sandboxed
from tests.sandbox_support import TEST_BUDGET, TOY, TRAINERS, data_spec

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")

MEMORY = 512 * 2**20  # the honest toy (torch imported) fits in it; the attacks write 8 GiB
DISK = 32 * 2**20


def _memory_cgroup_here() -> bool:
    probe = PhaseCgroup.create(f"agentgolf-probe-{uuid.uuid4().hex}", 8, MEMORY)
    made = probe.memory_dir is not None
    probe.remove()
    return made


needs_memory_cgroup = pytest.mark.skipif(
    not _memory_cgroup_here(), reason="no writable memory cgroup here (v1 memory or v2 root): needs root"
)


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


def _log(run_dir: Path) -> str:
    return (run_dir / "train.log").read_text()


# --------------------------------------------------------------------------------------------------
# GPU device nodes


def _fake_nodes(root: Path, names: list[str]) -> str:
    """Fake device nodes. As root: character devices with /dev/null's numbers (1, 3), so that the one the
    slot gets opens for real without an NVIDIA driver, as a device node. Elsewhere mknod of a device is
    refused, and plain files stand in: bubblewrap binds and opens them the same way."""
    root.mkdir()
    kind = "char devices"
    for name in names:
        try:
            os.mknod(root / name, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            (root / name).write_bytes(b"")
            kind = "plain files"
    return kind


def test_the_slot_gets_its_own_gpu_nodes_and_the_control_nodes(tmp_path, monkeypatch):
    monkeypatch.setattr(bwrap, "nvidia_smi_gpus", lambda: {})  # node N is GPU N
    _fake_nodes(tmp_path / "dev", ["nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"])
    (tmp_path / "dev" / "nvidia-caps").mkdir()
    nodes = dict(bwrap.gpu_device_nodes([1], tmp_path / "dev"))
    inside = sorted(str(p) for p in nodes.values())
    assert inside == ["/dev/nvidia-caps", "/dev/nvidia-uvm", "/dev/nvidia1", "/dev/nvidiactl"]
    assert nodes[tmp_path / "dev" / "nvidia1"] == Path("/dev/nvidia1")
    # A slot GPU whose node is missing is still listed, so that bwrap refuses to start (an infra_error).
    assert Path("/dev/nvidia7") in dict(bwrap.gpu_device_nodes([7], tmp_path / "dev")).values()


def test_nvidia_smi_maps_a_slot_index_to_its_node_and_uuid(monkeypatch, tmp_path):
    """nvidia-smi's index need not be the node's minor number; and CUDA_VISIBLE_DEVICES names the GPU by UUID."""
    table = bwrap.parse_gpu_table(
        "0, 3, GPU-aaaaaaaa-0000-0000-0000-000000000000\n"
        "1, 2, GPU-bbbbbbbb-0000-0000-0000-000000000000\n"
        "2, [N/A], [N/A]\n"
        "garbage line\n"
    )
    assert table == {
        0: GpuDevice(0, 3, "GPU-aaaaaaaa-0000-0000-0000-000000000000"),
        1: GpuDevice(1, 2, "GPU-bbbbbbbb-0000-0000-0000-000000000000"),
        2: GpuDevice(2, 2, None),
    }
    monkeypatch.setattr(bwrap, "nvidia_smi_gpus", lambda: table)
    nodes = [str(inside) for _, inside in bwrap.gpu_device_nodes([0], tmp_path)]
    assert nodes == ["/dev/nvidia3"]  # no control node in an empty folder; GPU 0 is minor 3
    assert bwrap.cuda_visible_devices([1, 0]) == (
        "GPU-bbbbbbbb-0000-0000-0000-000000000000,GPU-aaaaaaaa-0000-0000-0000-000000000000"
    )
    assert bwrap.cuda_visible_devices([2]) == "2"  # no UUID: the index, as before
    monkeypatch.setattr(bwrap, "nvidia_smi_gpus", lambda: {})
    assert bwrap.cuda_visible_devices([3]) == "3"


def test_two_slots_first_sandboxes_write_the_hosts_file_at_once(tmp_path, monkeypatch):
    """Both threads' first calls get past lru_cache together. Each writer is held in os.replace until the
    other arrives (or 2 s pass, when a lock keeps it out): a temp name shared by the two made the second
    replace find nothing to move."""
    monkeypatch.setattr(bwrap.tempfile, "gettempdir", lambda: str(tmp_path))
    together, real_replace = threading.Barrier(2, timeout=2), os.replace

    def replace(src, dst):
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        real_replace(src, dst)

    monkeypatch.setattr(bwrap.os, "replace", replace)
    errors: list[BaseException] = []

    def first_sandbox() -> None:
        try:
            assert bwrap.hosts_file().read_text() == bwrap.HOSTS_TEXT
        except BaseException as e:
            errors.append(e)

    bwrap.hosts_file.cache_clear()
    try:
        threads = [threading.Thread(target=first_sandbox) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        bwrap.hosts_file.cache_clear()  # later tests get the real temp folder's file
    assert not errors, errors
    assert [p.name for p in tmp_path.iterdir()] == [f"agentgolf-sandbox-hosts-{os.getuid()}"]  # no temp left


@needs_bwrap
def test_a_sandboxed_candidate_opens_only_its_own_gpu_node(data, tmp_path, monkeypatch):
    """Slot [0] of three fake GPUs: inside, /dev/nvidia0 and the control node open (the positive control);
    the other GPUs' nodes do not exist, their host paths are out of view, and none can be made."""
    root = tmp_path / "fake-dev"
    kind = _fake_nodes(root, ["nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"])
    monkeypatch.setattr(bwrap, "DEVICE_ROOT", root)
    monkeypatch.setattr(bwrap, "nvidia_smi_gpus", lambda: {})
    host_nodes = os.pathsep.join(str(root / n) for n in ("nvidia1", "nvidia2"))
    run = tmp_path / "run"
    result = run_sandboxed(
        TRAINERS / "gpu_grab.py", run, data, TEST_BUDGET, gpus=[0], env={"HOST_NODES": host_nodes}
    )
    log = _log(run)
    assert "OPENED /dev/nvidia0" in log and "OPENED /dev/nvidiactl" in log, (kind, log)
    for other in ("/dev/nvidia1", "/dev/nvidia2", str(root / "nvidia1"), str(root / "nvidia2")):
        assert f"refused {other}: FileNotFoundError" in log, log
    assert log.count("OPENED") == 2 and "MADE" not in log
    assert "mknod refused /dev/nvidia1" in log
    assert "CUDA_VISIBLE_DEVICES=0" in log  # no nvidia-smi here: the slot's index, as before
    assert result.status is Status.crash and "no artifact" in result.reason  # it trains nothing
    assert not any(n.startswith("GPU isolation") for n in result.limits_not_enforced)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


@needs_bwrap
@pytest.mark.skipif(
    _gpu_count() < 2, reason="needs a machine with 2 or more GPUs (torch.cuda.device_count() < 2)"
)
def test_a_candidate_cannot_use_another_slots_gpu(data, tmp_path):
    """The real thing: a candidate on the last GPU drops CUDA_VISIBLE_DEVICES to grab every GPU; it can
    use exactly one, its own, both with the harness's CUDA_VISIBLE_DEVICES (the numbering is right) and
    without it (the nodes hold)."""
    import torch

    last = torch.cuda.device_count() - 1
    run = tmp_path / "run"
    result = run_sandboxed(TRAINERS / "gpu_grab.py", run, data, TEST_BUDGET, gpus=[last])
    log = _log(run)
    assert "SLOT_VIEW usable=1 of 1" in log, log
    assert re.search(r"GRAB usable=1 of \d+", log), log  # "of N": how many CUDA lists without the variable
    minor = bwrap.slot_devices([last])[0].minor
    assert f"OPENED /dev/nvidia{minor}" in log
    assert sum(f"OPENED /dev/nvidia{i}\n" in log for i in range(16)) == 1
    assert result.status is Status.crash and "no artifact" in result.reason


# --------------------------------------------------------------------------------------------------
# Memory: a per-phase memory cgroup that counts /tmp and /dev/shm


@needs_bwrap
@needs_memory_cgroup
@pytest.mark.parametrize("folder", ["/tmp", "/dev/shm"])
def test_filling_ram_backed_scratch_is_stopped_by_the_memory_limit(data, tmp_path, folder):
    """8 GiB into a tmpfs under a 512 MiB memory limit (its own size cap, disk_bytes, set far higher): the
    pages are the phase's RAM, so the kernel stops it at the memory limit, and the idea is charged `oom`
    (not a file-size status: no file passed max_file_bytes and no disk was touched)."""
    budget = TEST_BUDGET.model_copy(update={"phase_memory_bytes": MEMORY, "disk_bytes": 16 * 2**30})
    run = tmp_path / "run"
    t0 = time.monotonic()
    result = run_sandboxed(TRAINERS / "fill_tmpfs.py", run, data, budget, env={"FILL_DIR": folder})
    assert result.status is Status.oom and result.status.charges_idea, result.reason
    assert "more than its memory limit of 512.0 MiB" in result.reason and "/dev/shm" in result.reason
    assert f"filling {folder}/filler.bin" in _log(run) and "never stopped" not in _log(run)
    assert time.monotonic() - t0 < budget.train_kill_seconds  # stopped by the limit, not the clock


@needs_bwrap
@needs_memory_cgroup
def test_the_honest_trainer_passes_under_small_memory_and_disk_limits(data, tmp_path):
    """The control for both attacks: the toy trains, writes its artifact to the host and is scored."""
    budget = TEST_BUDGET.model_copy(update={"phase_memory_bytes": MEMORY, "disk_bytes": DISK})
    result = run_sandboxed(TOY, tmp_path / "run", data, budget)
    assert result.status is Status.ok, result.reason
    assert result.val_bpb is not None and (tmp_path / "run" / "train" / "final_model.int8.ptz").is_file()
    assert result.limits_not_enforced == [], result.limits_not_enforced


# --------------------------------------------------------------------------------------------------
# Disk: the bytes a phase writes in all, its run folder and its tmpfs together


@needs_bwrap
@pytest.mark.parametrize("folder", [".", "/tmp"])
def test_many_small_files_are_stopped_by_the_disk_limit(data, tmp_path, folder):
    """64 KiB files, far below max_file_bytes, until 8 GiB: into its run folder (host disk, counted from
    outside) or into /tmp (its tmpfs, capped by itself and summed with the run folder). Charged: violation."""
    budget = TEST_BUDGET.model_copy(update={"disk_bytes": DISK})
    run = tmp_path / "run"
    t0 = time.monotonic()
    result = run_sandboxed(TRAINERS / "many_files.py", run, data, budget, env={"FILES_DIR": folder})
    assert result.status is Status.violation and result.status.charges_idea, result.reason
    assert "more than its disk limit of 32.0 MiB" in result.reason, result.reason
    assert "never stopped" not in _log(run)
    assert time.monotonic() - t0 < budget.train_kill_seconds
    # a few polls past the cap at most, not the 8 GiB it tried
    assert written_bytes([run / "train"]) < 16 * DISK


def test_written_bytes_counts_what_files_take(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "a", tmp_path / "a-link")  # the same inode: once
    with open(tmp_path / "sparse", "wb") as f:  # 1 GiB long, nothing in it: costs a block at most
        f.truncate(2**30)
    (tmp_path / "empty").mkdir()
    for i in range(10):
        (tmp_path / "empty" / f"e{i}").touch()
    total = written_bytes([tmp_path])
    assert 100_000 <= total < 100_000 + 14 * MIN_ENTRY_BYTES + 8192
    assert total >= 11 * MIN_ENTRY_BYTES + 100_000  # each empty file and the folder count a block
    assert written_bytes([tmp_path], stop_above=1000) > 1000
    locked = tmp_path / "locked"  # a folder the candidate chmod 000ed still counts (it is unlocked)
    locked.mkdir()
    (locked / "hidden").write_bytes(b"y" * 200_000)
    locked.chmod(0)
    assert written_bytes([tmp_path]) >= total + 200_000


# --------------------------------------------------------------------------------------------------
# What could not be enforced is said


def test_limits_this_machine_cannot_enforce_are_named(data, tmp_path, monkeypatch):
    """No cgroup filesystem (the root pointed at a plain folder: as root, file modes cannot stand in for a
    machine without cgroups) and no isolation, on a GPU slot: memory, disk and GPU isolation are each named,
    the process limit too where we are root, in the result's list and in its reason."""
    no_cgroups = tmp_path / "not-a-cgroup-fs"
    no_cgroups.mkdir()
    monkeypatch.setattr(cgroup, "CGROUP_ROOT", no_cgroups)
    result = run_sandboxed(
        TRAINERS / "fake_score.py", tmp_path / "run", data, TEST_BUDGET, gpus=[0], isolation="none"
    )
    named = [n.split(":")[0] for n in result.limits_not_enforced]
    expected = ["memory limit", "disk limit", "GPU isolation"]
    if os.getuid() == 0:
        expected.insert(0, "process limit")
    assert named == expected, result.limits_not_enforced
    assert "GPU runs have no host memory limit" in result.limits_not_enforced[named.index("memory limit")]
    assert "NOT enforced here: " in result.reason and "GPU isolation" in result.reason
    assert not list(no_cgroups.iterdir())  # nothing was made there


@needs_bwrap
@needs_memory_cgroup
def test_with_cgroups_and_bwrap_nothing_is_named(data, tmp_path):
    """The control: where every limit holds, the list is empty and the reason has no note."""
    result = run_sandboxed(TRAINERS / "fake_score.py", tmp_path / "run", data, TEST_BUDGET)
    assert result.limits_not_enforced == [] and "NOT enforced" not in result.reason
