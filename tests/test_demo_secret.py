"""The demo's validation text is on no path the sandbox can read (baseline/corpus.py: disguise_docs).

The demo corpus is the standard library's source, which the sandbox binds read-only for Python to run: a
trainer can rebuild the held-out documents and memorize them (tests/sandbox_trainers/rebuild_demo_val.py).
A demo built the way `init --demo` builds it validates on those documents disguised with a fresh secret
seed, and the attack gains nothing there; against the old split (held-out documents as they are) the same
attack scores far better than the honest trainer, which shows that it works.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sentencepiece as spm

from agentgolf.agent.workspace import (
    DEMO_CORPUS_BYTES,
    DEMO_DATASET,
    DEMO_VAL_FRACTION,
    build_demo_dataset,
    init_workspace,
)
from agentgolf.baseline.corpus import demo_corpus, disguise_docs
from agentgolf.baseline.dataset import DatasetInfo, build_dataset
from agentgolf.baseline.shards import BOS_ID, read_shard
from agentgolf.sandbox.isolation.bwrap import find_bwrap
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.runner import run_sandboxed
from tests.sandbox_support import TEST_BUDGET, TOY, compose, data_spec

SMALL_BYTES = 600_000  # about 80 documents: 2 held out, a few thousand validation tokens
SMALL_VOCAB = 256
WORD = re.compile(r"(?<![\w\\])\w+")  # a word as disguise_docs sees one
PROBES = 20  # runs of validation text looked for in every source file on sys.path
PROBE_CHUNKS = 8  # whitespace-separated pieces a run


def _small(root, *, disguised: bool) -> DatasetInfo:
    kw = dict(vocab_size=SMALL_VOCAB, byte_fallback=False)
    if disguised:
        return build_demo_dataset(root, max_bytes=SMALL_BYTES, **kw)
    # the old way: the first DEMO_VAL_FRACTION of the documents validate as they are
    return build_dataset(
        demo_corpus(SMALL_BYTES), root, name=DEMO_DATASET, val_fraction=DEMO_VAL_FRACTION, **kw
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DatasetInfo:
    return _small(tmp_path_factory.mktemp("demo"), disguised=True)


@pytest.fixture(scope="module")
def old_way(tmp_path_factory) -> DatasetInfo:
    return _small(tmp_path_factory.mktemp("old_way"), disguised=False)


def _tokens(files) -> np.ndarray:
    return np.concatenate([read_shard(p) for p in files])


def _docs(tokens: np.ndarray) -> list[list[int]]:
    starts = [*np.flatnonzero(tokens == BOS_ID).tolist(), tokens.size]
    return [tokens[a + 1 : b].tolist() for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _sha(files) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]


def _pieces(info: DatasetInfo) -> list[str]:
    sp = spm.SentencePieceProcessor(model_file=str(info.tokenizer))
    return [sp.id_to_piece(i) for i in range(sp.vocab_size())]


# --- the disguise itself ----------------------------------------------------------------------------


def test_disguise_replaces_every_word_but_keywords_consistently_and_by_shape():
    doc = (
        "def _parse(self, text):\n"
        '    """Parse the text, or fail."""\n'
        "    if text is None or len(text) > 0x2000:\n"
        '        raise ValueError(r"bad \\n %s" % text)\n'
        "    return self._parse(text[1:])\n"
    )
    vocabulary = demo_corpus(200_000)
    out = disguise_docs([doc], vocabulary, seed=7)[0]
    assert WORD.sub("", out) == WORD.sub("", doc)  # punctuation, layout and escapes as they were
    pairs = list(zip(WORD.findall(doc), WORD.findall(out), strict=True))
    mapping = dict(pairs)
    assert len(mapping) == len(set(mapping.values()))  # one replacement a word, a different one each
    assert all(mapping[a] == b for a, b in pairs)  # the same everywhere in the document
    kept = {a for a, b in pairs if a == b}
    assert kept == {"def", "if", "is", "None", "or", "raise", "return", "r"}  # keywords, the r"" prefix
    assert mapping["_parse"].startswith("_") and mapping["_parse"][1].islower()
    assert hasattr(builtins, mapping["ValueError"]) and mapping["ValueError"][0].isupper()
    assert hasattr(builtins, mapping["len"]) and mapping["len"].islower()  # builtins by builtins
    assert re.fullmatch(r"\d\w{5}", mapping["0x2000"]) and re.fullmatch(r"\d", mapping["1"])
    assert disguise_docs([doc], vocabulary, seed=7) == [out]
    assert disguise_docs([doc], vocabulary) != disguise_docs([doc], vocabulary)  # a fresh secret seed


# --- the demo as init builds it -----------------------------------------------------------------------


def test_each_build_draws_new_validation_text_and_trains_on_the_stdlib_as_it_is(demo, old_way, tmp_path):
    again = _small(tmp_path, disguised=True)
    assert _sha(again.val_files) != _sha(demo.val_files)
    assert _sha(again.train_files) == _sha(demo.train_files) == _sha(old_way.train_files)
    assert _pieces(again) == _pieces(demo) == _pieces(old_way)  # one tokenizer, trained on training docs
    assert demo.val_docs == old_way.val_docs == 2
    # about the same size (this tiny vocabulary spells rare original names in more pieces; at the demo's
    # size and vocabulary the counts agree within a few percent)
    assert 0.7 < demo.val_tokens / old_way.val_tokens < 1.3
    assert not (
        set(map(tuple, _docs(_tokens(demo.val_files)))) & set(map(tuple, _docs(_tokens(old_way.val_files))))
    )


def _probes(info: DatasetInfo) -> list[str]:
    """The longest runs of PROBE_CHUNKS whitespace-separated pieces of the decoded validation text that
    hold at least four non-keyword words (so, in a disguised text, words that were replaced)."""
    sp = spm.SentencePieceProcessor(model_file=str(info.tokenizer))
    runs = []
    for doc in _docs(_tokens(info.val_files)):
        chunks = sp.decode(doc).split()
        for i in range(0, len(chunks) - PROBE_CHUNKS, PROBE_CHUNKS):
            run = " ".join(chunks[i : i + PROBE_CHUNKS])
            words = [w for w in WORD.findall(run) if not keyword.iskeyword(w)]
            if run.isascii() and "\u2047" not in run and len(words) >= 4:
                runs.append(run)
    assert len(runs) >= PROBES
    return sorted(runs, key=len, reverse=True)[:PROBES]


def _found_on_sys_path(probes: list[str]) -> set[str]:
    """The probes that some .py file on sys.path holds, whitespace runs read as one space (as the tokenizer
    decodes them)."""
    needles = {p.encode() for p in probes}
    found: set[bytes] = set()
    seen: set[str] = set()  # sys.path nests (the checkout holds the venv): each folder read once
    for root in sys.path:
        if not root or not os.path.isdir(root) or os.path.realpath(root) in seen:
            continue
        seen.add(os.path.realpath(root))
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(folder, d)) not in seen]
            seen.update(os.path.realpath(os.path.join(folder, d)) for d in dirs)
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), "rb") as f:
                        text = b" ".join(f.read().split())
                    found |= {n for n in needles - found if n in text}
    return {n.decode() for n in found}


def test_no_source_file_on_the_python_path_holds_the_validation_text(demo, old_way):
    disguised, original = _probes(demo), _probes(old_way)
    found = _found_on_sys_path(disguised + original)
    assert not found & set(disguised)
    assert set(original) <= found  # control: the old validation text is all there, in the stdlib


def test_init_demo_builds_a_disguised_validation_set(tmp_path):
    ws = init_workspace(tmp_path / "ws", demo=True, progress=False)
    config = ws.config
    info_dir = ws.root / config.data.dataset_dir
    sp = spm.SentencePieceProcessor(model_file=str(ws.root / config.data.tokenizer))
    docs = demo_corpus(DEMO_CORPUS_BYTES)
    n_val = round(DEMO_VAL_FRACTION * len(docs))
    val = _docs(_tokens(sorted(info_dir.glob("fineweb_val_*.bin"))))
    train = _docs(_tokens(sorted(info_dir.glob("fineweb_train_*.bin"))))
    assert len(val) == n_val and train == sp.encode(docs[n_val:])
    assert not set(map(tuple, val)) & set(map(tuple, sp.encode(docs)))
    original_tokens = sum(len(d) + 1 for d in sp.encode(docs[:n_val]))
    assert 0.9 < sum(len(d) + 1 for d in val) / original_tokens < 1.1
    assert "seed" not in (info_dir / "manifest.json").read_text()


# --- the attack --------------------------------------------------------------------------------------


@pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")
def test_rebuilding_the_stdlib_gains_nothing_on_the_disguised_validation_set(demo, old_way, tmp_path):
    attack = compose("rebuild_demo_val.py", tmp_path)
    jobs = {
        (label, name): (trainer, tmp_path / f"{label}_{name}", data_spec(info))
        for label, info in (("old", old_way), ("demo", demo))
        for name, trainer in (("honest", TOY), ("attack", attack))
    }
    with ThreadPoolExecutor(2) as pool:  # two runs at once, as the demo's two CPU slots run them
        runs = pool.map(lambda job: run_sandboxed(*job, TEST_BUDGET), jobs.values())
        results = dict(zip(jobs, runs, strict=True))
    for key, result in results.items():
        assert result.status is Status.ok, (key, result.reason)  # causal: nothing for the verifier to flag
    for label in ("old", "demo"):  # it rebuilt the held-out documents both times
        assert (
            "rebuilt 2 held-out stdlib documents" in (tmp_path / f"{label}_attack" / "train.log").read_text()
        )
    bpb = {key: result.val_bpb for key, result in results.items()}
    assert bpb["old", "attack"] < 0.3 * bpb["old", "honest"]  # control: memorized, it all but wins
    assert bpb["demo", "attack"] > 0.97 * bpb["demo", "honest"]  # disguised: no better than honest
