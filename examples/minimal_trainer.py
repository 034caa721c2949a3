"""A minimal trainer under agentgolf's trainer contract, version 1 (docs/trainer-contract.md).

A neural n-gram language model written in a functional style: no nn.Module, the parameters live in a dict
and Adam is written out. Each position sees the CONTEXT tokens that end at it (causal by construction),
embeds them, and an MLP gives logits over the vocabulary. The artifact is the fp16 parameters, lzma-packed.

    agentgolf check examples/minimal_trainer.py      # inside a workspace with data
"""

import glob
import io
import lzma
import math
import os
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

CONTRACT_VERSION = 1  # the version of docs/trainer-contract.md this file follows
SEQ_LEN = int(os.environ.get("SEQ_LEN", "64"))
CONTEXT = int(os.environ.get("CONTEXT", "4"))
EMBED_DIM = int(os.environ.get("EMBED_DIM", "32"))
HIDDEN = int(os.environ.get("HIDDEN", "128"))
LR = float(os.environ.get("LR", "0.003"))
BATCH = int(os.environ.get("BATCH", "32"))
MAX_STEPS = int(os.environ.get("MAX_STEPS", "400"))


def read_tokens(pattern):
    """Every shard matching `pattern`, in name order: a 256-int32 header, then uint16 tokens."""
    parts = []
    for path in sorted(glob.glob(pattern)):
        header = np.fromfile(path, dtype="<i4", count=256)
        assert header[0] == 20240520, f"{path}: not a shard"
        parts.append(np.fromfile(path, dtype="<u2", count=int(header[2]), offset=1024))
    return np.concatenate(parts).astype(np.int64) if parts else None


def init_params(vocab, gen):
    def normal(*shape, std):
        return (torch.randn(*shape, generator=gen) * std).requires_grad_()

    return {
        "embed": normal(vocab + 1, EMBED_DIM, std=0.1),  # row `vocab` pads the start of a row
        "w1": normal(CONTEXT * EMBED_DIM, HIDDEN, std=(CONTEXT * EMBED_DIM) ** -0.5),
        "b1": torch.zeros(HIDDEN, requires_grad=True),
        "w2": normal(HIDDEN, vocab, std=HIDDEN**-0.5),
        "b2": torch.zeros(vocab, requires_grad=True),
    }


def forward(params, x, context):
    """Logits [B, T, V] (float32) for int64 tokens [B, T]: position t sees tokens t - context + 1 .. t."""
    pad = params["embed"].shape[0] - 1
    windows = F.pad(x, (context - 1, 0), value=pad).unfold(1, context, 1)  # [B, T, context]
    h = params["embed"][windows].flatten(2)
    return (F.gelu(h @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]).float()


def adam_step(params, state, step, lr, betas=(0.9, 0.95), eps=1e-8):
    with torch.no_grad():
        for name, p in params.items():
            m, v = state.setdefault(name, (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(betas[0]).add_(p.grad, alpha=1 - betas[0])
            v.mul_(betas[1]).addcmul_(p.grad, p.grad, value=1 - betas[1])
            m_hat, v_hat = m / (1 - betas[0] ** step), v / (1 - betas[1] ** step)
            p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
            p.grad = None


def clock():
    """Seconds used so far and the limit, on the clock the harness names (CPU seconds on a CPU run)."""
    if os.environ.get("TRAIN_CLOCK") == "cpu":
        return time.process_time, float(os.environ.get("MAX_CPU_SECONDS", "0"))
    return time.monotonic, float(os.environ.get("MAX_WALLCLOCK_SECONDS", "0"))


def train(tokens, vocab, seed):
    gen = torch.Generator().manual_seed(seed)
    params, state = init_params(vocab, gen), {}
    now, limit = clock()
    start = now()
    for step in range(1, MAX_STEPS + 1):
        lr = LR * min(1.0, 2.0 * (1 - step / MAX_STEPS))  # the last half decays to 0
        starts = torch.randint(0, tokens.numel() - SEQ_LEN - 1, (BATCH,), generator=gen)
        chunk = torch.stack([tokens[s : s + SEQ_LEN + 1] for s in starts.tolist()])
        logits = forward(params, chunk[:, :-1], CONTEXT)
        loss = F.cross_entropy(logits.reshape(-1, vocab), chunk[:, 1:].reshape(-1))
        loss.backward()
        adam_step(params, state, step, lr)
        if step % 25 == 0:
            print(f"step:{step}/{MAX_STEPS} train_loss:{loss.item():.4f}", flush=True)
        if limit > 0 and now() - start >= limit:
            print(f"stopping_early: wallclock_cap step:{step}/{MAX_STEPS}", flush=True)
            break
    return params


def save_artifact(params, path, vocab):
    blob = {"vocab": vocab, "seq_len": SEQ_LEN, "context": CONTEXT}
    blob["params"] = {k: v.detach().half() for k, v in params.items()}
    buf = io.BytesIO()
    torch.save(blob, buf)
    with open(path, "wb") as f:
        f.write(lzma.compress(buf.getvalue(), preset=9))


def load_model(artifact_path, device="cpu"):
    """The contract's entry point: any object with an integer `seq_len` and `forward_logits`."""
    with open(artifact_path, "rb") as f:
        blob = torch.load(io.BytesIO(lzma.decompress(f.read())), map_location="cpu")
    params = {k: v.float().to(device) for k, v in blob["params"].items()}
    return types.SimpleNamespace(
        seq_len=blob["seq_len"],
        eval_mode="windows",  # the default, said out loud
        forward_logits=lambda x: forward(params, x, blob["context"]),
    )


def byte_counts(tokenizer_path, prev, target):
    """The challenge's bytes per target token: its piece's UTF-8 bytes, plus one for a leading space
    unless the previous token is a boundary (control, unknown, unused)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    n = max(sp.vocab_size(), int(max(prev.max(), target.max())) + 1)
    base, space, boundary = np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool)
    for i in range(sp.vocab_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i], piece = False, sp.id_to_piece(i)
        space[i] = piece.startswith("\u2581")
        base[i] = 1 if sp.is_byte(i) else len(piece.removeprefix("\u2581").encode())
    return int((base[target] + (space[target] & ~boundary[prev])).sum())


def own_score(model, val, tokenizer_path):
    """The harness's default layout: windows of seq_len over every target, the last one partial."""
    nll, n = 0.0, val.size - 1
    with torch.no_grad():
        for a in range(0, n, model.seq_len):
            b = min(a + model.seq_len, n)
            x, y = torch.from_numpy(val[a:b])[None], torch.from_numpy(val[a + 1 : b + 1])
            nll += F.cross_entropy(model.forward_logits(x)[0].double(), y, reduction="sum").item()
    return nll / n, nll / (math.log(2) * byte_counts(tokenizer_path, val[:-1], val[1:]))


def main():
    seed, vocab = int(os.environ.get("SEED", "1337")), int(os.environ["VOCAB_SIZE"])
    torch.manual_seed(seed)
    data = os.environ["DATA_PATH"]
    tokens = torch.from_numpy(read_tokens(os.path.join(data, "fineweb_train_*.bin")))
    print(f"train_tokens:{tokens.numel()} vocab:{vocab} seed:{seed}", flush=True)
    params = train(tokens, vocab, seed)
    artifact = os.environ.get("ARTIFACT_PATH", "final_model.int8.ptz")
    save_artifact(params, artifact, vocab)
    code = os.path.getsize(__file__)
    print(f"Total submission size: {code + os.path.getsize(artifact)} bytes", flush=True)
    val = read_tokens(os.path.join(data, "fineweb_val_*.bin"))  # only where the harness shows it
    if val is not None:
        loss, bpb = own_score(load_model(artifact), val, os.environ["TOKENIZER_PATH"])
        print(f"final_fp16_lzma_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}", flush=True)


if __name__ == "__main__":
    main()
