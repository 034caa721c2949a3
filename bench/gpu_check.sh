#!/usr/bin/env bash
# The GPU check of issue 21: one device call of at most about 9 minutes that cannot come back empty.
#
# Before (here, with ../shared/data and PyPI):  python bench/gpu_data.py pack [--official PATH]
# On one H100/H200, through the device tool:    bash bench/gpu_check.sh
#   carry ["bench/gpu_data"] (about 47 MiB), timeout_s 570; it stops itself by GPU_CHECK_DEADLINE (540 s).
# On a CPU, with stand-ins:                     bash bench/gpu_check.sh --dry-run
#
# Steps, in order; each has its own timeout (cut to what the deadline leaves) and copies its file into
# $OUT the moment it ends (while it runs, every 10 s), so a call cut off still returns what was done:
#   1 probe.txt      nvidia-smi (UUIDs, compute mode), CUDA/Triton env, ldconfig's libcuda, /dev/nvidia*, bwrap
#                    and user namespaces, cgroups, python/torch, CUDA in the sandbox's stripped env; exit 3 if
#                    there is no GPU or torch sees no CUDA
#   2 install.txt    the pack's wheels and the project (pip --no-index --no-deps), bwrap from the pack if absent,
#                    the shards (built in the background since step 1), then agentgolf's imports and CLI
#   3 smoke.txt      bench/gpu_smoke.py as the trainer of run_sandboxed(gpus=[0]); again with LD_LIBRARY_PATH
#                    passed if CUDA failed; the dry run adds the real trainer on gpus=[0] (fake device nodes)
#   4 ours_cold.log  baseline/train_gpt.py, GPU_CHECK_TRAIN_SECONDS (60) through torchrun, a cold compile cache
#   5 score.txt      the harness's scorer and verifier on that artifact (gpus=[0]) vs the trainer's own score
#   6 ours_warm.log  the same trainer, GPU_CHECK_WARM_SECONDS (20), the compile cache step 4 left: the overhead
#   7 official.log   the official train_gpt.py, only if GPU_CHECK_OFFICIAL_MIN_LEFT (200 s) remain
#   8 summary.txt    rewritten after every step: the steps so far and the table (bench/gpu_check.py summary)
# Not here: `agentgolf run` (bench/gpu_loop.sh, for a machine with time left). GPU_CHECK_STEPS=a,b picks steps.
# Exit: 0 when every step that ran passed, 3 without a GPU, else 1.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
START=$(date +%s)
DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
PY=${PYTHON:-python3}
PACK=${GPU_CHECK_PACK:-bench/gpu_data}

if [ "$DRY_RUN" = 1 ]; then
  export GPU_CHECK_WORK="${GPU_CHECK_WORK:-/tmp/gpu_check_dry_run}" GPU_CHECK_OUT="${GPU_CHECK_OUT:-$ROOT/bench/out/gpu_check_dry_run}"
  # shellcheck source=bench/gpu_dry_env.sh
  . "$ROOT/bench/gpu_dry_env.sh" || exit 2
fi

WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
OUTDIR=${GPU_CHECK_OUT:-${OUT:-bench/out/gpu_check}}
DEADLINE=${GPU_CHECK_DEADLINE:-540}
TRAIN_SECONDS=${GPU_CHECK_TRAIN_SECONDS:-60}
WARM_SECONDS=${GPU_CHECK_WARM_SECONDS:-20}
SMOKE_SECONDS=${GPU_CHECK_SMOKE_SECONDS:-45}
OFFICIAL_MIN_LEFT=${GPU_CHECK_OFFICIAL_MIN_LEFT:-200}
STEPS=${GPU_CHECK_STEPS:-probe,install,smoke,ours_cold,score,ours_warm,official}
OFFICIAL=${OFFICIAL_TRAINER:-$PACK/official/train_gpt.py}
TORCHRUN=${TORCHRUN:-torchrun}
RESERVE=10  # seconds kept for the last summary
case "$PACK" in /*) ;; *) PACK="$ROOT/$PACK" ;; esac
case "$OFFICIAL" in /*) ;; *) OFFICIAL="$ROOT/$OFFICIAL" ;; esac
case "$OUTDIR" in /*) ;; *) OUTDIR="$ROOT/$OUTDIR" ;; esac
command -v "$TORCHRUN" > /dev/null 2>&1 || TORCHRUN="$PY -m torch.distributed.run"
rm -rf "$WORK"
mkdir -p "$WORK" "$OUTDIR"
DATA="$WORK/data"
FAILED=0

say() { echo "gpu_check [$(( $(date +%s) - START ))s] $*"; }
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
summary() {
  "$PY" "$ROOT/bench/gpu_check.py" summary --work "$WORK" --train-seconds "$TRAIN_SECONDS" \
    --warm-seconds "$WARM_SECONDS" > "$WORK/summary.txt" 2>&1
  cp "$WORK/summary.txt" "$OUTDIR/summary.txt"
}

# step NAME FILE OWN_TIMEOUT FUNCTION: runs FUNCTION (its output appended to WORK/FILE) under a timeout,
# syncing FILE into OUT every 10 s and once more when it ends; records "NAME exit RC SECONDS" in steps.txt.
step() {
  local name=$1 file=$2 own=$3 fn=$4 rest t rc syncer began
  rest=$(( $(left) - RESERVE ))
  t=$(( own < rest ? own : rest ))
  if [ "$t" -lt 5 ]; then
    echo "$name skipped: ${rest}s left before the deadline" >> "$WORK/steps.txt"
    say "$name: skipped, ${rest}s left"
    summary
    return 0
  fi
  say "$name: up to ${t}s"
  began=$(date +%s)
  ( while sleep 10; do cp "$WORK/$file" "$OUTDIR/$file" 2> /dev/null; done ) &
  syncer=$!
  STEP_TIMEOUT=$t "$fn" >> "$WORK/$file" 2>&1
  rc=$?
  kill "$syncer" 2> /dev/null
  wait "$syncer" 2> /dev/null
  [ "$rc" = 124 ] && echo "gpu_check: $name timed out after ${t}s" >> "$WORK/$file"
  cp "$WORK/$file" "$OUTDIR/$file"
  echo "$name exit $rc $(( $(date +%s) - began ))s" >> "$WORK/steps.txt"
  [ "$rc" = 0 ] || FAILED=1
  say "$name: exit $rc ($(( $(date +%s) - began ))s) -> $OUTDIR/$file"
  summary
  return "$rc"
}
bounded() { timeout -k 10 "$STEP_TIMEOUT" "$@"; }  # a step's command, under the step's timeout

# --- 1 probe ---------------------------------------------------------------------------------------------
PROBE_TORCH='import sys, torch
ok = torch.cuda.is_available()
print(f"python {sys.version.split()[0]} at {sys.executable}, torch {torch.__version__} (cuda build {torch.version.cuda}), cuda {ok}")
if ok:
    print("device:", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
try:
    from triton.backends.nvidia.driver import libcuda_dirs
    print("triton libcuda_dirs:", libcuda_dirs())
except Exception as e:
    print("triton libcuda_dirs: FAIL", type(e).__name__, str(e)[:200])
sys.exit(0 if ok else 3)'
probe() {
  local rc gpu
  echo "probe: $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB$([ "$DRY_RUN" = 1 ] && echo ', DRY RUN on a CPU with stand-ins')"
  echo "== nvidia-smi"
  if ! gpu=$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,index,minor_number,uuid,compute_mode --format=csv 2>&1); then
    echo "$gpu"
    echo "probe: no usable GPU: nvidia-smi failed"
    return 3
  fi
  echo "$gpu"
  echo "probe: gpu $(echo "$gpu" | sed -n 2p)"
  echo "== env"; env | grep -E '^(PATH|LD_LIBRARY_PATH|CUDA|NVIDIA|TRITON|TORCH)' | sort
  echo "== ldconfig -p (libcuda, libnvidia-ml)"; (ldconfig -p 2> /dev/null || /sbin/ldconfig -p) | grep -E 'libcuda|libnvidia-ml' || echo "(none in the ld.so cache)"
  echo "== /dev/nvidia*"; ls -l /dev/nvidia* 2>&1
  echo "== tools"; for c in git gcc bwrap nvidia-smi "$PY"; do echo "$c: $(command -v "$c" || echo MISSING)"; done
  echo "bwrap: $(bwrap --version 2>&1)"; ls "$PACK"/debs/bubblewrap_*.deb 2> /dev/null
  echo "user namespaces: max $(cat /proc/sys/user/max_user_namespaces 2>&1); try: $(timeout 10 bwrap --ro-bind / / --unshare-user --unshare-pid --dev /dev true 2>&1 && echo ok)"
  echo "== cgroups: $(stat -fc %T /sys/fs/cgroup 2>&1)"
  echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>&1)"
  echo "subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control 2>&1)"
  echo "own: $(cat /proc/self/cgroup 2>&1 | tr '\n' ' ')"
  echo "== python and torch, this environment"
  timeout 90 "$PY" -c "$PROBE_TORCH"
  rc=$?
  echo "== the same in the sandbox's stripped environment (env -i, no bwrap)"
  timeout 90 env -i PATH="$(dirname "$(command -v "$PY")"):/usr/local/bin:/usr/bin:/bin" HOME=/tmp LANG=C.UTF-8 "$PY" -c "$PROBE_TORCH"
  echo "probe: stripped env: exit $? (3: no CUDA there)"
  echo "probe: torch here: exit $rc"
  [ "$rc" = 0 ] || [ "$DRY_RUN" = 1 ] || { echo "probe: torch sees no CUDA: stopping (exit 3)"; return 3; }
  [ "$rc" = 0 ] || [ "$rc" = 3 ] || return "$rc"
  return 0
}

# --- 2 install --------------------------------------------------------------------------------------------
start_shards() {
  # shellcheck disable=SC2086
  (timeout 240 "$PY" "$ROOT/bench/gpu_data.py" shards --pack "$PACK" --out "$DATA" ${GPU_CHECK_SHARD_ARGS:-} > "$WORK/shards.log" 2>&1
   echo "shards: exit $?" >> "$WORK/shards.log") &
  SHARDS_PID=$!
}
install() {
  local specs rc=0
  specs=$("$PY" "$ROOT/bench/gpu_data.py" specs) || return 1
  if ! ls "$PACK"/wheels/*.whl > /dev/null 2>&1; then
    echo "install: no wheels in $PACK/wheels (bench/gpu_data.py pack)"
    [ "$DRY_RUN" = 1 ] || rc=1
  elif [ "$DRY_RUN" = 1 ]; then
    echo "install: DRY RUN: does every requirement resolve from the pack for CPython 3.12 (nothing installed)?"
    # shellcheck disable=SC2086
    bounded "$PY" -m pip install -q --dry-run --ignore-installed --no-index --no-deps --only-binary=:all: \
      --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux_2_28_x86_64 --find-links "$PACK/wheels" $specs || rc=1
  else
    # shellcheck disable=SC2086
    bounded "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --find-links "$PACK/wheels" $specs || rc=1
    bounded "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir "$ROOT" || rc=1
  fi
  echo "install: pip exit $rc"
  echo "== shards"
  wait "$SHARDS_PID" 2> /dev/null
  cat "$WORK/shards.log"
  grep -q "^shards: exit 0" "$WORK/shards.log" || rc=1
  echo "== agentgolf: imports, optuna's TPE, bm25s, init, ledger$([ "$DRY_RUN" = 1 ] && echo " (blocked: $AGENTGOLF_BLOCK_IMPORTS)")"
  (cd "$WORK" && bounded "$PY" "$ROOT/bench/gpu_harness.py" imports --workspace "$WORK/ws") || rc=1
  return "$rc"
}
bwrap_from_pack() {  # in this shell: later steps need it on PATH
  command -v bwrap > /dev/null 2>&1 && return
  local deb
  deb=$(ls "$PACK"/debs/bubblewrap_*.deb 2> /dev/null | head -n 1)
  if [ -n "$deb" ] && dpkg -x "$deb" "$WORK/bwrap"; then
    export PATH="$WORK/bwrap/usr/bin:$PATH"
    echo "install: bwrap from $deb: $(bwrap --version 2>&1)" >> "$WORK/install.txt"
  else
    echo "install: no bwrap and none in the pack: the sandbox runs with isolation none" >> "$WORK/install.txt"
  fi
}

# --- 3 smoke ----------------------------------------------------------------------------------------------
smoke() {
  local fake=() rc
  [ "$DRY_RUN" = 1 ] && fake=(--fake-dev "$WORK/fake-dev")
  bounded "$PY" "$ROOT/bench/gpu_harness.py" smoke --data "$DATA" --run-dir "$WORK/smoke" "${fake[@]}" \
    --train-seconds "$SMOKE_SECONDS" --grace 30
  rc=$?
  if [ "$DRY_RUN" = 1 ]; then
    echo "== the sandbox leg: the real trainer, gpus=[0] on fake device nodes, a short budget"
    bounded "$PY" "$ROOT/bench/gpu_harness.py" trainer --data "$DATA" --run-dir "$WORK/sandboxed" "${fake[@]}" \
      --train-seconds 6 || rc=1
  fi
  return "$rc"
}

# --- 4, 6, 7 the trainers ---------------------------------------------------------------------------------
trainer_run() {  # name script seconds
  local name=$1 script=$2 seconds=$3 dir="$WORK/$1" dataset
  dataset=$(ls -d "$DATA"/datasets/*/ 2> /dev/null | head -n 1)
  mkdir -p "$dir" "$WORK/compile-cache"
  cp "$script" "$dir/train_gpt.py"
  echo "gpu_check: $name, ${seconds}s of training, compile cache $WORK/compile-cache ($(du -sh "$WORK/compile-cache" | cut -f1) before)"
  # shellcheck disable=SC2086
  (cd "$dir" && env DATA_PATH="${dataset%/}" TOKENIZER_PATH="$(ls "$DATA"/tokenizers/*.model)" VOCAB_SIZE="${VOCAB_SIZE:-1024}" \
    SEED="${SEED:-1337}" RUN_ID="$name" MAX_WALLCLOCK_SECONDS="$seconds" VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY="${TRAIN_LOG_EVERY:-50}" \
    COMPILE_CACHE_DIR="$WORK/compile-cache" TORCHINDUCTOR_CACHE_DIR="$WORK/compile-cache/inductor" \
    TRITON_CACHE_DIR="$WORK/compile-cache/triton" PYTHONUNBUFFERED=1 \
    "$PY" "$ROOT/bench/gpu_check.py" run --label "$name" --log "$WORK/$name.log" --timeout "$STEP_TIMEOUT" -- \
    $TORCHRUN --standalone --nproc_per_node=1 train_gpt.py) > "$WORK/$name.console" 2>&1
}
ours_cold() { trainer_run ours_cold "$ROOT/baseline/train_gpt.py" "$TRAIN_SECONDS"; }
ours_warm() { trainer_run ours_warm "$ROOT/baseline/train_gpt.py" "$WARM_SECONDS"; }
official() { trainer_run official "$OFFICIAL" "$TRAIN_SECONDS"; }

# --- 5 score ----------------------------------------------------------------------------------------------
score() {
  local extra=()
  [ "$DRY_RUN" = 1 ] || extra+=(--gpu)
  if grep -q "^cuda inside the sandbox: ld_library_path" "$WORK/smoke.txt" 2> /dev/null; then
    extra+=(--env "{\"LD_LIBRARY_PATH\": \"${LD_LIBRARY_PATH:-}\"}")
  fi
  bounded "$PY" "$ROOT/bench/gpu_harness.py" score --data "$DATA" --run-dir "$WORK/score" \
    --artifact "$WORK/ours_cold/final_model.int8.ptz" --trainer-log "$WORK/ours_cold.log" "${extra[@]}"
}

# --- the plan ---------------------------------------------------------------------------------------------
say "steps $STEPS; ${TRAIN_SECONDS}s cold, ${WARM_SECONDS}s warm; deadline ${DEADLINE}s; out $OUTDIR"
if want probe; then
  step probe probe.txt 120 probe || { say "stopping: $(tail -n 1 "$WORK/probe.txt")"; exit 3; }
fi
start_shards
want install && { step install install.txt 180 install; bwrap_from_pack; cp "$WORK/install.txt" "$OUTDIR/"; }
want install || wait "$SHARDS_PID"
want smoke && step smoke smoke.txt 260 smoke
want ours_cold && step ours_cold ours_cold.log $(( TRAIN_SECONDS + 240 )) ours_cold
want score && step score score.txt 180 score
want ours_warm && step ours_warm ours_warm.log $(( WARM_SECONDS + 150 )) ours_warm
if want official; then
  if [ ! -f "$OFFICIAL" ]; then
    echo "official skipped: no file at $OFFICIAL (bench/gpu_data.py pack --official PATH)" >> "$WORK/steps.txt"
  elif [ "$(left)" -lt "$OFFICIAL_MIN_LEFT" ]; then
    echo "official skipped: $(left)s left, under ${OFFICIAL_MIN_LEFT}s" >> "$WORK/steps.txt"
  else
    step official official.log $(( TRAIN_SECONDS + 300 )) official
  fi
fi
summary
cat "$WORK/summary.txt"
say "done: $(ls "$OUTDIR" | tr '\n' ' ')"
exit "$FAILED"
