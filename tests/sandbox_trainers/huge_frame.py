# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: answer the first logits request with a 256 MiB frame, to bloat the harness (the loop process every
# slot shares). The harness must refuse it from the header, before reading the payload.
import sys as _sys

_toy_load = load_model
HUGE_BYTES = 256 * 2**20


def load_model(path, device="cpu"):
    model = _toy_load(path, device)
    worker = _sys.modules["__main__"]
    real_write = worker.write_frame

    def huge(stream, kind, array=None, **meta):
        if kind == "logits" and array is not None:
            array = np.zeros((array.shape[0], HUGE_BYTES // 4 // array.shape[0]), dtype=np.float32)
        return real_write(stream, kind, array, **meta)

    worker.write_frame = huge
    return model
