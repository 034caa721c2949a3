"""The proposer prompts: Markdown templates and the one module that renders them."""
