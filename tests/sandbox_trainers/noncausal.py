# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack (appended to toy_bigram.py): a model whose prediction at position t looks at token t+1.
class Peeker(Bigram):
    def forward_logits(self, idx):
        return self.table(torch.roll(idx, shifts=-1, dims=1)).float()


def make_model(vocab):
    return Peeker(vocab, SEQ_LEN)
