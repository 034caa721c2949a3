# Sourced by bench/gpu_check.sh and bench/gpu_loop.sh with --dry-run: stand-ins for the GPU machine on a CPU.
# Needs ROOT and PY. Every variable keeps a value the caller already set.
export PATH="$ROOT/bench/gpu_standins:$PATH"
export OFFICIAL_TRAINER="${OFFICIAL_TRAINER:-$ROOT/bench/gpu_standins/official_train_gpt.py}"
export GPU_CHECK_TRAIN_SECONDS="${GPU_CHECK_TRAIN_SECONDS:-12}" GPU_CHECK_WARM_SECONDS="${GPU_CHECK_WARM_SECONDS:-4}"
export GPU_CHECK_SMOKE_SECONDS="${GPU_CHECK_SMOKE_SECONDS:-40}" GPU_CHECK_OFFICIAL_MIN_LEFT="${GPU_CHECK_OFFICIAL_MIN_LEFT:-30}"
export GPU_CHECK_SHARD_ARGS="${GPU_CHECK_SHARD_ARGS---max-train-docs 300 --max-val-docs 20}"
# a CPU-sized recipe for every trainer (the environment reaches the plain runs; sandboxed ones get these names)
export PRESET="${PRESET:-cpu}" NUM_LAYERS="${NUM_LAYERS:-2}" MODEL_DIM="${MODEL_DIM:-64}" NUM_HEADS="${NUM_HEADS:-2}"
export NUM_KV_HEADS="${NUM_KV_HEADS:-1}" TRAIN_SEQ_LEN="${TRAIN_SEQ_LEN:-64}" ITERATIONS="${ITERATIONS:-12}"
export TRAIN_BATCH_TOKENS="${TRAIN_BATCH_TOKENS:-1024}" VAL_BATCH_SIZE="${VAL_BATCH_SIZE:-8192}" WARMUP_STEPS="${WARMUP_STEPS:-2}"
export GPU_CHECK_TRAINER_ENV="PRESET NUM_LAYERS MODEL_DIM NUM_HEADS NUM_KV_HEADS TRAIN_SEQ_LEN ITERATIONS TRAIN_BATCH_TOKENS VAL_BATCH_SIZE WARMUP_STEPS"
export SMOKE_CPU_STANDIN=1 LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-/nonexistent/cuda-standin/lib64}"
# the device image's view of Python packages: what it lacks and the pack does not carry cannot be imported
AGENTGOLF_BLOCK_IMPORTS=$("$PY" "$ROOT/bench/gpu_data.py" blocked) || return 2
export AGENTGOLF_BLOCK_IMPORTS PYTHONPATH="$ROOT/bench/import_blocker${PYTHONPATH:+:$PYTHONPATH}"
