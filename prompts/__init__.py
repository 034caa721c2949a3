"""agentgolf.prompts."""
