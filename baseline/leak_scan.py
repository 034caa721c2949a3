"""The leak scan: which validation documents, and which validation token n-grams, occur in the training shards.

Both sides are hashed the same way, streaming, a chunk of tokens at a time (memory bounded by the chunk and
the validation sample, never by the training set):

- a document is the tokens after one BOS up to the next BOS (docs may span shards); its hash is a 64-bit
  polynomial hash of its tokens, mixed with its length, carried across chunks and shards by composing hashes;
- an n-gram is `ngram` consecutive tokens with no BOS inside (a BOS may open it); the same polynomial hash,
  from prefix sums in uint64 arithmetic (base B odd, so B has an inverse mod 2**64), so every position costs
  a few vectorized passes whatever n is. Only the n-grams whose hash has its top `log2(sample_every)` bits
  zero are kept, on both sides: the same n-gram is kept or dropped everywhere, so the share found among the
  kept validation n-grams estimates the share among all of them.

Each training shard is one task: it starts at its first BOS (shard 0: at its start) and reads on into the
next shards up to their first BOS, so a document crossing a shard boundary is hashed whole exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from agentgolf.baseline.shards import BOS_ID, read_shard

_B = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2**64
_B_INV = np.uint64(pow(0x9E3779B97F4A7C15, -1, 1 << 64))
_MASK = (1 << 64) - 1
_MIX1, _MIX2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)


class _Powers:
    """B**i and B**-i mod 2**64 for i < size, grown on demand (uint64 products wrap, which is the modulus)."""

    def __init__(self) -> None:
        self.fwd = np.ones(1, dtype=np.uint64)
        self.inv = np.ones(1, dtype=np.uint64)

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n > self.fwd.size:
            size = max(n, 2 * self.fwd.size)
            with np.errstate(over="ignore"):
                self.fwd = np.cumprod(np.full(size, _B, dtype=np.uint64)) * _B_INV  # B**0 .. B**(size-1)
                self.inv = np.cumprod(np.full(size, _B_INV, dtype=np.uint64)) * _B
        return self.fwd[:n], self.inv[:n]


def _mix(h: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Finalize document hashes with their lengths (so runs of one token of different lengths differ)."""
    with np.errstate(over="ignore"):
        h = h ^ (length.astype(np.uint64) * _MIX2)
        h = (h ^ (h >> np.uint64(33))) * _MIX1
        return h ^ (h >> np.uint64(33))


_EMPTY = np.zeros(0, np.uint64)
_NONE = np.zeros(0, np.int64)


class Hasher:
    """Streams token chunks; returns kept n-gram hashes and finished documents' hashes as it goes.

    The first document starts at the stream's first BOS; tokens before it are hashed as n-grams only.
    """

    def __init__(self, ngram: int, sample_every: int, min_doc_tokens: int):
        self.n = ngram
        bits = sample_every.bit_length() - 1  # sample_every is a power of two: keep hashes under 2**(64-bits)
        self.below = np.uint64(1 << (64 - bits)) if bits else None
        self.min_doc = min_doc_tokens
        self.powers = _Powers()
        self.tail = np.zeros(0, dtype=np.uint16)  # the last n-1 tokens, for n-grams across chunks
        self.doc_open = False  # a BOS was seen: a document is open
        self.doc_hash, self.doc_len = 0, 0  # the open document so far (polynomial hash, tokens)
        self.tokens = self.bos = self.max_token = 0

    def feed(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hash one chunk; returns (kept n-gram hashes, hashes of the documents it finished)."""
        chunk = np.asarray(chunk, dtype=np.uint16)
        if chunk.size == 0:
            return _EMPTY, _EMPTY
        self.tokens += chunk.size
        self.max_token = max(self.max_token, int(chunk.max()))
        t16 = np.concatenate([self.tail, chunk])
        fwd, inv = self.powers.upto(t16.size)
        with np.errstate(over="ignore"):
            q = np.zeros(t16.size + 1, dtype=np.uint64)
            np.cumsum(t16.astype(np.uint64) * inv, out=q[1:])  # q[k] = sum_{j<k} t[j] B**-j
            grams = self._ngrams(t16, q, fwd)
            docs = self._docs(t16, q, fwd, self.tail.size)
        self.tail = t16[max(0, t16.size - (self.n - 1)) :].copy()
        return grams, docs

    def _ngrams(self, t16: np.ndarray, q: np.ndarray, fwd: np.ndarray) -> np.ndarray:
        n = self.n
        if t16.size < n:
            return _EMPTY
        h = np.subtract(q[n:], q[:-n])
        np.multiply(h, fwd[n - 1 :], out=h)  # window i: sum t[k] B**(i+n-1-k), the same wherever it is
        keep = np.flatnonzero(h < self.below) if self.below is not None else np.arange(h.size)
        bos = np.flatnonzero(t16 == BOS_ID)
        if bos.size and keep.size:  # drop windows with a BOS after their first token
            nxt = np.searchsorted(bos, keep, side="right")
            inside = nxt < bos.size
            inside[inside] = bos[nxt[inside]] <= keep[inside] + n - 1
            keep = keep[~inside]
        return h[keep]

    def _docs(self, t16: np.ndarray, q: np.ndarray, fwd: np.ndarray, off: int) -> np.ndarray:
        """Close the open doc at this chunk's first BOS, hash the whole docs inside, open the last one."""
        bos = np.flatnonzero(t16[off:] == BOS_ID) + off
        self.bos += bos.size
        if bos.size == 0:
            self._extend(q, fwd, off, t16.size)
            return _EMPTY
        self._extend(q, fwd, off, int(bos[0]))
        starts, stops = bos[:-1] + 1, bos[1:]  # whole docs: the content after each BOS up to the next
        hashes = (q[stops] - q[starts]) * fwd[np.maximum(stops - 1, 0)]
        lengths = (stops - starts).astype(np.int64)
        if self.doc_open:
            hashes = np.concatenate([np.array([self.doc_hash], np.uint64), hashes])
            lengths = np.concatenate([np.array([self.doc_len], np.int64), lengths])
        self.doc_open, self.doc_hash, self.doc_len = True, 0, 0
        self._extend(q, fwd, int(bos[-1]) + 1, t16.size)
        ok = lengths >= self.min_doc
        return _mix(hashes[ok], lengths[ok])

    def _extend(self, q: np.ndarray, fwd: np.ndarray, a: int, b: int) -> None:
        """Append t[a:b] to the open doc: H(XY) = H(X) * B**len(Y) + H(Y)."""
        if b <= a or not self.doc_open:
            return
        part = int((q[b] - q[a]) * fwd[b - 1])
        self.doc_hash = (self.doc_hash * pow(int(_B), b - a, 1 << 64) + part) & _MASK
        self.doc_len += b - a

    def finish(self) -> np.ndarray:
        """The doc still open when the stream ends (whole: a stream ends at a BOS or the data's end)."""
        if self.doc_open and self.doc_len >= self.min_doc:
            return _mix(np.array([self.doc_hash], np.uint64), np.array([self.doc_len], np.int64))
        return _EMPTY

    def stats(self) -> dict[str, int]:
        return {"tokens": self.tokens, "bos": self.bos, "max_token": self.max_token}


def _first_bos(tokens: np.ndarray, chunk_tokens: int) -> int | None:
    for a in range(0, tokens.size, chunk_tokens):
        hits = np.flatnonzero(tokens[a : a + chunk_tokens] == BOS_ID)
        if hits.size:
            return a + int(hits[0])
    return None


def _chunks(files: list[Path], start: int, chunk_tokens: int) -> Iterator[np.ndarray]:
    """files[0] from `start` to its end, then the next files up to their first BOS (whole files without one)."""
    for i, path in enumerate(files):
        tokens = read_shard(path, mmap=True)
        stop = None if i == 0 else _first_bos(tokens, chunk_tokens)
        lo, hi = (start if i == 0 else 0), (tokens.size if stop is None else stop)
        for a in range(lo, hi, chunk_tokens):
            yield np.asarray(tokens[a : min(hi, a + chunk_tokens)])
        if stop is not None:
            return


class ValSample:
    """The validation side: unique doc hashes and kept n-gram hashes, each with how often it occurs."""

    def __init__(
        self, doc_hashes: np.ndarray, gram_hashes: np.ndarray, stats: dict[str, int], sample_every: int
    ):
        self.docs, self.doc_counts = np.unique(doc_hashes, return_counts=True)
        self.grams, self.gram_counts = np.unique(gram_hashes, return_counts=True)
        self.stats = stats
        # A filter before the binary search: one flag per value of the hash bits under the sampled-off top
        # bits, about 16 slots per kept n-gram, so nearly every training n-gram is ruled out by one lookup.
        size_bits = max(20, int(self.grams.size * 16).bit_length())
        self.shift = np.uint64(64 - (sample_every.bit_length() - 1) - size_bits)
        self.filter = np.zeros(1 << size_bits, dtype=bool)
        self.filter[self.index(self.grams)] = True

    def index(self, grams: np.ndarray) -> np.ndarray:
        return (grams >> self.shift) & np.uint64(self.filter.size - 1)

    def gram_hits(self, grams: np.ndarray) -> np.ndarray:
        """Indices into `grams` of the training n-grams found among the validation ones."""
        return _hits(self.grams, grams[self.filter[self.index(grams)]])

    @classmethod
    def build(
        cls, val_files: list[Path], ngram: int, sample_every: int, min_doc: int, chunk: int
    ) -> ValSample:
        """Hash the validation shards as one stream (their docs continue across shards)."""
        h = Hasher(ngram, sample_every, min_doc)
        grams, docs = [_EMPTY], [_EMPTY]
        for path in val_files:
            tokens = read_shard(path, mmap=True)
            for a in range(0, tokens.size, chunk):
                g, d = h.feed(tokens[a : a + chunk])
                grams.append(g)
                docs.append(d)
        docs.append(h.finish())
        return cls(np.concatenate(docs), np.concatenate(grams), h.stats(), sample_every)


def _hits(table: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Indices into the sorted `table` of the queries found in it."""
    if table.size == 0 or queries.size == 0:
        return _NONE
    idx = np.searchsorted(table, queries)
    idx[idx == table.size] = 0
    return np.unique(idx[table[idx] == queries])


_VAL: ValSample | None = None  # a worker's copy of the validation side


def _init(val: ValSample | None) -> None:
    global _VAL
    _VAL = val


def scan_shard(
    files: list[Path], index: int, ngram: int, sample_every: int, min_doc: int, chunk: int
) -> dict:
    """One task: shard `index` from its first BOS (the first shard: from its start) into the next shards' heads."""
    val = _VAL
    assert val is not None
    start = 0 if index == 0 else _first_bos(read_shard(files[index], mmap=True), chunk)
    if start is None:  # the whole shard continues the previous shard's last doc: that task hashes it
        return {"docs": _NONE, "grams": _NONE, "tokens": 0, "bos": 0, "max_token": 0}
    h = Hasher(ngram, sample_every, min_doc)
    doc_hits, gram_hits = [_NONE], [_NONE]
    for c in _chunks(files[index:], start, chunk):
        g, d = h.feed(c)
        gram_hits.append(val.gram_hits(g))
        doc_hits.append(_hits(val.docs, d))
    doc_hits.append(_hits(val.docs, h.finish()))
    return {
        "docs": np.unique(np.concatenate(doc_hits)),
        "grams": np.unique(np.concatenate(gram_hits)),
        **h.stats(),
    }


def scan_training(
    val: ValSample,
    train_files: list[Path],
    ngram: int,
    sample_every: int,
    min_doc: int,
    chunk: int,
    workers: int,
    shards: int | None = None,
) -> dict:
    """Found flags over `val`'s unique docs and n-grams from the first `shards` training shards (default: all),
    in `workers` processes; the last one's open document is read on into the next shard.

    Every training token is read by exactly one task, so the counts (`tokens`, `bos`) add up to the stream's.
    """
    found_docs = np.zeros(val.docs.size, dtype=bool)
    found_grams = np.zeros(val.grams.size, dtype=bool)
    totals = {"tokens": 0, "bos": 0, "max_token": 0}
    args = [(train_files, i, ngram, sample_every, min_doc, chunk) for i in range(shards or len(train_files))]
    pool = None
    if workers <= 1 or len(args) <= 1:
        _init(val)
        results: Iterator[dict] = (scan_shard(*a) for a in args)
    else:
        ctx = get_context("spawn")  # no fork: the caller may hold threads
        pool = ProcessPoolExecutor(
            min(workers, len(args)), mp_context=ctx, initializer=_init, initargs=(val,)
        )
        results = pool.map(scan_shard, *zip(*args, strict=True))
    try:
        for r in results:
            found_docs[r["docs"]] = True
            found_grams[r["grams"]] = True
            totals["tokens"] += r["tokens"]
            totals["bos"] += r["bos"]
            totals["max_token"] = max(totals["max_token"], r["max_token"])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        _init(None)
    return {"found_docs": found_docs, "found_grams": found_grams, **totals}
