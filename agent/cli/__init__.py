"""The `agentgolf` command line: argument parsing and one thin command per concept."""
