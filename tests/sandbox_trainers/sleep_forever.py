"""Attack: ignore the time limit (and SIGTERM) and sleep forever.

It first re-execs itself with $TAG on its command line so the test can check that nothing survives.
"""

import os
import signal
import sys
import time

tag = os.environ.get("TAG", "")
if tag and tag not in sys.argv:
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), tag])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("sleeping forever", flush=True)
while True:
    time.sleep(3600)
