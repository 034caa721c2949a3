"""Curves where researchers already look: each experiment of a run streamed to TensorBoard or offline W&B."""
