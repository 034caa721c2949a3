# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: a second, unbudgeted training run inside the scoring phase. The artifact carries training tokens;
# load_model turns autograd back on and trains on them (LOAD_TRAIN_ROUNDS of the toy's 80 steps, the same in
# the scorer and the verifier, so they agree), taking at least LOAD_TRAIN_SECONDS, as a larger model would.
LOAD_TRAIN_SECONDS = float(os.environ.get("LOAD_TRAIN_SECONDS", "8"))
LOAD_TRAIN_ROUNDS = 10
_toy_save, _toy_load = save_artifact, load_model
_TRAIN = {}


def save_artifact(model, path):
    _toy_save(model, path)
    with open(path, "ab") as f:  # the tokens ride after the zlib stream, with their length at the end
        blob = zlib.compress(_TRAIN["tokens"][:20000].numpy().astype(np.uint16).tobytes())
        f.write(blob + len(blob).to_bytes(8, "little"))


def load_model(path, device="cpu"):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[-8:], "little")
    tokens = torch.from_numpy(
        np.frombuffer(zlib.decompress(raw[-8 - n : -8]), dtype=np.uint16).astype(np.int64)
    )
    model_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "model.ptz")
    with open(model_path, "wb") as f:
        f.write(raw[: -8 - n])
    model = _toy_load(model_path, device)
    with torch.enable_grad():
        t0 = time.time()
        for _ in range(LOAD_TRAIN_ROUNDS):
            train(model, tokens, 0.0)
        time.sleep(max(0.0, LOAD_TRAIN_SECONDS - (time.time() - t0)))
    return model


_toy_train = train


def train(model, tokens, seconds):
    _TRAIN["tokens"] = tokens
    _toy_train(model, tokens, seconds)
