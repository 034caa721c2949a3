"""A trainer of another structure under the trainer contract: a GRU language model, an int6 export, a sliding eval.

Nothing of our baseline is in it: a recurrent model instead of attention, its settings read straight from
the environment (no Hyperparameters class, no presets), weights quantized to 6 bits per value with a scale per
row and packed four values to three bytes, then zlib; and it asks the harness for sliding-window evaluation.
Small enough to train in seconds on a CPU core.
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

CONTRACT_VERSION = 1
SEQ_LEN = int(os.environ.get("SEQ_LEN", "32"))
EMBED = int(os.environ.get("EMBED", "32"))
HIDDEN = int(os.environ.get("HIDDEN", "64"))
LR = float(os.environ.get("LR", "0.01"))
BATCH = int(os.environ.get("BATCH", "16"))
STEPS = int(os.environ.get("STEPS", "300"))


def shards(pattern):
    out = []
    for path in sorted(glob.glob(pattern)):
        header = np.fromfile(path, dtype="<i4", count=256)
        out.append(np.fromfile(path, dtype="<u2", count=int(header[2]), offset=1024).astype(np.int64))
    return np.concatenate(out) if out else None


class GRULM(nn.Module):
    eval_mode = "sliding"  # each target once, with up to eval_context tokens of left context

    def __init__(self, vocab, embed, hidden, seq_len):
        super().__init__()
        self.embed, self.rnn, self.head = (
            nn.Embedding(vocab, embed),
            nn.GRU(embed, hidden, batch_first=True),
            nn.Linear(hidden, vocab),
        )
        self.seq_len = seq_len
        self.eval_context = 2 * seq_len
        self.eval_stride = seq_len // 2

    def forward_logits(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


def pack_int6(w):
    """Per-row int6 (-31..31) with an fp16 scale; four values in three bytes."""
    w = w.float().reshape(w.shape[0], -1) if w.dim() > 1 else w.float().reshape(1, -1)
    scale = (w.abs().amax(dim=1, keepdim=True) / 31).clamp(min=1e-8)
    q = (torch.round(w / scale).clamp(-31, 31) + 32).to(torch.uint8).flatten().numpy()
    q = np.concatenate([q, np.zeros((-q.size) % 4, np.uint8)]).reshape(-1, 4).astype(np.uint32)
    word = q[:, 0] | q[:, 1] << 6 | q[:, 2] << 12 | q[:, 3] << 18
    packed = np.stack([word & 255, word >> 8 & 255, word >> 16 & 255], 1).astype(np.uint8)
    return packed.tobytes(), scale.half()


def unpack_int6(data, scale, shape):
    b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.uint32)
    word = b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16
    q = np.stack([word >> s & 63 for s in (0, 6, 12, 18)], 1).flatten()[: math.prod(shape)]
    rows = torch.from_numpy(q.astype(np.float32) - 32).reshape(scale.shape[0], -1)
    return (rows * scale.float()).reshape(shape)


def save(model, path):
    blob = {"config": [model.embed.num_embeddings, EMBED, HIDDEN, SEQ_LEN], "tensors": {}}
    for name, t in model.state_dict().items():
        blob["tensors"][name] = (*pack_int6(t), tuple(t.shape))
    buf = io.BytesIO()
    torch.save(blob, buf)
    with open(path, "wb") as f:
        f.write(zlib.compress(buf.getvalue(), 9))


def load_model(artifact_path, device="cpu"):
    with open(artifact_path, "rb") as f:
        blob = torch.load(io.BytesIO(zlib.decompress(f.read())), map_location="cpu")
    model = GRULM(*blob["config"])
    model.load_state_dict({k: unpack_int6(d, s, shape) for k, (d, s, shape) in blob["tensors"].items()})
    return model.to(device)


def sliding_score(model, val, tokenizer_path):
    """The harness's sliding layout: row i scores targets i*stride .. +stride, with eval_context tokens."""
    import sentencepiece as spm

    total, stride, context, nll = val.size - 1, model.eval_stride, model.eval_context, 0.0
    with torch.no_grad():
        for first in range(0, total, stride):
            end = min(first + stride, total)
            x = torch.from_numpy(val[max(0, end - context) : end])[None]
            logits = model.forward_logits(x)[0, -(end - first) :].double()
            nll += F.cross_entropy(logits, torch.from_numpy(val[first + 1 : end + 1]), reduction="sum").item()
    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    n = max(sp.vocab_size(), int(val.max()) + 1)
    base, space, edge = np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool)
    for i in range(sp.vocab_size()):
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)):
            piece, edge[i] = sp.id_to_piece(i), False
            space[i] = piece.startswith("\u2581")
            base[i] = 1 if sp.is_byte(i) else len(piece.removeprefix("\u2581").encode())
    n_bytes = int((base[val[1:]] + (space[val[1:]] & ~edge[val[:-1]])).sum())
    return nll / total, nll / (math.log(2) * n_bytes)


def main():
    torch.set_num_threads(1)
    seed = int(os.environ.get("SEED", "0"))
    torch.manual_seed(seed)
    vocab, data = int(os.environ["VOCAB_SIZE"]), os.environ["DATA_PATH"]
    tokens = torch.from_numpy(shards(os.path.join(data, "fineweb_train_*.bin")))
    model = GRULM(vocab, EMBED, HIDDEN, SEQ_LEN)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    limit = float(os.environ.get("MAX_WALLCLOCK_SECONDS", "0"))
    gen, t0 = torch.Generator().manual_seed(seed), time.monotonic()
    for step in range(1, STEPS + 1):
        starts = torch.randint(0, tokens.numel() - SEQ_LEN - 1, (BATCH,), generator=gen).tolist()
        chunk = torch.stack([tokens[s : s + SEQ_LEN + 1] for s in starts])
        loss = F.cross_entropy(model.forward_logits(chunk[:, :-1]).flatten(0, 1), chunk[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            print(f"step:{step}/{STEPS} train_loss:{loss.item():.4f}", flush=True)
        if limit and time.monotonic() - t0 >= limit:
            print(f"stopping_early: wallclock_cap step:{step}/{STEPS}", flush=True)
            break
    artifact = os.environ.get("ARTIFACT_PATH", "final_model.int8.ptz")
    save(model, artifact)
    val = shards(os.path.join(data, "fineweb_val_*.bin"))
    if val is not None:  # only a check run shows it
        loss, bpb = sliding_score(load_model(artifact), val, os.environ["TOKENIZER_PATH"])
        print(f"final_int6_sliding_window_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}", flush=True)


if __name__ == "__main__":
    main()
