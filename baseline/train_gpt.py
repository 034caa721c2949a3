"""agentgolf's Parameter Golf baseline trainer: one standalone file, read top to bottom.

Re-implements the recipe of OpenAI's Parameter Golf train_gpt.py (MIT) and modded-nanogpt (MIT), its source.

Trains the naive-baseline GPT (9x512, GQA, ReLU^2, tied embeddings, U-Net skips) with Muon + Adam,
exports int8 per-row weights + zlib as a self-describing artifact, reloads it and scores val_bpb.

    torchrun --standalone --nproc_per_node=8 train_gpt.py      # 1..8 GPUs
    PRESET=cpu DATA_PATH=... TOKENIZER_PATH=... python train_gpt.py   # small recipe, CPU only
    EMULATE_CUDA=1 ...                    # on a CPU, take the CUDA code path (compile, bf16, grad accumulation)

Importing this file does nothing; `load_model(artifact_path)` rebuilds a trained model for scoring.
"""

import copy
import glob
import hashlib
import io
import math
import os
import random
import sys
import time
import zlib
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

# -----------------------------------------------------------------------------
# Hyperparameters

# Named recipes applied with os.environ.setdefault, so an explicit environment variable always wins.
PRESETS = {
    "cpu": {
        "NUM_LAYERS": 4,
        "MODEL_DIM": 128,
        "NUM_HEADS": 4,
        "NUM_KV_HEADS": 2,
        "TRAIN_SEQ_LEN": 256,
        "TRAIN_BATCH_TOKENS": 4096,
        # As in the challenge, the clock binds: it trains until its budget is spent, and the warmdown's last
        # WARMDOWN_ITERS steps are timed from the step rate. On a CPU the clock is CPU time (TRAIN_CLOCK), so
        # a busy machine cannot change how far it trains; the harness sets the budget, MAX_CPU_SECONDS.
        "ITERATIONS": 100000,
        "WARMDOWN_ITERS": 120,
        "WARMUP_STEPS": 0,
        "MAX_WALLCLOCK_SECONDS": 60,
        "TRAIN_CLOCK": "cpu",
        "VAL_LOSS_EVERY": 0,
        "VAL_BATCH_SIZE": 32768,
        "TRAIN_LOG_EVERY": 25,
        "MUON_MOMENTUM_WARMUP_STEPS": 50,
    },
}


def apply_preset(environ=os.environ) -> None:
    """Fill in the preset named by PRESET without overriding variables the caller set."""
    name = environ.get("PRESET", "")
    if not name:
        return
    if name not in PRESETS:
        raise SystemExit(f"error: unknown PRESET={name!r} (known: {', '.join(sorted(PRESETS))})")
    for key, value in PRESETS[name].items():
        environ.setdefault(key, str(value))


if __name__ == "__main__":  # only as a script: importing this file must not touch the environment
    apply_preset()


# One setting per line, `name = type(os.environ.get("ENV", default))`: tools edit defaults with a regex.
# fmt: off
class Hyperparameters:
    # data and run
    data_path = str(os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024"))
    tokenizer_path = str(os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model"))
    run_id = str(os.environ.get("RUN_ID", ""))
    seed = int(os.environ.get("SEED", 1337))
    preset = str(os.environ.get("PRESET", ""))
    artifact_path = str(os.environ.get("ARTIFACT_PATH", "final_model.int8.ptz"))
    save_raw_model = int(os.environ.get("SAVE_RAW_MODEL", 0))
    # where Inductor and Triton keep compiled kernels ("": torch's default); a warm one saves most compile time
    compile_cache_dir = str(os.environ.get("COMPILE_CACHE_DIR", ""))
    # 1: a CPU run takes the CUDA code path (compile, bf16 autocast and Newton-Schulz, grad accumulation)
    emulate_cuda = int(os.environ.get("EMULATE_CUDA", 0))
    # CUDA path: the residual stream in bf16, as the official trainer's (0: fp32 stream, bf16 matmuls only)
    bf16_stream = int(os.environ.get("BF16_STREAM", 1))

    # validation and logging
    val_batch_size = int(os.environ.get("VAL_BATCH_SIZE", 524288))
    val_loss_every = int(os.environ.get("VAL_LOSS_EVERY", 1000))
    train_log_every = int(os.environ.get("TRAIN_LOG_EVERY", 200))

    # schedule
    iterations = int(os.environ.get("ITERATIONS", 20000))
    warmdown_iters = int(os.environ.get("WARMDOWN_ITERS", 1200))
    # "wall": the challenge's clock, MAX_WALLCLOCK_SECONDS of it; "cpu": CPU seconds of this process (all its
    # threads) and its children, MAX_CPU_SECONDS of them (0: MAX_WALLCLOCK_SECONDS x torch's threads)
    train_clock = str(os.environ.get("TRAIN_CLOCK", "wall"))
    max_cpu_seconds = float(os.environ.get("MAX_CPU_SECONDS", 0.0))
    # compile priming: these steps run, then weights, optimizer state and data are put back
    warmup_steps = int(os.environ.get("WARMUP_STEPS", 3))
    train_batch_tokens = int(os.environ.get("TRAIN_BATCH_TOKENS", 524288))
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 1024))
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))

    # model
    vocab_size = int(os.environ.get("VOCAB_SIZE", 1024))
    num_layers = int(os.environ.get("NUM_LAYERS", 9))
    model_dim = int(os.environ.get("MODEL_DIM", 512))
    num_heads = int(os.environ.get("NUM_HEADS", 8))
    num_kv_heads = int(os.environ.get("NUM_KV_HEADS", 4))
    mlp_mult = int(os.environ.get("MLP_MULT", 2))
    tie_embeddings = int(os.environ.get("TIE_EMBEDDINGS", 1))
    rope_base = float(os.environ.get("ROPE_BASE", 10000.0))
    logit_softcap = float(os.environ.get("LOGIT_SOFTCAP", 30.0))
    qk_gain_init = float(os.environ.get("QK_GAIN_INIT", 1.5))
    tied_embed_init_std = float(os.environ.get("TIED_EMBED_INIT_STD", 0.005))

    # optimizers
    embed_lr = float(os.environ.get("EMBED_LR", 0.6))
    head_lr = float(os.environ.get("HEAD_LR", 0.008))
    tied_embed_lr = float(os.environ.get("TIED_EMBED_LR", 0.05))
    matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))
    scalar_lr = float(os.environ.get("SCALAR_LR", 0.04))
    muon_momentum = float(os.environ.get("MUON_MOMENTUM", 0.95))
    muon_backend_steps = int(os.environ.get("MUON_BACKEND_STEPS", 5))
    muon_momentum_warmup_start = float(os.environ.get("MUON_MOMENTUM_WARMUP_START", 0.85))
    muon_momentum_warmup_steps = int(os.environ.get("MUON_MOMENTUM_WARMUP_STEPS", 500))
    beta1 = float(os.environ.get("BETA1", 0.9))
    beta2 = float(os.environ.get("BETA2", 0.95))
    adam_eps = float(os.environ.get("ADAM_EPS", 1e-8))
    grad_clip_norm = float(os.environ.get("GRAD_CLIP_NORM", 0.0))

    # export: int8 steps as fine as ARTIFACT_MAX_BYTES (code + compressed model) allows; INT8_SCALE_FLOOR > 0
    # fixes the smallest step instead, with no search (1/127 = 0.007874 is the official trainer's floor)
    artifact_max_bytes = int(os.environ.get("ARTIFACT_MAX_BYTES", 15500000))
    int8_scale_floor = float(os.environ.get("INT8_SCALE_FLOOR", 0.0))

    # export: low-dimensional "control" tensors go to Adam and stay fp32 in the artifact
    control_tensor_name_patterns = str(os.environ.get("CONTROL_TENSOR_NAME_PATTERNS", "attn_scale,mlp_scale,resid_mix,q_gain,skip_weight"))
    int8_keep_float_fp32_name_patterns = str(os.environ.get("INT8_KEEP_FLOAT_FP32_NAME_PATTERNS", "attn_scale,mlp_scale,resid_mix,q_gain,skip_weight"))
# fmt: on


def name_patterns(text: str) -> tuple[str, ...]:
    return tuple(p for p in (s.strip() for s in text.split(",")) if p)


# -----------------------------------------------------------------------------
# Data: shards of uint16 tokens behind a 1,024-byte header; documents are [BOS=1] + tokens.

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")


class DataError(ValueError):
    """A missing or malformed data/tokenizer file; main() prints it as one line and exits with code 2."""


def shard_token_count(path: Path) -> int:
    """Validate a shard's header and size without reading its body."""
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise DataError(f"{path}: truncated header ({size} bytes, need {HEADER_BYTES})")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if int(header[0]) != SHARD_MAGIC:
        raise DataError(f"{path}: bad magic {int(header[0])} (expected {SHARD_MAGIC})")
    if int(header[1]) != SHARD_VERSION:
        raise DataError(f"{path}: bad version {int(header[1])} (expected {SHARD_VERSION})")
    count = int(header[2])
    expected = HEADER_BYTES + count * TOKEN_DTYPE.itemsize
    if count < 0 or size != expected:
        raise DataError(
            f"{path}: size mismatch ({size} bytes, header says {count} tokens = {expected} bytes)"
        )
    return count


def read_shard(path: Path) -> np.ndarray:
    count = shard_token_count(path)
    tokens = np.fromfile(path, dtype=TOKEN_DTYPE, count=count, offset=HEADER_BYTES)
    if tokens.size != count:
        raise DataError(f"{path}: size mismatch (read {tokens.size} of {count} tokens)")
    return tokens


def shard_files(data_path: str, split: str) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(os.path.join(data_path, f"fineweb_{split}_*.bin")))]


class TokenStream:
    """Reads the train shards in order, forever; no shuffling, so a run is a pure function of the seed."""

    def __init__(self, files: list[Path], vocab_size: int):
        if not files:
            raise DataError("no train shards given")
        self.files, self.vocab_size = files, vocab_size
        for f in files:  # fail at start-up, not an hour in
            shard_token_count(f)
        self.file_index, self.pos = -1, 0
        self.tokens = np.zeros(0, dtype=TOKEN_DTYPE)

    def _next_file(self) -> None:
        self.file_index = (self.file_index + 1) % len(self.files)
        self.tokens, self.pos = read_shard(self.files[self.file_index]), 0
        if self.tokens.size and int(self.tokens.max()) >= self.vocab_size:
            raise DataError(
                f"{self.files[self.file_index]}: token id {int(self.tokens.max())} >= VOCAB_SIZE {self.vocab_size}"
            )

    def take(self, n: int) -> np.ndarray:
        parts = []
        while n > 0:
            if self.pos >= self.tokens.size:
                self._next_file()
                continue
            part = self.tokens[self.pos : self.pos + n]
            parts.append(part)
            self.pos += part.size
            n -= part.size
        return np.concatenate(parts)


class DistributedTokenLoader:
    """Each micro-step takes one contiguous chunk of the stream; every rank gets its own disjoint span."""

    def __init__(self, files: list[Path], vocab_size: int, rank: int, world_size: int, device: torch.device):
        self.stream = TokenStream(files, vocab_size)
        self.rank, self.world_size, self.device = rank, world_size, device

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[Tensor, Tensor]:
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        local = torch.from_numpy(chunk[self.rank * span : (self.rank + 1) * span].astype(np.int64))
        if self.device.type == "cuda":
            local = local.pin_memory().to(self.device, non_blocking=True)
        return local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)


def load_validation_tokens(files: list[Path], seq_len: int, vocab_size: int) -> Tensor:
    """The whole val split, cut to a whole number of windows (+1 for the last target)."""
    tokens = np.concatenate([read_shard(f) for f in files])
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise DataError(f"validation shards hold token id {int(tokens.max())} >= VOCAB_SIZE {vocab_size}")
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise DataError(
            f"validation split has {tokens.size} tokens, fewer than TRAIN_SEQ_LEN + 1 = {seq_len + 1}"
        )
    return torch.from_numpy(tokens[: usable + 1].astype(np.int64))


# -----------------------------------------------------------------------------
# Byte table and evaluation: val_bpb = sum of CE (nats) / (ln 2 * sum of UTF-8 bytes of the targets)

LEADING_SPACE = "\u2581"


def build_byte_luts(sp: spm.SentencePieceProcessor, vocab_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-id (base_bytes, has_leading_space, is_boundary) following the official counting rules."""
    size = max(int(sp.vocab_size()), vocab_size)
    base_bytes = np.zeros(size, dtype=np.int64)
    has_space = np.zeros(size, dtype=np.bool_)
    is_boundary = np.ones(size, dtype=np.bool_)  # ids past the tokenizer's vocab are boundaries
    for i in range(int(sp.vocab_size())):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue  # 0 bytes, boundary
        is_boundary[i] = False
        if sp.is_byte(i):
            base_bytes[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(LEADING_SPACE):
            has_space[i] = True
            piece = piece[1:]
        base_bytes[i] = len(piece.encode("utf-8"))
    return torch.from_numpy(base_bytes), torch.from_numpy(has_space), torch.from_numpy(is_boundary)


def count_bytes(prev: Tensor, target: Tensor, luts: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """UTF-8 bytes of each target token; its leading space counts unless the previous token is a boundary."""
    base_bytes, has_space, is_boundary = luts
    return base_bytes[target] + (has_space[target] & ~is_boundary[prev]).to(torch.int64)


def load_validation(
    args: Hyperparameters, log0
) -> tuple[Tensor | None, tuple[Tensor, Tensor, Tensor] | None]:
    """Val tokens and the tokenizer's byte table, or (None, None) when DATA_PATH has no val shards."""
    val_files = shard_files(args.data_path, "val")
    if not val_files:
        return None, None
    if not os.path.isfile(args.tokenizer_path):
        raise DataError(f"tokenizer not found: {args.tokenizer_path}")
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer_path)
    if int(sp.vocab_size()) > args.vocab_size:
        raise DataError(
            f"{args.tokenizer_path}: tokenizer vocab {sp.vocab_size()} > VOCAB_SIZE {args.vocab_size}"
        )
    log0(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={args.tokenizer_path}")
    return load_validation_tokens(val_files, args.train_seq_len, args.vocab_size), build_byte_luts(
        sp, args.vocab_size
    )


def evaluate(
    model: nn.Module,
    val_tokens: Tensor,
    luts: tuple[Tensor, Tensor, Tensor],
    seq_len: int,
    batch_seqs: int,
    rank: int,
    world_size: int,
    device: torch.device,
    cuda_path: bool = False,
) -> tuple[float, float]:
    """Mean CE (nats/token) and bits per byte over non-overlapping seq_len windows, split across ranks.

    On the CUDA path the model is compiled for one input shape with gradients on: every batch, the tail too, is
    padded to batch_seqs rows (padded targets are ignored by the loss) and run with grad mode on, so evaluation
    reuses the training graph when batch_seqs is the training micro-batch and never recompiles."""
    luts = tuple(t.to(device) for t in luts)
    total_seqs = (val_tokens.numel() - 1) // seq_len
    first, last = total_seqs * rank // world_size, total_seqs * (rank + 1) // world_size
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss_sum, tokens, bytes
    model.eval()
    with torch.enable_grad() if cuda_path else torch.inference_mode():
        for s in range(first, last, batch_seqs):
            e = min(s + batch_seqs, last)
            chunk = val_tokens[s * seq_len : e * seq_len + 1].to(device, non_blocking=True)
            x, y = chunk[:-1].reshape(-1, seq_len), chunk[1:].reshape(-1, seq_len)
            n = y.numel()
            sums[1] += n
            sums[2] += count_bytes(x.reshape(-1), y.reshape(-1), luts).sum().double()
            if cuda_path and e - s < batch_seqs:
                pad = batch_seqs - (e - s)
                x = torch.cat((x, x.new_zeros(pad, seq_len)))
                y = torch.cat((y, y.new_full((pad, seq_len), IGNORE_INDEX)))
            with autocast(device, cuda_path):
                loss = model(x, y).detach()  # mean over the real targets only
            sums[0] += loss.double() * n
    if world_size > 1:
        dist.all_reduce(sums)
    model.train()
    loss_sum, n_tokens, n_bytes = sums.tolist()
    val_loss = loss_sum / n_tokens
    return val_loss, loss_sum / (math.log(2) * n_bytes)


IGNORE_INDEX = -100  # F.cross_entropy's default: targets with this id count in neither the sum nor the mean


def autocast(device: torch.device, cuda_path: bool):
    """bf16 autocast on the CUDA path (also when emulated on a CPU); full fp32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if cuda_path else nullcontext()


# -----------------------------------------------------------------------------
# Model


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    """RoPE over the full head dimension; angles are computed per call so any length up to the input's works."""

    def __init__(self, head_dim: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, H, T, D)
        t = torch.arange(x.size(-2), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)
        cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; stored in the artifact as plain python values."""

    vocab_size: int
    num_layers: int
    model_dim: int
    num_heads: int
    num_kv_heads: int
    mlp_mult: int
    tie_embeddings: bool
    tied_embed_init_std: float
    rope_base: float
    logit_softcap: float
    qk_gain_init: float
    seq_len: int  # the training sequence length (scorers evaluate windows of this length)

    @classmethod
    def from_args(cls, args: Hyperparameters) -> "ModelConfig":
        return cls(
            args.vocab_size, args.num_layers, args.model_dim, args.num_heads, args.num_kv_heads, args.mlp_mult,
            bool(args.tie_embeddings), args.tied_embed_init_std, args.rope_base, args.logit_softcap,
            args.qk_gain_init, args.train_seq_len,
        )  # fmt: skip


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim, self.num_heads, self.num_kv_heads = cfg.model_dim, cfg.num_heads, cfg.num_kv_heads
        if dim % self.num_heads or self.num_heads % self.num_kv_heads or (dim // self.num_heads) % 2:
            raise ValueError(
                f"bad attention shape: dim {dim}, heads {self.num_heads}, kv heads {self.num_kv_heads}"
            )
        self.head_dim = dim // self.num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, kv_dim, bias=False)
        self.c_v = nn.Linear(dim, kv_dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.proj.zero_init = True
        self.q_gain = nn.Parameter(torch.full((self.num_heads,), cfg.qk_gain_init))
        self.rotary = Rotary(self.head_dim, cfg.rope_base)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))  # QK-RMSNorm, then RoPE
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        gqa = self.num_kv_heads != self.num_heads
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.model_dim, cfg.mlp_mult * cfg.model_dim, bias=False)
        self.proj = nn.Linear(cfg.mlp_mult * cfg.model_dim, cfg.model_dim, bias=False)
        self.proj.zero_init = True

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.model_dim
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(dim))
        self.mlp_scale = nn.Parameter(torch.ones(dim))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))))  # starts as x, no x0

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg, self.seq_len = cfg, cfg.seq_len
        self.stream_dtype: torch.dtype | None = None  # the trainer sets bf16 on the CUDA path; None: fp32
        self.eval_autocast = "fp32"  # the trainer sets "bf16" on the CUDA path; the harness scores under it
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.num_encoder = cfg.num_layers // 2
        self.num_decoder = cfg.num_layers - self.num_encoder
        self.skip_weights = nn.Parameter(torch.ones(min(self.num_encoder, self.num_decoder), cfg.model_dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.lm_head = None
        if cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        else:
            self.lm_head = nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
            self.lm_head.zero_init = True
        for module in self.modules():  # output projections start at zero: each block begins as identity
            if isinstance(module, nn.Linear) and getattr(module, "zero_init", False):
                nn.init.zeros_(module.weight)

    def forward_logits(self, idx: Tensor) -> Tensor:
        """(B, T) token ids -> (B, T, V) float32 logits after the softcap; causal."""
        x = rms_norm(self.tok_emb(idx))
        if self.stream_dtype is not None and torch.is_autocast_enabled(x.device.type):
            x = x.to(self.stream_dtype)  # the residual stream (and x0) in this dtype, only under autocast
        x0 = x
        skips = []
        for i in range(self.num_encoder):
            x = self.blocks[i](x, x0)
            skips.append(x)
        for i in range(self.num_decoder):
            if skips:  # U-Net: the last encoder output feeds the first decoder block, and so on
                x = x + self.skip_weights[i].to(x.dtype) * skips.pop()
            x = self.blocks[self.num_encoder + i](x, x0)
        x = rms_norm(x)
        logits = F.linear(x, self.tok_emb.weight) if self.lm_head is None else self.lm_head(x)
        softcap = self.cfg.logit_softcap
        return softcap * torch.tanh(logits.float() / softcap)

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        logits = self.forward_logits(idx)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


# -----------------------------------------------------------------------------
# Optimizers: Muon (orthogonalized momentum) for the blocks' matrices, Adam for everything else

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz coefficients tuned for fast convergence


def newton_schulz5(g: Tensor, steps: int, dtype: torch.dtype, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalize a wide g (rows <= cols): push its singular values towards 1, in `dtype`.
    Muon passes tall matrices transposed and contiguous, so the compiled version meets one static graph per
    wide shape (3 for the default model) and no stride or shape-relation guard ever recompiles it."""
    a, b, c = NS_COEFFS
    x = g.to(dtype)
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, then Newton-Schulz; with several ranks each orthogonalizes every world_size-th matrix.
    On the CUDA path Newton-Schulz runs compiled in bf16, and the update is gathered in bf16; else fp32 eager."""

    def __init__(self, params, lr, momentum, backend_steps, rank: int, world_size: int, cuda_path: bool):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps))
        self.rank, self.world_size = rank, world_size
        self.dtype = torch.bfloat16 if cuda_path else torch.float32
        self.orthogonalize = torch.compile(newton_schulz5, dynamic=False) if cuda_path else newton_schulz5

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params, momentum = group["params"], group["momentum"]
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=self.dtype)
            offset = 0
            for i, p in enumerate(params):
                if i % self.world_size == self.rank and p.grad is not None:
                    g = p.grad
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(g)
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(g)
                    g = g.add(buf, alpha=momentum)  # Nesterov
                    tall = g.size(0) > g.size(1)
                    wide = (g.T if tall else g).to(self.dtype, memory_format=torch.contiguous_format)
                    g = self.orthogonalize(wide, group["backend_steps"], self.dtype)
                    g = g.T if tall else g
                    g = g * max(1.0, g.size(0) / g.size(1)) ** 0.5  # same RMS update for tall matrices
                    flat[offset : offset + p.numel()] = g.reshape(-1)
                offset += p.numel()
            if self.world_size > 1:
                dist.all_reduce(flat)  # every rank filled only its own slots; the sum gathers them all
            offset = 0
            for p in params:
                p.add_(flat[offset : offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()


def build_optimizers(model: GPT, args: Hyperparameters, rank: int, world_size: int, fast: bool):
    """Block matrices -> Muon; embedding, head and control tensors -> Adam, each with its own LR."""
    control = name_patterns(args.control_tensor_name_patterns)
    matrices, scalars = [], []
    for name, p in model.blocks.named_parameters():
        (matrices if p.ndim == 2 and not any(c in name for c in control) else scalars).append(p)
    if model.skip_weights.numel():
        scalars.append(model.skip_weights)
    adam = dict(betas=(args.beta1, args.beta2), eps=args.adam_eps, fused=fast)  # fast: the CUDA path
    embed_lr = args.tied_embed_lr if args.tie_embeddings else args.embed_lr
    optimizers = [
        torch.optim.Adam([model.tok_emb.weight], lr=embed_lr, **adam),
        Muon(matrices, args.matrix_lr, args.muon_momentum, args.muon_backend_steps, rank, world_size, fast),
        torch.optim.Adam(scalars, lr=args.scalar_lr, **adam),
    ]
    if model.lm_head is not None:
        optimizers.append(torch.optim.Adam([model.lm_head.weight], lr=args.head_lr, **adam))
    for opt in optimizers:  # the LR schedule scales each group's starting LR
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    return optimizers


def cpu_clock() -> float:
    """CPU seconds of this process (every thread) and of the children it has waited for."""
    children = os.times()
    return time.process_time() + children.children_user + children.children_system


def training_clock(args: Hyperparameters):
    """The clock the budget is spent on: the wall clock, or (TRAIN_CLOCK=cpu) the CPU clock."""
    if args.train_clock not in ("wall", "cpu"):
        raise SystemExit(f"error: TRAIN_CLOCK={args.train_clock!r} must be 'wall' or 'cpu'")
    return cpu_clock if args.train_clock == "cpu" else time.perf_counter


def budget_seconds(args: Hyperparameters) -> float:
    """The training budget on its clock (0: none): MAX_WALLCLOCK_SECONDS, or MAX_CPU_SECONDS on the CPU clock."""
    if args.train_clock == "cpu":
        return args.max_cpu_seconds or args.max_wallclock_seconds * torch.get_num_threads()
    return args.max_wallclock_seconds


def lr_multiplier(args: Hyperparameters, step: int, elapsed_ms: float) -> float:
    """Linear warmdown to 0 over the last WARMDOWN_ITERS steps, counted in iterations or, under a clock cap,
    in estimated time on that clock (WARMDOWN_ITERS x current step time); whichever comes first."""
    if args.warmdown_iters <= 0:
        return 1.0
    mult = min(1.0, max(args.iterations - step, 0) / args.warmdown_iters)
    if budget_seconds(args) > 0 and step > 0:
        warmdown_ms = args.warmdown_iters * elapsed_ms / step
        remaining_ms = max(1000.0 * budget_seconds(args) - elapsed_ms, 0.0)
        mult = min(mult, remaining_ms / warmdown_ms if remaining_ms <= warmdown_ms else 1.0)
    return mult


def muon_momentum(args: Hyperparameters, step: int) -> float:
    """Linear warmup of Muon's momentum from MUON_MOMENTUM_WARMUP_START to MUON_MOMENTUM."""
    frac = min(step / args.muon_momentum_warmup_steps, 1.0) if args.muon_momentum_warmup_steps > 0 else 1.0
    return (1 - frac) * args.muon_momentum_warmup_start + frac * args.muon_momentum


# -----------------------------------------------------------------------------
# Quantized export/import: int8 per-row weights + zlib, self-describing (the model config rides along)
#
# Each row of a large tensor is stored as int8 codes times one fp16 step: the row's clipped range over 127, but
# never below a floor that every row shares. Without a floor every row spreads over all 255 codes whatever its
# scale, and the default 9x512 model compresses to about 16.3 MB after a few steps: over the cap. One step size
# for every weight is what minimizes the squared error at a given entropy, so the floor is chosen as small as
# the byte budget allows: searched on an entropy estimate, then checked with the real compressor.

ARTIFACT_FORMAT = "agentgolf_int8_per_row_v1"
INT8_MIN_NUMEL = 65_537  # float tensors at least this large are quantized; smaller ones pass through
INT8_CLIP_QUANTILE = 0.9999984  # per-row clip of |w|, so one outlier does not blow up the row's scale
INT8_MAX = 127
MIN_SCALE = 2.0**-24  # smallest positive fp16, so a zero row still gets a usable scale
ZLIB_LEVEL = 9
ENTROPY_BLOCK = 1 << 14  # values per sampled block: about one deflate block of int8 codes
ENTROPY_BLOCKS = 4  # blocks per tensor that the size estimate reads
FLOOR_SEARCH_ROUNDS = 6  # real compressions before the floor is simply raised until it fits
FLOOR_SEARCH_SLACK = 0.002  # aim this fraction under the budget, so one compression usually lands inside


def row_quantile(absw: Tensor, q: float) -> Tensor:
    """Linear-interpolated per-row quantile via sort (torch.quantile refuses very large inputs)."""
    s = absw.sort(dim=1).values
    pos = q * (s.size(1) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, s.size(1) - 1)
    return s[:, lo] + (s[:, hi] - s[:, lo]) * (pos - lo)


class Int8Export:
    """A state dict split into pass-through tensors and int8 candidates, each row with its clipped range;
    `artifact(floor)` quantizes with every step at least `floor`, `blob(floor)` is the compressed file."""

    def __init__(self, state: dict[str, Tensor], keep_fp32: tuple[str, ...], config: dict, numerics=None):
        self.config, self.numerics, self.passthrough, self.dtypes = config, numerics or {}, {}, {}
        self.rows: dict[str, tuple[Tensor, Tensor, torch.Size]] = {}  # 2-D values, floorless steps, shape
        sample = []  # for the size estimate: a few whole zlib-sized blocks of each tensor, as stored
        for name, t in state.items():
            t = t.detach()
            if not t.is_floating_point():
                self.passthrough[name] = t.cpu().contiguous()
                continue
            self.dtypes[name] = str(t.dtype).removeprefix("torch.")
            if t.numel() < INT8_MIN_NUMEL:
                keep = any(p in name for p in keep_fp32)
                self.passthrough[name] = (t.float() if keep else t.half()).cpu().contiguous()
                continue
            w = t.float().reshape(t.shape[0] if t.ndim == 2 else 1, -1)  # one scale per row, or per tensor
            steps = row_quantile(w.abs(), INT8_CLIP_QUANTILE) / INT8_MAX
            self.rows[name] = (w, steps, t.shape)
            blocks = -(-w.numel() // ENTROPY_BLOCK)
            for b in sorted({i * blocks // ENTROPY_BLOCKS for i in range(ENTROPY_BLOCKS)}):
                index = torch.arange(
                    b * ENTROPY_BLOCK, min((b + 1) * ENTROPY_BLOCK, w.numel()), device=w.device
                )
                weight = (
                    w.numel() / min(blocks, ENTROPY_BLOCKS) / index.numel()
                )  # sampled block -> its tensor
                sample.append((w.reshape(-1)[index], steps[index // w.size(1)], len(t.shape) == 2, weight))
        if sample:
            self.sample_values = torch.cat([v for v, _, _, _ in sample])
            self.sample_steps = torch.cat([st for _, st, _, _ in sample])
            self.sample_fp16 = torch.cat([torch.full_like(v, float(fp16)) for v, _, fp16, _ in sample]) > 0
            self.sample_block = torch.cat(
                [torch.full_like(v, i, dtype=torch.long) for i, (v, *_) in enumerate(sample)]
            )
            self.block_weight = torch.tensor([wt for *_, wt in sample], dtype=torch.float64)

    @staticmethod
    def steps(floorless: Tensor, shape: torch.Size, floor: float) -> Tensor:
        step = floorless.clamp_min(max(floor, MIN_SCALE))
        return step.half().float() if len(shape) == 2 else step  # exactly the stored scales

    def artifact(self, floor: float) -> dict:
        quantized, scales = {}, {}
        for name, (w, floorless, shape) in self.rows.items():
            step = self.steps(floorless, shape, floor)
            q = torch.round(w / step[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
            quantized[name] = q.reshape(shape).cpu()
            scales[name] = (step.half() if len(shape) == 2 else step[0]).cpu()
        return dict(
            format=ARTIFACT_FORMAT, quantized=quantized, scales=scales, dtypes=dict(self.dtypes),
            passthrough=self.passthrough, config=self.config, numerics=self.numerics,
        )  # fmt: skip

    def blob(self, floor: float) -> bytes:
        buf = io.BytesIO()
        torch.save(self.artifact(floor), buf)
        self.raw_bytes = buf.tell()  # before zlib, for the log
        return zlib.compress(buf.getvalue(), level=ZLIB_LEVEL)

    def payload_bytes(self) -> int:
        """Tensor bytes in the artifact: int8 codes, one fp16 scale per row (fp32 per tensor), pass-through."""
        scales = sum(steps.numel() * 2 if len(shape) == 2 else 4 for _, steps, shape in self.rows.values())
        codes = sum(w.numel() for w, _, _ in self.rows.values())
        return codes + scales + sum(t.numel() * t.element_size() for t in self.passthrough.values())

    def estimated_bytes(self, floor: float) -> float:
        """The int8 codes' size at this floor as zlib's Huffman blocks see it: the code entropy of each sampled
        block (one histogram per block, not per tensor: rows of different scales share a block) x its share."""
        if not self.rows:
            return 0.0
        step = self.sample_steps.clamp_min(max(floor, MIN_SCALE))
        step = torch.where(self.sample_fp16, step.half().float(), step)
        codes = torch.round(self.sample_values / step).clamp(-INT8_MAX, INT8_MAX).long() + INT8_MAX
        levels = 2 * INT8_MAX + 1
        counts = torch.bincount(self.sample_block * levels + codes, minlength=len(self.block_weight) * levels)
        counts = counts.view(-1, levels).double().cpu()
        p = counts / counts.sum(1, keepdim=True)
        bits = -(counts * torch.where(p > 0, p.log2(), torch.zeros_like(p))).sum(1)
        return float((bits * self.block_weight).sum()) / 8

    def fit(self, max_bytes: int) -> tuple[float, bytes, int]:
        """The smallest floor whose blob fits max_bytes (0 if none is needed): (floor, blob, compressions).
        Real sizes are predicted from the estimate through the line across the last two measured points (one
        point: slope 1), the floor that meets the prediction is bisected on log f, compressed and measured."""
        floor, blob = 0.0, self.blob(0.0)
        compressions, points = 1, [(self.estimated_bytes(0.0), len(blob))]
        ceiling = 2 * max((float(w.abs().max()) for w, _, _ in self.rows.values()), default=0.0) + MIN_SCALE
        aim = max_bytes - FLOOR_SEARCH_SLACK * max_bytes
        for _ in range(FLOOR_SEARCH_ROUNDS):
            if len(blob) <= max_bytes or floor >= ceiling:
                return floor, blob, compressions
            (e0, s0), (e1, s1) = points[-2:] if len(points) > 1 else (points[-1], points[-1])
            slope = min(max((s1 - s0) / (e1 - e0), 0.5), 2.0) if e1 != e0 else 1.0
            lo, hi = math.log(max(floor, MIN_SCALE)), math.log(ceiling)
            for _ in range(24):
                mid = (lo + hi) / 2
                if s1 + slope * (self.estimated_bytes(math.exp(mid)) - e1) <= aim:
                    hi = mid
                else:
                    lo = mid
            floor = max(math.exp(hi), floor * 1.001)  # always above a floor that missed
            blob, compressions = self.blob(floor), compressions + 1
            points.append((self.estimated_bytes(floor), len(blob)))
        while len(blob) > max_bytes and floor < ceiling:  # the estimate kept missing: step up plainly
            floor *= 1.25
            blob, compressions = self.blob(floor), compressions + 1
        return floor, blob, compressions


def quantize_state_dict(state: dict[str, Tensor], keep_fp32: tuple[str, ...], floor: float = 0.0) -> dict:
    return Int8Export(state, keep_fp32, config={}).artifact(floor)


def dequantize_state_dict(obj: dict) -> dict[str, Tensor]:
    state = {}
    for name, q in obj["quantized"].items():
        scale = obj["scales"][name].float()
        w = q.float() * (scale[:, None] if q.ndim == 2 else scale)
        state[name] = w.to(getattr(torch, obj["dtypes"][name]))
    for name, t in obj["passthrough"].items():
        state[name] = t.to(getattr(torch, obj["dtypes"][name])) if name in obj["dtypes"] else t
    return state


def read_artifact_bytes(blob: bytes, where: str = "artifact") -> dict:
    obj = torch.load(io.BytesIO(zlib.decompress(blob)), map_location="cpu", weights_only=True)
    if obj.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{where}: not a {ARTIFACT_FORMAT} artifact (format {obj.get('format')!r})")
    return obj


def read_artifact(path: str) -> dict:
    with open(path, "rb") as f:
        return read_artifact_bytes(f.read(), path)


def load_model(artifact_path: str, device: str = "cpu") -> GPT:
    """Rebuild the trained model from its artifact alone, with float32 weights in eval mode on `device`.

    The harness evaluates the way the model declares: EVAL_MODE windows (the default), sliding or stream
    (this model does not adapt, so stream scores as sliding), with EVAL_STRIDE and EVAL_CONTEXT; under the
    autocast it was evaluated with in training (`eval_autocast`: "bf16" on the CUDA path, with its residual
    stream in bf16; else "fp32"), or EVAL_AUTOCAST's.
    """
    obj = read_artifact(artifact_path)
    model = GPT(ModelConfig(**obj["config"]))
    model.load_state_dict(dequantize_state_dict(obj), strict=True)
    numerics = obj.get("numerics") or {}
    model.eval_autocast = os.environ.get("EVAL_AUTOCAST", numerics.get("autocast", "fp32"))
    if model.eval_autocast != "fp32" and numerics.get("stream", "float32") != "float32":
        model.stream_dtype = getattr(torch, numerics["stream"])  # a bf16 stream needs the autocast around it
    model.eval_mode = os.environ.get("EVAL_MODE", "windows")
    if model.eval_mode != "windows":
        model.eval_context = int(os.environ.get("EVAL_CONTEXT", model.seq_len))
        model.eval_stride = int(os.environ.get("EVAL_STRIDE", max(1, model.eval_context // 4)))
    return model.float().to(device).eval()


def write_artifact(model: GPT, args: Hyperparameters, log0) -> None:
    """Print the raw sizes for reference, then write the int8+zlib artifact that is the submission."""
    code_bytes = len(Path(__file__).read_text(encoding="utf-8").encode("utf-8"))
    raw = io.BytesIO()
    torch.save(model.state_dict(), raw)
    if args.save_raw_model:
        Path("final_model.pt").write_bytes(raw.getvalue())
    log0(f"Serialized model: {len(raw.getvalue())} bytes")
    log0(f"Code size: {code_bytes} bytes")
    log0(f"Total submission size: {len(raw.getvalue()) + code_bytes} bytes")
    t0 = time.perf_counter()
    keep_fp32 = name_patterns(args.int8_keep_float_fp32_name_patterns)
    stream = str(model.stream_dtype or torch.float32).removeprefix("torch.")
    numerics = {"autocast": model.eval_autocast, "stream": stream}  # load_model declares them
    export = Int8Export(model.state_dict(), keep_fp32, asdict(model.cfg), numerics)
    if args.int8_scale_floor > 0:
        floor, blob, compressions = args.int8_scale_floor, export.blob(args.int8_scale_floor), 1
        rule = "INT8_SCALE_FLOOR"
    else:
        floor, blob, compressions = export.fit(args.artifact_max_bytes - code_bytes)
        rule = f"the finest that fits ARTIFACT_MAX_BYTES={args.artifact_max_bytes}"
    log0(
        f"int8_export: step_floor:{floor:.4e} ({rule}) compressions:{compressions} "
        f"time:{time.perf_counter() - t0:.1f}s"
    )
    artifact = Path(args.artifact_path)
    artifact.parent.mkdir(parents=True, exist_ok=True)
    tmp = artifact.with_name(artifact.name + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, artifact)  # never leave a half-written artifact behind
    size = artifact.stat().st_size
    payload = export.payload_bytes()
    ratio = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / payload
    log0(
        f"Serialized model int8+zlib: {size} bytes "
        f"(payload:{payload} raw_torch:{export.raw_bytes} payload_ratio:{ratio:.2f}x)"
    )
    log0(f"Total submission size int8+zlib: {size + code_bytes} bytes")


# -----------------------------------------------------------------------------
# Training loop


class WallclockStop:
    """Ranks agree whether the wallclock cap was hit, one step late, without draining the GPU queue:
    a step's vote is all-reduced on the GPU and read back only after the next step has been queued."""

    def __init__(self, device: torch.device, distributed: bool):
        self.device, self.distributed = device, distributed
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.vote_host = torch.zeros(1, dtype=torch.int32, pin_memory=True)
            self.result_host = torch.zeros(1, dtype=torch.int32, pin_memory=True)
            self.vote = torch.zeros(1, dtype=torch.int32, device=device)
            self.event = None

    def check(self, reached: bool) -> bool:
        """Cast this step's vote; return the agreed result of the previous vote (CPU: this one)."""
        if not self.cuda:
            vote = torch.tensor([int(reached)], dtype=torch.int32)
            if self.distributed:
                dist.all_reduce(vote, op=dist.ReduceOp.MAX)
            return bool(vote.item())
        previous = False
        if self.event is not None:
            self.event.synchronize()  # waits for the previous step only; this step is already queued
            previous = bool(self.result_host[0])
        self.vote_host[0] = int(reached)
        self.vote.copy_(self.vote_host, non_blocking=True)
        if self.distributed:
            dist.all_reduce(self.vote, op=dist.ReduceOp.MAX)
        self.result_host.copy_(self.vote, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()
        return previous


def refuse_cpu_fallback(args: Hyperparameters) -> None:
    """A run that asks for CUDA (LOCAL_RANK from torchrun, or CUDA_VISIBLE_DEVICES naming devices) and finds none
    stops here with one line, rather than train the GPU recipe on a CPU; PRESET=cpu and EMULATE_CUDA mean a CPU."""
    asked = "LOCAL_RANK" in os.environ or os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1")
    if asked and not torch.cuda.is_available() and args.preset != "cpu" and not args.emulate_cuda:
        raise SystemExit(
            "error: CUDA requested but not available (LOCAL_RANK or CUDA_VISIBLE_DEVICES is set, and torch "
            f"{torch.__version__} sees no GPU); PRESET=cpu or EMULATE_CUDA=1 train on the CPU"
        )


def setup_distributed() -> tuple[bool, int, int, int, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    distributed = world_size > 1
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if distributed:
        if 8 % world_size:
            raise SystemExit(f"error: WORLD_SIZE={world_size} must divide 8")
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
        dist.barrier()
    return distributed, rank, world_size, local_rank, device


def configure_attention(cfg: ModelConfig, device: torch.device, log0) -> None:
    """Flash attention only, as the official trainer, when a probe shows it takes this shape on this GPU (head
    dim <= 256, sm80+, bf16, GQA); otherwise PyTorch's other SDPA kernels too, and the log says why."""
    head_dim, problems = cfg.model_dim // cfg.num_heads, []
    major, minor = torch.cuda.get_device_capability(device)
    if head_dim > FLASH_MAX_HEAD_DIM:
        problems.append(f"head_dim {head_dim} > {FLASH_MAX_HEAD_DIM}")
    if major < 8:
        problems.append(f"compute capability {major}.{minor} < 8.0")
    for flag, on in (("flash", True), ("mem_efficient", False), ("math", False), ("cudnn", False)):
        getattr(torch.backends.cuda, f"enable_{flag}_sdp")(on)
    if not problems:  # what flash cannot take fails here, with a reason, not as "No available kernel" later
        shape = (1, cfg.num_heads, min(cfg.seq_len, 128), head_dim)
        kv_shape = (1, cfg.num_kv_heads, *shape[2:])
        try:
            q = torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True)
            k, v = (torch.randn(kv_shape, device=device, dtype=torch.bfloat16) for _ in range(2))
            gqa = cfg.num_kv_heads != cfg.num_heads
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa).sum().backward()
        except RuntimeError as e:
            problems.append(str(e).strip().splitlines()[-1][:200])
    if problems:
        for flag in ("mem_efficient", "math", "cudnn"):
            getattr(torch.backends.cuda, f"enable_{flag}_sdp")(True)
        log0(
            f"attention: flash cannot take this config ({'; '.join(problems)}); using PyTorch's other kernels"
        )
    else:
        log0(f"attention: flash (head_dim {head_dim}, heads {cfg.num_heads}, kv heads {cfg.num_kv_heads})")


FLASH_MAX_HEAD_DIM = 256  # PyTorch's flash kernel: one head dim for q, k, v, at most 256


def use_compile_cache(folder: str) -> None:
    """Keep Inductor's and Triton's caches under `folder`; must run before anything is compiled."""
    root = Path(folder).absolute()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(root / "triton")


def train(args: Hyperparameters) -> None:
    if args.compile_cache_dir:
        use_compile_cache(args.compile_cache_dir)
    refuse_cpu_fallback(args)
    distributed, rank, world_size, _, device = setup_distributed()
    master = rank == 0
    cuda = device.type == "cuda"
    cuda_path = cuda or bool(args.emulate_cuda)  # compile, bf16 autocast and Newton-Schulz, grad accumulation
    grad_accum_steps = 8 // world_size if cuda_path else 1  # one big micro-batch is fastest on a CPU
    if args.train_batch_tokens % (world_size * grad_accum_steps * args.train_seq_len):
        raise SystemExit(
            "error: TRAIN_BATCH_TOKENS must be a multiple of world_size * grad_accum * TRAIN_SEQ_LEN"
        )
    log_file = None
    if master and args.run_id:
        os.makedirs("logs", exist_ok=True)
        log_file = f"logs/{args.run_id}.txt"

    def log0(msg: str) -> None:
        if master:
            print(msg, flush=True)
            if log_file:
                with open(log_file, "a", encoding="utf-8") as f:
                    print(msg, file=f)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if cuda:
        torch.cuda.manual_seed_all(args.seed)
        torch.set_float32_matmul_precision("high")  # TF32

    # data
    train_files = shard_files(args.data_path, "train")
    if not train_files:
        raise DataError(f"no fineweb_train_*.bin files in {args.data_path}")
    val_tokens, luts = load_validation(args, log0)
    loader = DistributedTokenLoader(train_files, args.vocab_size, rank, world_size, device)
    log0(f"train_loader:dataset:{Path(args.data_path).name} train_shards:{len(train_files)}")
    if val_tokens is None:
        log0(f"val_loader:skipped no fineweb_val_*.bin in {args.data_path}; the harness scores the model")
    else:
        pattern = os.path.join(args.data_path, "fineweb_val_*.bin")
        log0(f"val_loader:shards pattern={pattern} tokens:{val_tokens.numel() - 1}")
    micro_seqs = args.train_batch_tokens // (world_size * grad_accum_steps * args.train_seq_len)
    val_batch_seqs = max(1, args.val_batch_size // (world_size * grad_accum_steps * args.train_seq_len))
    if cuda_path:  # the compiled training graph serves evaluation too: one shape, no recompile
        val_batch_seqs = micro_seqs

    # model and optimizers
    base_model = GPT(ModelConfig.from_args(args)).to(device)
    log0(f"init_hash:{init_hash(base_model)}")  # the harness pairs runs that start from the same weights
    if cuda_path:
        base_model.eval_autocast = "bf16"
    if cuda_path and args.bf16_stream:
        base_model.stream_dtype = torch.bfloat16
    if cuda:
        configure_attention(base_model.cfg, device, log0)
    compiled = torch.compile(base_model, dynamic=False, fullgraph=True) if cuda_path else base_model
    model = compiled
    if distributed:
        model = DDP(compiled, device_ids=[device.index] if cuda else None, broadcast_buffers=False)
    optimizers = build_optimizers(base_model, args, rank, world_size, cuda_path)
    log0(f"model_params:{sum(p.numel() for p in base_model.parameters())}")
    log0(f"world_size:{world_size} grad_accum_steps:{grad_accum_steps}")
    if cuda_path:
        stream = "bf16" if base_model.stream_dtype is not None else "fp32"
        log0(
            f"cuda_path:{'cuda' if cuda else 'emulated on cpu'} compile:fullgraph autocast:bf16 "
            f"residual_stream:{stream} newton_schulz:bf16 val_batch_seqs:{val_batch_seqs}"
        )
    log0(f"seed:{args.seed}")
    log0(
        f"train_batch_tokens:{args.train_batch_tokens} train_seq_len:{args.train_seq_len} "
        f"iterations:{args.iterations} warmup_steps:{args.warmup_steps} "
        f"max_wallclock_seconds:{args.max_wallclock_seconds:.3f}"
    )
    clock = training_clock(args)
    if args.train_clock == "cpu":
        log0(f"train_clock:cpu max_cpu_seconds:{budget_seconds(args):.3f} threads:{torch.get_num_threads()}")

    def train_step(step: int, elapsed_ms: float) -> Tensor:
        total = torch.zeros((), device=device)
        for micro in range(grad_accum_steps):
            if distributed:
                model.require_backward_grad_sync = micro == grad_accum_steps - 1  # one all-reduce per step
            x, y = loader.next_batch(args.train_batch_tokens, args.train_seq_len, grad_accum_steps)
            with autocast(device, cuda_path):
                loss = model(x, y)
            total += loss.detach()
            (loss / grad_accum_steps).backward()
        optimizers[1].param_groups[0]["momentum"] = muon_momentum(args, step)
        mult = lr_multiplier(args, step, elapsed_ms)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * mult
        if args.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(base_model.parameters(), args.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        return total / grad_accum_steps

    # compile priming: run a few real steps, then put weights, optimizer state and data back as they were
    if args.warmup_steps > 0:
        model_state = copy.deepcopy(base_model.state_dict())
        opt_states = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
        for i in range(args.warmup_steps):
            train_step(0, 0.0)
            if args.warmup_steps <= 20 or (i + 1) % 10 == 0 or i + 1 == args.warmup_steps:
                log0(f"warmup_step:{i + 1}/{args.warmup_steps}")
        base_model.load_state_dict(model_state)
        for opt, state in zip(optimizers, opt_states, strict=True):
            opt.load_state_dict(state)
        loader = DistributedTokenLoader(train_files, args.vocab_size, rank, world_size, device)

    # main loop; the clock (wall or CPU) pauses during validation
    max_ms = 1000.0 * budget_seconds(args) if budget_seconds(args) > 0 else None
    stopper = WallclockStop(device, distributed)
    training_ms, stop_after, step = 0.0, None, 0
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t0 = clock()
    while True:
        last_step = step == args.iterations or (stop_after is not None and step >= stop_after)
        periodic = args.val_loss_every > 0 and step > 0 and step % args.val_loss_every == 0  # none at step 0
        validate = val_tokens is not None and (last_step or periodic)
        if validate or last_step:
            sync()
            training_ms += 1000.0 * (clock() - t0)
        if validate:
            val_loss, val_bpb = evaluate(
                compiled, val_tokens, luts, args.train_seq_len, val_batch_seqs, rank, world_size, device,
                cuda_path,
            )  # fmt: skip
            log0(
                f"step:{step}/{args.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
                f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms"
            )
            sync()
            t0 = clock()
        if last_step:
            if stop_after is not None and step < args.iterations:
                cap = "cpu_clock_cap" if args.train_clock == "cpu" else "wallclock_cap"
                log0(f"stopping_early: {cap} train_time:{training_ms:.0f}ms step:{step}/{args.iterations}")
            break
        elapsed_ms = training_ms + 1000.0 * (clock() - t0)
        train_loss = train_step(step, elapsed_ms)
        step += 1
        elapsed_ms = training_ms + 1000.0 * (clock() - t0)
        if max_ms is not None and stop_after is None and stopper.check(elapsed_ms >= max_ms):
            stop_after = step
        if args.train_log_every > 0 and (
            step <= 10 or step % args.train_log_every == 0 or stop_after is not None
        ):
            log0(
                f"step:{step}/{args.iterations} train_loss:{train_loss.item():.4f} "
                f"train_time:{elapsed_ms:.0f}ms step_avg:{elapsed_ms / step:.2f}ms"
            )

    mib = 1024 * 1024
    peak_alloc = torch.cuda.max_memory_allocated() // mib if cuda else 0
    peak_reserved = torch.cuda.max_memory_reserved() // mib if cuda else 0
    log0(f"peak memory allocated: {peak_alloc} MiB reserved: {peak_reserved} MiB")

    if master:
        write_artifact(base_model, args, log0)
    if distributed:
        dist.barrier()

    # roundtrip: the score is measured on the weights read back from the artifact file
    base_model.load_state_dict(dequantize_state_dict(read_artifact(args.artifact_path)), strict=True)
    if val_tokens is not None:
        sync()
        t_eval = time.perf_counter()
        val_loss, val_bpb = evaluate(
            compiled, val_tokens, luts, args.train_seq_len, val_batch_seqs, rank, world_size, device,
            cuda_path,
        )  # fmt: skip
        sync()
        log0(
            f"final_int8_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
            f"eval_time:{1000.0 * (time.perf_counter() - t_eval):.0f}ms"
        )
        log0(f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")
    if distributed:
        dist.destroy_process_group()


# -----------------------------------------------------------------------------
# Main


def init_hash(model: nn.Module) -> str:
    """A short hash of the initial weights: two runs with one seed and one init print the same."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    try:
        train(Hyperparameters())
    except DataError as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
