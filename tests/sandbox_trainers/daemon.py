"""Attack: leave a background process behind (double fork + setsid), optionally shedding its environment.

The grandchild's command line carries DAEMON_TAG so the test can look for it after the run.
"""

import os
import sys
import time

tag = os.environ["DAEMON_TAG"]
clear_env = os.environ.get("DAEMON_CLEAR_ENV") == "1"
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        env = {} if clear_env else dict(os.environ)
        os.execve(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", tag], env)
    os._exit(0)
time.sleep(0.5)  # let the daemon start
print("daemon started; exiting", flush=True)
