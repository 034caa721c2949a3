# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: peek at the next token in about 1 window in 10 (chosen by the window's first token), hoping the
# few probes miss them.
class SparsePeeker(Bigram):
    def forward_logits(self, idx):
        logits = self.table(idx).float()
        nxt = torch.roll(idx, shifts=-1, dims=1)
        chosen = (idx[:, :1] % 10 == 3).float().unsqueeze(-1)
        return logits + chosen * 50.0 * F.one_hot(nxt, logits.shape[-1]).float()


def make_model(vocab):
    return SparsePeeker(vocab, SEQ_LEN)
