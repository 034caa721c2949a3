"""Prints its environment, one NAME=value a line, then stops (no artifact)."""

import os

for key in sorted(os.environ):
    print(f"ENV {key}={os.environ[key]}", flush=True)
