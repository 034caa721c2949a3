# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack (appended to toy_bigram.py): pad the artifact with incompressible bytes (PAD_BYTES of them).
_toy_save = save_artifact


def save_artifact(model, path):
    _toy_save(model, path)
    with open(path, "ab") as f:
        f.write(os.urandom(int(os.environ["PAD_BYTES"])))
