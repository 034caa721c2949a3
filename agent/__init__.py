"""agentgolf.agent."""
