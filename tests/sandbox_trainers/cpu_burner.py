"""Attack: ignore every clock and compute forever, on more cores than its thread count: two busy children
beside itself, so its CPU seconds pile up faster than wall seconds pass."""

import subprocess
import sys

BUSY = "while True:\n    pass\n"
children = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
print(f"burning on {len(children) + 1} processes", flush=True)
while True:
    pass
