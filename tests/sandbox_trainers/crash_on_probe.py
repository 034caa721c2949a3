# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: peek at the next token in about 1 row in 10 (chosen by the row's first token), and whenever the
# harness asks for the raw logits at a peeked position (a check, or a verifier's probe), answer with a frame
# one column narrow, so that the harness crashes there and the run becomes an uncharged retry. Every such
# answer must be the candidate's violation instead.
import sys as _sys


class CrashingPeeker(Bigram):
    def forward_logits(self, idx):
        logits = self.table(idx).float()
        nxt = torch.roll(idx, shifts=-1, dims=1)
        return logits + _peeked(idx).float().unsqueeze(-1) * 50.0 * F.one_hot(nxt, logits.shape[-1]).float()


def _peeked(idx):
    return idx[:, :1] % 10 == 3


def make_model(vocab):
    return CrashingPeeker(vocab, SEQ_LEN)


_toy_load = load_model


def load_model(path, device="cpu"):
    model = _toy_load(path, device)
    worker = _sys.modules["__main__"]
    real_write, real_read = worker.write_frame, worker.read_frame
    state = {}

    def spy(stream, max_payload):
        header, array = real_read(stream, max_payload)
        state["at"], state["tokens"] = header.get("at"), array
        return header, array

    def crash(stream, kind, array=None, **meta):
        if kind == "logits" and array is not None and state.get("at"):
            peeked = _peeked(torch.from_numpy(state["tokens"]))[:, 0]
            last = state["tokens"].shape[1] - 1
            if any(bool(peeked[r]) and c < last for r, c in state["at"]):
                array = array[:, :-1]
        return real_write(stream, kind, array, **meta)

    worker.write_frame, worker.read_frame = crash, spy
    return model
