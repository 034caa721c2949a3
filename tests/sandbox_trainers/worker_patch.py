# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: load_model runs inside the scoring worker, so it patches the worker itself (through sys.modules):
# every NLL frame it sends says 0 where the next token is in the block, and the logits it sends for the
# harness's consistency check are forged to match. The model is honest; only the reporting lies.
import sys as _sys

_toy_load = load_model


def load_model(path, device="cpu"):
    model = _toy_load(path, device)
    worker = _sys.modules["__main__"]
    real_write = worker.write_frame
    state = {}

    def forged(stream, kind, array=None, **meta):
        if kind == "nll" and array is not None:
            state["shape"] = array.shape
            array = np.zeros_like(array)
        elif kind == "logits" and array is not None and state.get("at"):
            array = array.copy()
            for i, (r, c) in enumerate(state["at"]):
                if c + 1 < state["tokens"].shape[1]:  # the next token is known: make it certain
                    array[i] = -1e4
                    array[i, state["tokens"][r, c + 1]] = 1e4
        return real_write(stream, kind, array, **meta)

    real_read = worker.read_frame

    def spy(stream, max_payload):
        header, array = real_read(stream, max_payload)
        state["at"], state["tokens"] = header.get("at"), array
        return header, array

    worker.write_frame, worker.read_frame = forged, spy
    return model
