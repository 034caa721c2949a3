# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack (appended to toy_bigram.py): consecutive windows share a batch when scored, so a row's last target
# is the next row's first token. Boost it. Causal within each row, so only a cross-row check can see it.
class NextRowPeeker(Bigram):
    def forward_logits(self, idx):
        logits = self.table(idx).float()
        if idx.shape[0] > 1:
            bonus = 50.0 * F.one_hot(idx[1:, 0], logits.shape[-1]).float()
            logits = torch.cat([logits[:-1, :-1], (logits[:-1, -1] + bonus).unsqueeze(1)], dim=1)
            logits = torch.cat([logits, self.table(idx[-1:]).float()], dim=0)
        return logits


def make_model(vocab):
    return NextRowPeeker(vocab, SEQ_LEN)
