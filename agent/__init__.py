"""The run: settings, scheduling, acceptance, proposers, reports and the command line (the top layer)."""
