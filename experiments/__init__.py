"""agentgolf.experiments."""
