"""Attack: fork without bound (every child keeps forking).

It first re-execs itself with $TAG on its command line (inherited by every fork) so the test can check
that nothing survives.
"""

import os
import sys

tag = os.environ.get("TAG", "")
if tag and tag not in sys.argv:
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), tag])
print("forking", flush=True)
while True:
    os.fork()
