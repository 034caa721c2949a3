"""agentgolf.baseline."""
