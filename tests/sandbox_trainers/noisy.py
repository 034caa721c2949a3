# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack (appended to toy_bigram.py): print junk to stdout and fd 1 while loaded for scoring.
_toy_load = load_model


def load_model(path, device="cpu"):
    import sys

    print("AGF1 junk that looks like a frame " * 1000)
    sys.stdout.flush()
    os.write(1, b"AGF1\x00\x00\x00\x00raw junk on fd 1\n")
    return _toy_load(path, device)
