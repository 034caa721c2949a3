# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Score-first test-time training: the bigram takes one SGD step on each chunk after it has been scored
# (stream mode's `adapt`). TTT=illegal instead adapts inside forward_logits, on the tokens it is asked to
# predict, before predicting them. TTT=off declares stream mode but never adapts. EVAL_MODE picks the mode.
class Adaptive(Bigram):
    def adapt(self, tokens, doc_starts):
        self._step(tokens)

    def _step(self, tokens):
        logits = self.table(tokens[:, :-1]).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        grad = torch.autograd.grad(loss, self.table.weight)[0]
        with torch.no_grad():
            self.table.weight -= 2.0 * grad

    def forward_logits(self, idx):
        if os.environ.get("TTT") == "illegal":
            with torch.inference_mode(False), torch.enable_grad():
                self._step(idx.clone())
        return self.table(idx).float()


def make_model(vocab):
    return Adaptive(vocab, SEQ_LEN)


_toy_load = load_model


def load_model(path, device="cpu"):
    model = _toy_load(path, device)
    model.eval_mode = os.environ.get("EVAL_MODE", "stream")
    if model.eval_mode != "windows":
        model.eval_stride, model.eval_context = 16, SEQ_LEN
    if os.environ.get("TTT") == "off":
        model.adapt = lambda tokens, doc_starts: None
    return model
