"""Trusted scoring: the harness streams validation rows to a sandboxed worker and verifies its answers."""
