"""Attack: fill the disk with many small files, each far below the per-file limit (RLIMIT_FSIZE), in
FILES_DIR (its run folder, ".", or /tmp), up to FILES_BYTES in all; refused writes are retried."""

import os
import time

folder = os.path.join(os.environ.get("FILES_DIR", "."), "spray")
limit = int(os.environ.get("FILES_BYTES", str(8 * 2**30)))
chunk = os.urandom(64 * 1024)
os.makedirs(folder, exist_ok=True)
written = n = 0
print(f"spraying files into {folder}", flush=True)
while written < limit:
    try:
        with open(os.path.join(folder, f"f{n:07d}"), "wb") as f:
            f.write(chunk)
        written += len(chunk)
    except OSError as e:
        print(f"write refused after {written} bytes: {e}", flush=True)
        time.sleep(0.01)
    n += 1
print(f"wrote {written} bytes in {n} files and was never stopped", flush=True)
