"""A GPU phase's environment on a machine without a GPU: the CUDA variables and the folders they name reach
the trainer (read-only), CUDA is probed in the sandbox before training, each GPU rank gets its share of the
cores, and a SLURM node that lists its GPUs by UUID trains on them (or fails as the machine's fault).

What cannot exist here is stood in for, and each test says so: /dev/nvidia* (fake nodes, as in
tests/test_isolation.py), nvidia-smi (a script on PATH answering the one query the harness makes), and a
torch built with CUDA (the probe's own script, where its failure is the point). bwrap, torchrun, the probe's
sandbox and the trainers are real.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from agentgolf.agent.controller.executor import GPU_THREAD_VARS, LocalExecutor
from agentgolf.sandbox import slurm
from agentgolf.sandbox.isolation import bwrap, cuda_probe
from agentgolf.sandbox.isolation.bwrap import cuda_env, cuda_paths, find_bwrap
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.runner import run_sandboxed
from tests.sandbox_support import TEST_BUDGET, TRAINERS, data_spec

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")

REAL_NVIDIA_SMI = bwrap.nvidia_smi_gpus  # fake_gpus replaces it; the SLURM test wants the real one back
UUID_A = "GPU-3f2a9c1e-0000-4000-8000-00000000000a"
UUID_B = "GPU-77b0d4aa-0000-4000-8000-00000000000b"

# Prints what a GPU phase must see, and tries what it must not do.
CUDA_ENV_TRAINER = """
import os
for key in ("LD_LIBRARY_PATH", "CUDA_HOME", "NVIDIA_DRIVER_CAPABILITIES", "HARNESS_ONLY", *THREAD_VARS):
    print(f"ENV {key}={os.environ.get(key, '<unset>')}", flush=True)
lib = os.environ["LIB_DIR"]
try:
    print("READ", open(os.path.join(lib, "libcuda.so.1")).read().strip(), flush=True)
except OSError as e:
    print("READ refused", type(e).__name__, flush=True)
try:
    with open(os.path.join(lib, "planted.so"), "w") as f:
        f.write("planted")
    print("WROTE into the library folder", flush=True)
except OSError as e:
    print("WRITE refused errno", e.errno, flush=True)
print("CUDA_HOME shows", os.path.exists(os.path.join(os.environ.get("CUDA_HOME", "/nowhere"), "bin", "nvcc")))
for path in os.environ["MUST_NOT_SEE"].split(os.pathsep):
    print("SEES" if os.path.exists(path) else "HIDDEN", path, flush=True)
"""


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """Fake /dev/nvidia0..1 and control nodes (no NVIDIA driver can exist here); no nvidia-smi: node N is GPU N.
    Plain files, or /dev/null's numbers as root: bubblewrap binds them the same way."""
    root = tmp_path / "fake-dev"
    root.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        try:
            os.mknod(root / name, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            (root / name).write_bytes(b"")
    monkeypatch.setattr(bwrap, "DEVICE_ROOT", root)
    monkeypatch.setattr(bwrap, "nvidia_smi_gpus", lambda: {})
    cuda_probe.forget()
    yield root
    cuda_probe.forget()


def _host_cuda(tmp_path: Path) -> dict[str, Path]:
    """A driver folder and a CUDA home outside every system path, as an image with /usr/local/nvidia not under
    /usr would have them; a folder beside them that no variable names."""
    host = tmp_path / "host"
    lib, cuda, other = host / "nvidia" / "lib64", host / "cuda", host / "other"
    for folder in (lib, cuda / "bin", other):
        folder.mkdir(parents=True)
    (lib / "libcuda.so.1").write_text("the driver's libcuda\n")
    (cuda / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (other / "secret.txt").write_text("not named by any CUDA variable\n")
    return {"lib": lib, "cuda": cuda, "other": other}


# --------------------------------------------------------------------------------------------------
# Item 3: the CUDA variables and their folders reach the trainer


@needs_bwrap
def test_cuda_variables_and_their_folders_reach_a_gpu_trainer_read_only(
    data, tmp_path, monkeypatch, fake_gpus
):
    """The harness has LD_LIBRARY_PATH (its driver folder outside the system paths, a system folder, a relative
    entry, the validation data's folder, and a folder holding the run folders), CUDA_HOME and
    NVIDIA_DRIVER_CAPABILITIES set. Inside a GPU phase on slot [0]: the variables as they are, the driver
    folder readable but not writable, CUDA_HOME shown; the data, the run folders and an unnamed sibling
    folder stay hidden; a variable off the list does not pass. Through the local executor, so each rank also
    has its share of the cores (item 7)."""
    paths = _host_cuda(tmp_path)
    val_dir = Path(data.val_files[0]).parent
    runs = tmp_path / "runs"
    listed = [str(paths["lib"]), "/usr/lib", "relative/lib", str(val_dir), str(tmp_path)]
    monkeypatch.setenv("LD_LIBRARY_PATH", os.pathsep.join(listed))
    monkeypatch.setenv("CUDA_HOME", str(paths["cuda"]))
    monkeypatch.setenv("NVIDIA_DRIVER_CAPABILITIES", "compute,utility")
    monkeypatch.setenv("HARNESS_ONLY", "the harness's own, never the trainer's")
    trainer = tmp_path / "cuda_env.py"
    trainer.write_text(f"THREAD_VARS = {GPU_THREAD_VARS!r}\n" + CUDA_ENV_TRAINER)
    must_not_see = [str(paths["other"] / "secret.txt"), str(data.val_files[0]), str(runs)]
    env = {"LIB_DIR": str(paths["lib"]), "MUST_NOT_SEE": os.pathsep.join(must_not_see)}
    executor = LocalExecutor(data)
    (slot,) = executor.slots([0], None)
    result = executor.run(trainer, runs / "gpu", 1337, env, slot, TEST_BUDGET)
    log = (runs / "gpu" / "train.log").read_text()
    assert f"ENV LD_LIBRARY_PATH={os.pathsep.join(listed)}" in log, log
    assert f"ENV CUDA_HOME={paths['cuda']}" in log and "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility" in log
    assert "ENV HARNESS_ONLY=<unset>" in log  # --clearenv still holds for everything off the list
    assert "READ the driver's libcuda" in log and "CUDA_HOME shows True" in log
    assert f"WRITE refused errno {errno.EROFS}" in log and not (paths["lib"] / "planted.so").exists()
    for path in must_not_see:
        assert f"HIDDEN {path}" in log, log
    share = max(1, (os.cpu_count() or 1) // 1)
    for key in GPU_THREAD_VARS:
        assert f"ENV {key}={share}" in log
    assert result.status is Status.crash and "no artifact" in result.reason  # it trains nothing
    # The control: the same harness environment, a CPU phase. Nothing of CUDA passes, the folder is not bound.
    cpu = run_sandboxed(trainer, runs / "cpu", data, TEST_BUDGET, env=env)
    log = (runs / "cpu" / "train.log").read_text()
    assert "ENV LD_LIBRARY_PATH=<unset>" in log and "ENV CUDA_HOME=<unset>" in log
    assert "READ refused FileNotFoundError" in log and "CUDA_HOME shows False" in log
    assert cpu.status is Status.crash


def test_only_folders_the_sandbox_would_not_show_are_bound(tmp_path):
    """System and interpreter paths are shown already; relative and missing entries, the sandbox's own mounts,
    "/", and anything that is, holds or lies in a hidden folder are never bound; nested folders bind once."""
    paths = _host_cuda(tmp_path)
    hidden = tmp_path / "workspace" / ".agentgolf"
    (hidden / "runs").mkdir(parents=True)
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join(
            [
                str(paths["lib"]),
                str(paths["lib"] / ".."),
                "/usr/lib",
                "rel",
                "",
                "/proc/self",
                "/",
                str(hidden),
            ]
        )
        + os.pathsep
        + os.pathsep.join([str(hidden / "runs"), str(tmp_path / "workspace"), str(tmp_path / "missing")]),
        "CUDA_HOME": str(paths["cuda"]),
        "TRITON_PTXAS_PATH": str(paths["cuda"] / "bin" / "nvcc"),  # a file: inside CUDA_HOME, bound with it
        "NVIDIA_VISIBLE_DEVICES": str(paths["other"]),  # not a path variable: never bound
    }
    assert sorted(cuda_paths(env, [hidden])) == sorted([paths["lib"].parent, paths["cuda"]])
    assert cuda_env({"CUDA_HOME": "/x", "CUDA_PATH": "", "PATH": "/bin"}) == {"CUDA_HOME": "/x"}


# --------------------------------------------------------------------------------------------------
# Item 3: CUDA probed inside the sandbox, once per process and slot


@needs_bwrap
def test_the_probe_runs_once_per_slot_and_lets_a_torch_without_cuda_pass(tmp_path, monkeypatch, fake_gpus):
    """The real probe, in a real sandbox on fake nodes: this torch has no CUDA, so there is nothing to probe
    and the trainer decides (it refuses to fall back to the CPU). Asked twice for a slot, it runs once."""
    calls = []
    real = cuda_probe._probe
    monkeypatch.setattr(cuda_probe, "_probe", lambda *a: calls.append(a[1]) or real(*a))
    env = {"PATH": bwrap.MINIMAL_PATH, "CUDA_VISIBLE_DEVICES": "0"}
    assert cuda_probe.cuda_problem("bwrap", [0], env, []) == ""
    assert cuda_probe.cuda_problem("bwrap", [0], env, []) == ""
    assert calls == [[0]]
    assert cuda_probe.cuda_problem("bwrap", [1], {**env, "CUDA_VISIBLE_DEVICES": "1"}, []) == ""
    assert calls == [[0], [1]]


@needs_bwrap
def test_a_slot_whose_sandbox_cannot_start_is_an_infra_error_before_training(data, tmp_path, fake_gpus):
    """Slot [3] has no device node here, as a driver that lost a GPU: the probe's sandbox cannot start, and the
    run ends infra_error with bwrap's line, before the trainer ever runs. Slot [0] is the control."""
    run = tmp_path / "run"
    result = run_sandboxed(TRAINERS / "print_env.py", run, data, TEST_BUDGET, gpus=[3])
    assert result.status is Status.infra_error and not result.status.charges_idea, result.reason
    assert result.reason.startswith("CUDA probe failed inside the sandbox: ") and "nvidia3" in result.reason
    assert not (run / "train.log").exists()
    control = run_sandboxed(TRAINERS / "print_env.py", tmp_path / "control", data, TEST_BUDGET, gpus=[0])
    assert control.status is Status.crash and "ENV CUDA_VISIBLE_DEVICES=0" in control.log_tail


@needs_bwrap
def test_a_failed_probe_carries_its_line_and_saw_what_the_phase_sees(data, tmp_path, monkeypatch, fake_gpus):
    """No torch with CUDA can exist here, so the probe's script stands in for one whose CUDA does not start: it
    reports the failure the way the real one does, with what it saw. The run is infra_error carrying that
    line, and the line shows the probe ran as the phase would: the harness's LD_LIBRARY_PATH, its folder
    bound, the slot's CUDA_VISIBLE_DEVICES."""
    paths = _host_cuda(tmp_path)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(paths["lib"]))
    stand_in = (
        "import os\n"
        "lib = os.environ.get('LD_LIBRARY_PATH', '')\n"
        "seen = os.path.exists(os.path.join(lib, 'libcuda.so.1'))\n"
        "print('CUDA_PROBE fail torch.cuda.init(): RuntimeError: no CUDA-capable device is detected;',\n"
        "      f'LD_LIBRARY_PATH={lib} libcuda={seen} visible={os.environ.get(\"CUDA_VISIBLE_DEVICES\")}')\n"
    )
    monkeypatch.setattr(cuda_probe, "PROBE_SOURCE", stand_in)
    run = tmp_path / "runs" / "run"  # not tmp_path / "run": the run folders' parent is hidden, host/ with it
    result = run_sandboxed(TRAINERS / "print_env.py", run, data, TEST_BUDGET, gpus=[1])
    assert result.status is Status.infra_error, result.reason
    assert result.reason.startswith(
        "CUDA is not usable inside the sandbox: CUDA_PROBE fail torch.cuda.init()"
    )
    assert f"LD_LIBRARY_PATH={paths['lib']} libcuda=True visible=1" in result.reason
    assert not (run / "train.log").exists()


def test_the_probe_verdict_is_one_line():
    assert cuda_probe.verdict(0, "noise\nCUDA_PROBE ok 1 GPU(s), NVIDIA H100 80GB HBM3\n", "") == ""
    assert cuda_probe.verdict(0, "CUDA_PROBE cpu-build torch 2.13.0+cpu was built without CUDA\n", "") == ""
    failed = cuda_probe.verdict(0, "CUDA_PROBE fail Triton cannot find libcuda: AssertionError: x\n", "")
    assert (
        failed
        == "CUDA is not usable inside the sandbox: CUDA_PROBE fail Triton cannot find libcuda: AssertionError: x"
    )
    bwrap_said = cuda_probe.verdict(1, "", "bwrap: Can't find source path /dev/nvidia3: No such file\n\n")
    assert (
        bwrap_said
        == "CUDA probe failed inside the sandbox: bwrap: Can't find source path /dev/nvidia3: No such file"
    )
    assert cuda_probe.verdict(139, "", "").endswith("exit code 139, no output")


# --------------------------------------------------------------------------------------------------
# Item 7: each GPU rank's share of the cores


def test_gpu_slots_share_the_cores(monkeypatch, tmp_path):
    """A 16-core machine (this one has fewer: os.cpu_count stands in). OMP_NUM_THREADS and
    TORCHINDUCTOR_COMPILE_THREADS are the cores ÷ the slots, split among a slot's ranks, at least 1; the
    user's trainer_env wins; CPU slots keep their own rule."""
    seen: list[dict[str, str]] = []
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(
        "agentgolf.agent.controller.executor.run_sandboxed",
        lambda *a, env, **k: seen.append(env) or _ok_result(),
    )
    trainer = tmp_path / "train_gpt.py"
    trainer.write_text("print('hello')\n")

    def shares(gpus: list[int], per: int | None, env: dict[str, str] | None = None) -> list[tuple]:
        executor = LocalExecutor(None)  # type: ignore[arg-type]  # no data: nothing runs
        for slot in executor.slots(gpus, per):
            executor.run(trainer, tmp_path / "run", 1, dict(env or {}), slot, TEST_BUDGET)
        got = [tuple(e.get(k) for k in GPU_THREAD_VARS) for e in seen]
        seen.clear()
        return got

    assert shares(list(range(8)), 1) == [("2", "2")] * 8  # 16 cores, 8 one-GPU slots
    assert shares([0, 1, 2, 3], 2) == [("4", "4")] * 2  # 2 slots of 2 ranks: 8 cores a slot, 4 a rank
    assert shares([0], None) == [("16", "16")]
    assert shares(list(range(64)), 1) == [("1", "1")] * 64  # never 0
    assert shares([0, 1], 1, {"OMP_NUM_THREADS": "3"}) == [("3", "8")] * 2  # trainer_env wins
    executor = LocalExecutor(None)  # type: ignore[arg-type]
    executor.run(trainer, tmp_path / "run", 1, {}, None, TEST_BUDGET)
    assert seen.pop() == {"OMP_NUM_THREADS": "16"}  # a CPU slot: its own share, no compile threads


def _ok_result():
    from agentgolf.sandbox.result import SandboxResult

    return SandboxResult(status=Status.ok)


# --------------------------------------------------------------------------------------------------
# Item 8: a SLURM node that lists its GPUs by UUID


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """nvidia-smi cannot exist here (no NVIDIA driver): a script on PATH answers the one query the harness
    makes, as a node with two GPUs whose index and minor number differ would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  *--query-gpu=index,minor_number,uuid*) printf '0, 1, {UUID_A}\\n1, 0, {UUID_B}\\n' ;;\n"
        "  *) echo 'unexpected query' >&2; exit 2 ;;\n"
        "esac\n"
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    REAL_NVIDIA_SMI.cache_clear()
    yield tool
    REAL_NVIDIA_SMI.cache_clear()


def test_slurm_gpu_uuids_map_to_their_indices(fake_nvidia_smi):
    assert slurm.job_gpus({"CUDA_VISIBLE_DEVICES": f"{UUID_B},{UUID_A}"}) == [1, 0]
    assert slurm.job_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == [2, 3]  # indices as they are
    assert slurm.job_gpus({"CUDA_VISIBLE_DEVICES": "", "SLURM_JOB_GPUS": UUID_A}) == [0]


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        ({"CUDA_VISIBLE_DEVICES": "GPU-00000000-dead-beef-0000-000000000000"}, "cannot map to an index"),
        ({"CUDA_VISIBLE_DEVICES": "MIG-4e6f8a1c-0000-4000-8000-000000000001"}, "no MIG"),
        ({"CUDA_VISIBLE_DEVICES": " ", "SLURM_JOB_GPUS": ""}, "list none"),
    ],
)
def test_slurm_gpus_that_cannot_be_mapped_fail_in_one_line(fake_nvidia_smi, environ, said):
    with pytest.raises(slurm.JobGpuError) as raised:
        slurm.job_gpus(environ)
    assert said in str(raised.value) and "\n" not in str(raised.value)


def test_without_nvidia_smi_a_uuid_cannot_be_mapped(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    REAL_NVIDIA_SMI.cache_clear()
    try:
        with pytest.raises(slurm.JobGpuError, match="nvidia-smi lists none"):
            slurm.job_gpus({"CUDA_VISIBLE_DEVICES": UUID_A})
    finally:
        REAL_NVIDIA_SMI.cache_clear()


@needs_bwrap
def test_a_slurm_job_given_uuids_trains_on_its_gpu_or_fails_as_infra(
    data, tmp_path, monkeypatch, fake_nvidia_smi, fake_gpus
):
    """The job's entry on the node, for real but for SLURM itself: UUID_A is index 0, whose node is minor 1,
    so the phase gets /dev/nvidia1 and CUDA_VISIBLE_DEVICES=UUID_A (it used to train on the CPU, gpus=None).
    An unknown UUID ends the job infra_error in result.json, where the loop reads it, before any training."""
    monkeypatch.setattr(bwrap, "nvidia_smi_gpus", REAL_NVIDIA_SMI)  # asks the fake tool, not fake_gpus' {}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUID_A)
    trainer = str(TRAINERS / "gpu_grab.py")
    args = (data.model_dump(mode="json"), TEST_BUDGET.model_dump(mode="json"), {}, 1337, 1)
    run = tmp_path / "job"
    run.mkdir()
    done = slurm.job_entry(trainer, str(run), *args)
    log = (run / "train.log").read_text()
    assert f"CUDA_VISIBLE_DEVICES={UUID_A}" in log and "OPENED /dev/nvidia1" in log, log
    assert "OPENED /dev/nvidia0" not in log and done["status"] == "crash"  # gpu_grab trains nothing
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-00000000-dead-beef-0000-000000000000")
    bad = tmp_path / "bad-job"
    bad.mkdir()
    failed = slurm.job_entry(trainer, str(bad), *args)
    written = slurm.SandboxResult.model_validate_json((bad / slurm.RESULT_FILE).read_text())
    assert failed["status"] == written.status.value == "infra_error"
    assert "cannot map to an index" in written.reason and not (bad / "train.log").exists()
    assert (bad / slurm.STARTED_FILE).exists()
