"""Attack: fill the sandbox's RAM-backed scratch. Writes one growing file into FILL_DIR (/tmp or /dev/shm),
1 MiB at a time, up to FILL_BYTES; a refused write is retried, so only the harness can stop it."""

import os
import time

target = os.path.join(os.environ.get("FILL_DIR", "/tmp"), "filler.bin")
limit = int(os.environ.get("FILL_BYTES", str(8 * 2**30)))
chunk = os.urandom(2**20)  # incompressible: no page is shared or deduplicated
written = 0
print(f"filling {target}", flush=True)
with open(target, "wb", buffering=0) as f:
    while written < limit:
        try:
            written += f.write(chunk)
        except OSError as e:
            print(f"write refused after {written} bytes: {e}", flush=True)
            time.sleep(0.01)
print(f"wrote {written} bytes and was never stopped", flush=True)
