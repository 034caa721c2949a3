"""The harness byte table against what SentencePiece itself decodes, with and without byte fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sentencepiece as spm

from agentgolf.baseline.corpus import demo_corpus
from agentgolf.baseline.tokenizer import BOS_ID, UNK_ID, train_tokenizer
from agentgolf.sandbox.scoring.bpb import ByteTable, ByteTableError, bits_per_byte

NON_ASCII = "Zürich café — naïve “quotes” 日本語 ✓ and ﬁ ligature, 3.14 μm."


@pytest.fixture(scope="module")
def corpus():
    return demo_corpus(200_000)


@pytest.fixture(scope="module")
def byte_fallback_model(tmp_path_factory, corpus):
    return train_tokenizer(corpus[8:], tmp_path_factory.mktemp("bpb") / "bf", 512)


def doc_bytes(table: ByteTable, ids: list[int]) -> int:
    """Bytes of a document scored as in eval: the first token's previous token is BOS."""
    target = np.array(ids)
    prev = np.array([BOS_ID, *ids[:-1]])
    return int(table.count(prev, target).sum())


def test_bytes_match_decoded_text_with_byte_fallback(byte_fallback_model, corpus):
    sp = spm.SentencePieceProcessor(model_file=str(byte_fallback_model))
    table = ByteTable.from_model(byte_fallback_model, 512)
    byte_pieces = 0
    for doc in corpus[:8] + [NON_ASCII, "  leading and trailing spaces  \n\n collapse  "]:
        ids = sp.encode(doc)
        assert UNK_ID not in ids
        byte_pieces += sum(sp.is_byte(i) for i in ids)
        decoded = sp.decode(ids)
        assert decoded == sp.normalize(doc).replace("\u2581", " ")  # what the tokens stand for
        assert doc_bytes(table, ids) == len(decoded.encode("utf-8"))
    assert byte_pieces > 0  # the non-ASCII text exercised byte-fallback pieces


def test_unknown_tokens_count_zero_bytes_without_byte_fallback(tiny_dataset):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_dataset.tokenizer))
    table = ByteTable.from_model(tiny_dataset.tokenizer, tiny_dataset.vocab_size)
    assert table.base_bytes[UNK_ID] == 0 and table.is_boundary[UNK_ID]
    for text in [NON_ASCII, "x 日本 y", "日本 starts unknown", "ends unknown 日本"]:
        ids = sp.encode(text)
        assert UNK_ID in ids
        # Exact rule: the normalized text's UTF-8 bytes, minus each unknown character's bytes, minus one
        # for every space right after an unknown character (<unk> is a boundary, so the next token's
        # leading space is not charged).
        norm = sp.normalize(text).replace("\u2581", " ")
        unknown = [sp.piece_to_id(c) == UNK_ID and c != " " for c in norm]
        expected = len(norm.encode("utf-8"))
        expected -= sum(len(c.encode("utf-8")) for c, u in zip(norm, unknown, strict=True) if u)
        expected -= sum(1 for i, c in enumerate(norm) if c == " " and i > 0 and unknown[i - 1])
        assert doc_bytes(table, ids) == expected


def test_leading_space_and_table_size(tiny_dataset):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_dataset.tokenizer))
    table = ByteTable.from_model(tiny_dataset.tokenizer, 300)  # trainer vocab larger than the model's
    assert table.size == 300
    assert not table.base_bytes[256:].any() and table.is_boundary[256:].all()
    spaced = next(
        i
        for i in range(sp.vocab_size())
        if sp.id_to_piece(i).startswith("\u2581") and len(sp.id_to_piece(i)) > 2
    )
    plain = next(i for i in range(4, sp.vocab_size()) if not sp.id_to_piece(i).startswith("\u2581"))
    base = len(sp.id_to_piece(spaced)[1:].encode())
    counts = table.count(np.array([BOS_ID, plain, UNK_ID, 280, 0]), np.full(5, spaced))
    assert counts.tolist() == [base, base + 1, base, base, base]  # space charged only after a normal piece
    assert table.count(np.array([plain]), np.array([BOS_ID])).tolist() == [0]
    assert table.count(np.zeros((2, 3), int), np.full((2, 3), spaced)).shape == (2, 3)
    with pytest.raises(ByteTableError, match="shape"):
        table.count(np.array([1, 2]), np.array([1]))
    with pytest.raises(ByteTableError, match=r"target ids must lie in \[0, 300\)"):
        table.count(np.array([1]), np.array([300]))
    with pytest.raises(ByteTableError, match="not a readable"):
        ByteTable.from_model(tiny_dataset.dataset_dir / "manifest.json", 256)


def test_bits_per_byte_hand_computed():
    # 4 tokens with mean loss 2.0 nats covering 10 bytes: 8 nats / (ln 2 * 10 bytes)
    assert bits_per_byte(8.0, 10) == pytest.approx(8.0 / (math.log(2) * 10))
    assert bits_per_byte(math.log(2) * 10, 5) == pytest.approx(2.0)
    # the official identity: bpb = (val_loss / ln 2) * tokens / bytes
    val_loss, tokens, n_bytes = 2.07269931, 1000, 2442
    assert bits_per_byte(val_loss * tokens, n_bytes) == pytest.approx(
        val_loss / math.log(2) * tokens / n_bytes
    )
    with pytest.raises(ValueError, match="n_bytes"):
        bits_per_byte(1.0, 0)
