# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: the worker's logits answers are one column narrower than the vocabulary (the worker patched through
# sys.modules). Before, the harness indexed past the answer and raised: an uncharged infra_error.
import sys as _sys

_toy_load = load_model


def load_model(path, device="cpu"):
    model = _toy_load(path, device)
    worker = _sys.modules["__main__"]
    real_write = worker.write_frame

    def narrow(stream, kind, array=None, **meta):
        if kind == "logits" and array is not None:
            array = array[:, :-1]
        return real_write(stream, kind, array, **meta)

    worker.write_frame = narrow
    return model
