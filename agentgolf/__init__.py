"""agentgolf: an autonomous, sandboxed experiment loop for OpenAI's Parameter Golf challenge.

The package root holds what every layer shares and nothing else: the one error family
(`agentgolf.errors`) and the challenge's fixed numbers (`agentgolf.challenge`). The layers import
downwards only: agent -> experiments -> sandbox -> baseline's data tools -> this root
(`python bench/import_graph.py` prints the graph; tests/test_layout.py enforces it).
"""

from agentgolf.errors import AgentgolfError

__all__ = ["AgentgolfError"]
