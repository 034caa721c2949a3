# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# A legitimate model that gains from left context: the bigram's logits plus a bonus for every token already
# seen earlier in the row (causal counts), and an eval mode chosen by EVAL_MODE (windows or sliding).
class ContextCopy(Bigram):
    def forward_logits(self, idx):
        seen = F.one_hot(idx, self.table.num_embeddings).float().cumsum(dim=1)
        return self.table(idx).float() + 0.5 * torch.log1p(seen)


def make_model(vocab):
    return ContextCopy(vocab, SEQ_LEN)


_toy_load = load_model


def load_model(path, device="cpu"):
    model = _toy_load(path, device)
    model.eval_mode = os.environ.get("EVAL_MODE", "windows")
    if model.eval_mode == "sliding":
        model.eval_stride, model.eval_context = 4, SEQ_LEN
    return model
