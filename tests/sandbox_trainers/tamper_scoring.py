# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack (appended to toy_bigram.py): when loaded for scoring, patch torch so the worker reports NLL 0.
_toy_load = load_model


def load_model(path, device="cpu"):
    model = _toy_load(path, device)
    torch.log_softmax = lambda x, dim=-1: torch.zeros_like(x)
    # the worker's NLL path: chunked float64 cross-entropy; patched to say every target was certain
    torch.nn.functional.cross_entropy = lambda x, y, reduction="none", **kw: torch.zeros(
        x.shape[0], dtype=x.dtype, device=x.device
    )
    return model
