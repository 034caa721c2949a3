#!/usr/bin/env bash
# The second prepared GPU command (issue 21): a 3-experiment `agentgolf run` at a 60 s training budget, for a
# GPU machine with time left after bench/gpu_check.sh. A fresh machine is bare, so it first runs gpu_check.sh's
# probe and install steps (the pack's wheels, the project, the shards), then:
#   agentgolf init; config: the shards, budget.train_grace_seconds=300, budget.train_overhead_seconds=null
#   (the baseline's measurement sets the allowance), 2 noise seeds, no confirmation; then
#   agentgolf run --budget $GPU_LOOP_BUDGET (3) --time-budget $GPU_LOOP_SECONDS (60), stopped by the deadline.
# Device tool: carry ["bench/gpu_data"], timeout_s 590: bash bench/gpu_loop.sh   (--dry-run: on a CPU)
# Into $OUT (5 files): probe.txt, install.txt, summary.txt (gpu_check's), loop.log (the run, timestamped) and
# ledger.json, each copied as soon as its step ends (loop.log every 10 s while the run goes).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
START=$(date +%s)
DRY=()
[ "${1:-}" = "--dry-run" ] && DRY=(--dry-run)
PY=${PYTHON:-python3}
export GPU_CHECK_WORK=${GPU_LOOP_WORK:-/tmp/gpu_loop}
OUTDIR=${GPU_LOOP_OUT:-${OUT:-$ROOT/bench/out/gpu_loop}}
export GPU_CHECK_OUT=$OUTDIR
DEADLINE=${GPU_LOOP_DEADLINE:-560}
BUDGET=${GPU_LOOP_BUDGET:-3}
SECONDS_PER=${GPU_LOOP_SECONDS:-60}
PACK=${GPU_CHECK_PACK:-$ROOT/bench/gpu_data}
WORK=$GPU_CHECK_WORK
WS="$WORK/loop_ws"  # not ws: the install step's own check uses that
say() { echo "gpu_loop [$(( $(date +%s) - START ))s] $*"; }

if [ "${#DRY[@]}" = 1 ]; then
  # shellcheck source=bench/gpu_dry_env.sh
  . "$ROOT/bench/gpu_dry_env.sh" || exit 2
fi
GPU_CHECK_STEPS=probe,install GPU_CHECK_DEADLINE=240 bash "$ROOT/bench/gpu_check.sh" "${DRY[@]}" || {
  say "stopping: the probe or the install failed (probe.txt, install.txt)"
  exit 3
}
if ! command -v bwrap > /dev/null 2>&1 && [ -x "$WORK/bwrap/usr/bin/bwrap" ]; then
  export PATH="$WORK/bwrap/usr/bin:$PATH"
fi
AGENTGOLF=("$PY" -m agentgolf.agent.cli.main)
"${AGENTGOLF[@]}" init "$WS" > "$WORK/init.log" 2>&1 || { cat "$WORK/init.log"; exit 1; }
DATASET=$(ls -d "$WORK"/data/datasets/*/ | head -n 1)
"$PY" - "$WS/.agentgolf/config.json" "${DATASET%/}" "$(ls "$WORK"/data/tokenizers/*.model)" <<'EOF' || exit 1
import json, os, sys
path, dataset, tokenizer = sys.argv[1:]
config = json.load(open(path))
config["data"] = {"dataset_dir": dataset, "tokenizer": tokenizer, "vocab_size": int(os.environ.get("VOCAB_SIZE", 1024))}
config["budget"].update(train_grace_seconds=300.0, train_overhead_seconds=None)
config["acceptance"].update(noise_seeds=2, confirm=False)
names = os.environ.get("GPU_CHECK_TRAINER_ENV", "").split()  # the dry run's CPU recipe
config["trainer_env"] = {**config.get("trainer_env", {}), **{k: os.environ[k] for k in names if k in os.environ}}
json.dump(config, open(path, "w"), indent=2)
print(f"config: gpus {config['gpus']}, budget {config['budget']['train_seconds']:g} s (run: --time-budget), "
      f"grace {config['budget']['train_grace_seconds']:g} s, data {dataset}")
EOF
rest=$(( DEADLINE - ($(date +%s) - START) - 20 ))
say "agentgolf run --budget $BUDGET --time-budget $SECONDS_PER, stopped after ${rest}s"
( while sleep 10; do cp "$WORK/loop.log" "$OUTDIR/loop.log" 2> /dev/null; done ) &
syncer=$!
(cd "$WS" && "$PY" "$ROOT/bench/gpu_check.py" run --label loop --log "$WORK/loop.log" --timeout "$rest" -- \
  "${AGENTGOLF[@]}" run --budget "$BUDGET" --time-budget "$SECONDS_PER")
rc=$?
kill "$syncer" 2> /dev/null
cp "$WORK/loop.log" "$OUTDIR/loop.log"
(cd "$WS" && timeout 60 "${AGENTGOLF[@]}" ledger --json > "$OUTDIR/ledger.json" 2>> "$WORK/loop.log")
(cd "$WS" && timeout 60 "${AGENTGOLF[@]}" ledger) 2>&1 | tail -n 20
say "done: agentgolf run exit $rc; $(ls "$OUTDIR" | tr '\n' ' ')"
exit "$rc"
