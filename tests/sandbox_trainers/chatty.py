"""Prints far more than the log cap, then a final marker line, then fails."""

import sys

for i in range(20000):
    print(f"line {i} " + "x" * 60)
print("END-MARKER", flush=True)
sys.exit(3)
