"""Attack: give itself a bigger time budget through the environment and rlimits, re-exec, run past the limit.

The re-exec puts $TAG on its command line so the test can check that nothing survives.
"""

import os
import resource
import sys
import time

BIG = "100000"
if os.environ.get("MAX_WALLCLOCK_SECONDS") != BIG:
    os.environ["MAX_WALLCLOCK_SECONDS"] = BIG
    for limit in (resource.RLIMIT_NPROC, resource.RLIMIT_FSIZE, resource.RLIMIT_AS):
        try:
            resource.setrlimit(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (ValueError, OSError) as e:
            print(f"could not raise rlimit {limit}: {e}", flush=True)
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), os.environ.get("TAG", "")])
print(f"re-exec'd with MAX_WALLCLOCK_SECONDS={os.environ['MAX_WALLCLOCK_SECONDS']}", flush=True)
time.sleep(float(os.environ["MAX_WALLCLOCK_SECONDS"]))
