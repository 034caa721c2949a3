# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack (appended to toy_bigram.py): an artifact whose weights are NaN.
_toy_save = save_artifact


def save_artifact(model, path):
    with torch.no_grad():
        model.table.weight.fill_(float("nan"))
    _toy_save(model, path)
