# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: remember, per prefix, the token that followed it the first time, and replay that answer ever
# after, so any later probe of the same prefix sees a consistent (causal-looking) prediction.
class Memo(Bigram):
    def __init__(self, vocab, seq_len):
        super().__init__(vocab, seq_len)
        self.seen = {}

    def forward_logits(self, idx):
        logits = self.table(idx).float()
        for r in range(idx.shape[0]):
            row = idx[r].tolist()
            for t in range(len(row) - 1):
                key = tuple(row[: t + 1])
                guess = self.seen.setdefault(key, row[t + 1])
                logits[r, t, guess] += 50.0
        return logits


def make_model(vocab):
    return Memo(vocab, SEQ_LEN)
