"""The trainer contract: what a trainer must keep, the checks, and adopting a researcher's own."""
