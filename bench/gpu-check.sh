#!/usr/bin/env bash
# The GPU check, run on a machine with an NVIDIA GPU: builds the standalone benchmark if it is not
# there, checks GPU/CPU parity block by block, times the kernels on the PyTorch peer's weights
# (24 × 4096×1024 F16, 100,663,296 weights), runs the peer on the same weights, calibrates the
# 12-model demo pipeline through the CLI when a Node binary came along (bench/gpu-carry.sh), and
# prints a summary table last. Sized to finish in under 5 minutes on an H100.
#   bash bench/gpu-check.sh [path/to/baseline_torch.py]
# STAGES picks the parts (default "parity kernels streams peer pipeline"); logs go to $OUT (or
# /tmp/calibscope-gpu-check). The pipeline stage reads BACKEND (default cuda) and DEMO_SIZE
# (default full), so that it can be tried on a machine without a GPU.
set -u
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp/calibscope-gpu-check}
mkdir -p "$LOG"
PEER=${1:-.gpu-carry/baseline_torch.py}
[ -f "$PEER" ] || PEER=../shared/bench/baseline_torch.py
STAGES=" ${STAGES:-parity kernels streams peer pipeline} "
stage() { [[ "$STAGES" == *" $1 "* ]]; }
BIN=build/cuda-bench/calibscope-gpu-bench
RES="$LOG/results.jsonl"
: > "$RES"

# What bench/gpu-carry.sh packed: the benchmark, the CUDA addon, the compiled CLI.
if [ -f .gpu-carry/build.tar.xz ] && [ ! -x "$BIN" ]; then
  echo "== unpacking .gpu-carry/build.tar.xz"
  tar -xJf .gpu-carry/build.tar.xz || exit 1
fi
if [ ! -x "$BIN" ]; then
  echo "== building $BIN"
  make -C native -j"$(nproc)" bench > "$LOG/build.log" 2>&1 || { tail -30 "$LOG/build.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader | tee "$LOG/gpu.txt"
"$BIN" info | tee -a "$RES"

if stage parity; then
  echo "== parity: every scheme, search and mode on odd shapes, and the reference BERT model"
  timeout 150 "$BIN" parity --safetensors test/fixtures/reference/bert-tiny-a/model/model.safetensors | tee -a "$RES"
fi

if stage kernels; then
  echo "== kernels"
  for cfg in "fp4 16" "fp4 64" "nvfp4 16" "fp8_e4m3 128" "mxfp4 32" "fp8_e5m2 128"; do
    set -- $cfg
    timeout 60 "$BIN" bench --format "$1" --block "$2" --reps 5 | tee -a "$RES"
  done
fi
if stage streams; then
  echo "== streams: 24 tensors × block sizes 64/128/256 from 4 host threads vs 1"
  timeout 60 "$BIN" streams --format fp4 --blocks 64,128,256 --threads 4 | tee -a "$RES"
fi

if stage peer && [ -f "$PEER" ]; then
  echo "== the PyTorch peer on the same weights"
  "$BIN" write /tmp/calibscope-bench.safetensors > /dev/null
  for cfg in "fp4_e2m1 16" "fp8_e4m3 128"; do
    set -- $cfg
    PYTHONUNBUFFERED=1 timeout 120 python3 "$PEER" --safetensors /tmp/calibscope-bench.safetensors --format "$1" --block "$2" \
      | sed 's/^/{"peer": /; s/$/}/' | tee -a "$RES"
  done
elif stage peer; then
  echo "(peer $PEER not found: skipped)"
fi

if stage pipeline; then
  bash bench/gpu-pipeline.sh "$RES"
fi

python3 - "$RES" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
mism = [r for r in rows if 'parity_mismatch' in r]
HEADER = f"{'format/block':<16}{'kernel ms':>10}{'G w/s':>8}{'e2e ms':>9}{'e2e G w/s':>10}{'GB/s':>8}{'CPU ms':>9}{'rel MSE':>11}{'naive':>10}{'parity':>8}"
# One line per result, in the order the stages wrote them.
LINE = {
    'cuda': lambda c: 'device: ' + (', '.join(f"{d['name']} ({d['memory_gib']} GiB, cc {d['cc']}, {d['sms']} SMs)" for d in c['devices']) or c['reason']),
    'parity': lambda p: f"parity: {p['cases']} cases, {p['failed']} failed" + (f" (first: {mism[0]})" if mism else ''),
    'bench': lambda b: f"{b['format']+'/'+str(b['block']):<16}{b['kernel_ms']:>10.2f}{b['kernel_weights_per_s']/1e9:>8.2f}{b['end_to_end_ms']:>9.1f}{b['end_to_end_weights_per_s']/1e9:>10.2f}{b['kernel_bytes_per_s']/1e9:>8.0f}{b['cpu_ms']:>9.0f}{b['rel_mse']:>11.6f}{b['rel_mse_naive']:>10.6f}{'ok' if b['parity_mismatched_tensors']==0 else 'FAIL':>8}",
    'streams': lambda s: f"streams: {s['calls']} calls, 1 thread {s['one_thread_ms']:.0f} ms, {s['threads']} threads {s['threads_ms']:.0f} ms ({s['speedup']}x)",
    'peer': lambda p: f"peer {p['format']}/{p['block']} grid {p['grid']}: eager {p['eager_ms']:.1f} ms, compiled {p.get('compiled_ms', float('nan')):.1f} ms, {p['weights_per_s_best']/1e9:.2f} G w/s, rel MSE {p['rel_mse_best']:.6f}",
    'pipeline_demo': lambda d: f"demo {d['size']}: {d['models']} models, {d['weights']/1e9:.3f} G weights, written in {d['seconds']:.1f} s",
    'error': lambda e: f"error {e['code']}: {e['message']}",
    'pipeline': lambda p: f"pipeline {p['format']} {p['run']}: {p['seconds']:.2f} s end to end ({p['weights']/p['seconds']/1e9:.2f} G w/s), {p['calibrated']} of {p['models']} calibrated on {','.join(p['backends']) or '?'}, exit {p['exit']}",
}
print('\n== summary')
header_done = False
for r in rows:
    for key, line in LINE.items():
        if key not in r: continue
        if key == 'bench' and not header_done:
            print(HEADER)
            header_done = True
        print(line(r[key]))
PY
