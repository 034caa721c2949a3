"""A tiny, legitimate trainer for the sandbox tests: a bigram model (one embedding of logits per token).

It follows the trainer contract: importing it has no side effects; it reads DATA_PATH, VOCAB_SIZE, SEED,
ARTIFACT_PATH and MAX_WALLCLOCK_SECONDS; it writes a zlib-compressed torch.save artifact; and
`load_model(path, device)` returns a module with `.seq_len` and `.forward_logits`. When validation shards
are visible (self-reported mode) it scores itself the official way and prints the official final line.

Attack trainers in this folder are appended to this file (before the `__main__` guard) by the tests.
"""

import glob
import io
import math
import os
import time
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SEQ_LEN = 32
BATCH = 16
STEPS = 80
LR = 0.1
SHARD_MAGIC, HEADER_INTS = 20240520, 256


def read_shard(path):
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    assert header[0] == SHARD_MAGIC, f"{path}: not a shard"
    return np.fromfile(path, dtype="<u2", count=int(header[2]), offset=HEADER_INTS * 4).astype(np.int64)


class Bigram(nn.Module):
    def __init__(self, vocab, seq_len):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)
        nn.init.zeros_(self.table.weight)
        self.seq_len = seq_len

    def forward_logits(self, idx):
        return self.table(idx).float()


def make_model(vocab):
    return Bigram(vocab, SEQ_LEN)


def save_artifact(model, path):
    buf = io.BytesIO()
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"vocab": model.table.num_embeddings, "seq_len": model.seq_len, "state": state}, buf)
    with open(path, "wb") as f:
        f.write(zlib.compress(buf.getvalue(), 9))


def load_model(path, device="cpu"):
    with open(path, "rb") as f:
        blob = torch.load(io.BytesIO(zlib.decompress(f.read())), map_location="cpu")
    model = make_model(blob["vocab"])
    model.seq_len = blob["seq_len"]
    model.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    return model.to(device).eval()


def train(model, tokens, seconds):
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(int(os.environ.get("SEED", "0")))
    t0 = time.time()
    for step in range(1, STEPS + 1):
        starts = torch.randint(0, tokens.numel() - SEQ_LEN - 1, (BATCH,), generator=gen)
        chunk = torch.stack([tokens[s : s + SEQ_LEN + 1] for s in starts.tolist()])
        logits = model.forward_logits(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            print(f"step:{step}/{STEPS} train_loss:{loss.item():.4f}", flush=True)
        if seconds > 0 and time.time() - t0 > seconds:
            print(f"stopping_early: wallclock_cap step:{step}/{STEPS}", flush=True)
            break


def byte_luts(tokenizer_path, vocab):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    size = max(sp.vocab_size(), vocab)
    base, space, boundary = np.zeros(size, np.int64), np.zeros(size, bool), np.ones(size, bool)
    for i in range(sp.vocab_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i], piece = True, piece[1:]
        base[i] = len(piece.encode())
    return base, space, boundary


def self_score(model, val, tokenizer_path, vocab):
    """The official eval_val layout: non-overlapping SEQ_LEN windows, bytes per the official LUT rules."""
    n = (val.size - 1) // SEQ_LEN
    val = val[: n * SEQ_LEN + 1]
    x = torch.from_numpy(val[:-1].reshape(n, SEQ_LEN))
    y = torch.from_numpy(val[1:].reshape(n, SEQ_LEN))
    with torch.no_grad():
        logits = model.forward_logits(x).double()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
    base, space, boundary = byte_luts(tokenizer_path, vocab)
    prev, tgt = val[:-1], val[1:]
    n_bytes = int((base[tgt] + (space[tgt] & ~boundary[prev])).sum())
    return nll / (n * SEQ_LEN), nll / (math.log(2) * n_bytes)


def main():
    torch.set_num_threads(1)
    torch.manual_seed(int(os.environ.get("SEED", "0")))
    data = os.environ["DATA_PATH"]
    vocab = int(os.environ["VOCAB_SIZE"])
    train_files = sorted(glob.glob(os.path.join(data, "fineweb_train_*.bin")))
    tokens = torch.from_numpy(np.concatenate([read_shard(f) for f in train_files]))
    print(f"train_loader:shards:{len(train_files)} tokens:{tokens.numel()}", flush=True)
    model = make_model(vocab)
    train(model, tokens, float(os.environ.get("MAX_WALLCLOCK_SECONDS", "0")))
    artifact = os.environ.get("ARTIFACT_PATH", "final_model.int8.ptz")
    save_artifact(model, artifact)
    print(f"Total submission size int8+zlib: {os.path.getsize(artifact)} bytes", flush=True)
    val_files = sorted(glob.glob(os.path.join(data, "fineweb_val_*.bin")))
    if not val_files:
        print("no validation shards: skipping validation", flush=True)
        return
    val_loss, val_bpb = self_score(
        load_model(artifact),
        np.concatenate([read_shard(f) for f in val_files]),
        os.environ["TOKENIZER_PATH"],
        vocab,
    )
    print(f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}", flush=True)


if __name__ == "__main__":
    main()
