"""agentgolf.sandbox."""
