"""The LLM proposer: an OpenAI-compatible endpoint in a tool-calling session on the worktree."""
