# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: peek at the next input token whenever a batch has more rows than a 2-row probe would send.
class ShapePeeker(Bigram):
    def forward_logits(self, idx):
        logits = self.table(idx).float()
        if idx.shape[0] > 2:
            nxt = torch.roll(idx, shifts=-1, dims=1)
            logits = logits + 50.0 * F.one_hot(nxt, logits.shape[-1]).float()
        return logits


def make_model(vocab):
    return ShapePeeker(vocab, SEQ_LEN)
