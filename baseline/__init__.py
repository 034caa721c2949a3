"""The trainer the agent patches (train_gpt.py, standalone) and the data tools: shards, corpus, tokenizer."""
