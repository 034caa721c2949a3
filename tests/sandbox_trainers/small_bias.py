# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: peek at every position, but only a little: each prediction gains less than the per-position
# tolerance, so only the mean difference over many positions can show it.
class LittlePeeker(Bigram):
    def forward_logits(self, idx):
        logits = self.table(idx).float()
        nxt = torch.roll(idx, shifts=-1, dims=1)
        return logits + 0.008 * F.one_hot(nxt, logits.shape[-1]).float()


def make_model(vocab):
    return LittlePeeker(vocab, SEQ_LEN)
