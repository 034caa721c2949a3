"""Shared fixtures: a tiny real dataset built offline from the Python standard library's sources."""

from __future__ import annotations

import pytest

from agentgolf.baseline.corpus import demo_corpus
from agentgolf.baseline.dataset import DatasetInfo, build_dataset

TINY_CORPUS_BYTES = 300_000
TINY_VOCAB = 256  # too small for 256 byte-fallback pieces: rare characters encode to <unk>
TINY_VAL_DOCS = 2  # about 8 KB of text, a few thousand tokens


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> DatasetInfo:
    root = tmp_path_factory.mktemp("tiny_dataset")
    return build_dataset(
        demo_corpus(TINY_CORPUS_BYTES),
        root,
        name="tiny",
        vocab_size=TINY_VOCAB,
        val_docs=TINY_VAL_DOCS,
        byte_fallback=False,
    )


@pytest.fixture(autouse=True, scope="session")
def _no_git_identity():
    """Run git as on a fresh CI machine: no global or system config, so no user.name/user.email."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    patch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    yield
    patch.undo()
