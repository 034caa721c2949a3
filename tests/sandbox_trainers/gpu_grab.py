"""Attack: reach GPUs outside the slot. Opens every /dev/nvidia<N> node it can find or guess (0..15) and
the host paths in HOST_NODES, tries to make the nodes it lacks, and, where torch sees CUDA, drops
CUDA_VISIBLE_DEVICES and counts the GPUs it can allocate on. Prints one line per probe."""

import os
import stat
import subprocess
import sys

print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}", flush=True)
paths = [f"/dev/nvidia{i}" for i in range(16)] + ["/dev/nvidiactl"]
paths += [p for p in os.environ.get("HOST_NODES", "").split(os.pathsep) if p]
for path in paths:
    try:
        os.close(os.open(path, os.O_RDWR))
        print(f"OPENED {path}", flush=True)
    except OSError as e:
        print(f"refused {path}: {type(e).__name__}", flush=True)
for i in range(1, 4):
    try:
        os.mknod(f"/dev/nvidia{i}", stat.S_IFCHR | 0o666, os.makedev(195, i))
        print(f"MADE /dev/nvidia{i}", flush=True)
    except OSError as e:
        print(f"mknod refused /dev/nvidia{i}: {type(e).__name__}", flush=True)
probe = (
    "import sys, torch\n"
    "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "ok = 0\n"
    "for i in range(n):\n"
    "    try:\n"
    "        torch.ones(1, device=f'cuda:{i}'); ok += 1\n"
    "    except Exception as e:\n"
    "        print(f'cuda:{i} refused: {type(e).__name__}', flush=True)\n"
    "print(f'{sys.argv[1]} usable={ok} of {n}', flush=True)\n"
)
# As the harness set it up, then with CUDA_VISIBLE_DEVICES dropped: "all of them, please".
subprocess.run([sys.executable, "-c", probe, "SLOT_VIEW"], check=False)
env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
subprocess.run([sys.executable, "-c", probe, "GRAB"], env=env, check=False)
