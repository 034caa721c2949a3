"""Stand-in for the official train_gpt.py in `bench/gpu_check.sh --dry-run` and its tests.

Prints the official trainer's log lines (parameter-golf-facts.md §3.7) for a simulated run: a short pause for
"compile", warm-up lines, then steps of STANDIN_STEP_MS (default 50) real milliseconds until
min(MAX_WALLCLOCK_SECONDS, STANDIN_TRAIN_SECONDS=2) seconds, then the export and roundtrip lines.
STANDIN_EXIT=N exits with code N after the first training steps, as a crash would.
"""

import os
import sys
import time

env = os.environ.get
batch = int(env("TRAIN_BATCH_TOKENS", 524288))
iterations = int(env("ITERATIONS", 20000))
warmup = int(env("WARMUP_STEPS", 20))
cap_s = min(float(env("MAX_WALLCLOCK_SECONDS", 600)), float(env("STANDIN_TRAIN_SECONDS", 2)))
step_s = float(env("STANDIN_STEP_MS", 50)) / 1000

print(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={env('TOKENIZER_PATH')}")
print(f"train_loader:dataset:{os.path.basename(env('DATA_PATH', ''))} train_shards:1")
print("model_params:17059912")
print(f"world_size:{env('WORLD_SIZE', '1')} grad_accum_steps:8")
print(f"seed:{env('SEED', '1337')}")
print(f"train_batch_tokens:{batch} train_seq_len:1024 iterations:{iterations} warmup_steps:{warmup} "
      f"max_wallclock_seconds:{float(env('MAX_WALLCLOCK_SECONDS', 600)):.3f}", flush=True)  # fmt: skip
time.sleep(0.3)  # "compile"
for i in range(warmup):
    print(f"warmup_step:{i + 1}/{warmup}", flush=True)
t0, step = time.perf_counter(), 0
while (time.perf_counter() - t0) < cap_s and step < iterations:
    time.sleep(step_s)
    step += 1
    ms = 1000 * (time.perf_counter() - t0)
    if step <= 10 or step % 200 == 0:
        print(f"step:{step}/{iterations} train_loss:{6.9 - step * 0.01:.4f} train_time:{ms:.0f}ms "
              f"step_avg:{ms / step:.2f}ms", flush=True)  # fmt: skip
    if step == 3 and env("STANDIN_EXIT"):
        print("Traceback (most recent call last):\nRuntimeError: stand-in crash", file=sys.stderr, flush=True)
        sys.exit(int(env("STANDIN_EXIT")))
ms = 1000 * (time.perf_counter() - t0)
print(
    f"step:{step}/{iterations} val_loss:2.7603 val_bpb:1.5734 train_time:{ms:.0f}ms step_avg:{ms / step:.2f}ms"
)
print(f"stopping_early: wallclock_cap train_time:{ms:.0f}ms step:{step}/{iterations}")
print("peak memory allocated: 10303 MiB reserved: 10830 MiB")
print("Serialized model: 67224983 bytes\nCode size: 47686 bytes\nTotal submission size: 67272669 bytes")
print("Serialized model int8+zlib: 11812393 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)")
print("Total submission size int8+zlib: 11860079 bytes")
time.sleep(0.2)
print("final_int8_zlib_roundtrip val_loss:2.7624 val_bpb:1.5768 eval_time:1412ms")
print("final_int8_zlib_roundtrip_exact val_loss:2.76240000 val_bpb:1.57684750")
