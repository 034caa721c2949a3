"""Attack: exhaust memory. MODE=alloc allocates far past the limit; MODE=sigkill dies the way the kernel's
OOM killer would kill it (SIGKILL that the harness did not send)."""

import os
import signal

print("allocating", flush=True)
if os.environ.get("MODE") == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
hog = bytearray(64 * 2**30)
