#!/usr/bin/env bash
# The 12-model demo pipeline through the CLI, timed end to end (process start, checkpoint hash,
# reading the weights from the page cache, the search, the profiles written): the stage of
# bench/gpu-check.sh that needs Node. On the GPU machine Node comes along compressed in
# .gpu-carry/node.xz (bench/gpu-carry.sh); elsewhere the `node` on the PATH is used.
#   bash bench/gpu-pipeline.sh RESULTS.jsonl      (BACKEND=cuda|cpu|auto, DEMO_SIZE=full|tiny)
# Appends one JSON line per run: {"pipeline": {"format", "run", "seconds", "models", "weights", ...}}.
set -u
cd "$(dirname "$0")/.."
RES=${1:-/dev/null}
BACKEND=${BACKEND:-cuda}
SIZE=${DEMO_SIZE:-full}
WORK=${PIPELINE_DIR:-/tmp/calibscope-pipeline}

NODE=$(command -v node || true)
if [ -f .gpu-carry/node.xz ]; then
  xz -dc .gpu-carry/node.xz > /tmp/calibscope-node && chmod +x /tmp/calibscope-node && NODE=/tmp/calibscope-node
fi
if [ -z "$NODE" ] || [ ! -f build/Release/calibscope.node ] || [ ! -f dist/src/cli/main.js ]; then
  echo "(pipeline: needs Node, build/Release/calibscope.node and dist/: run bench/gpu-carry.sh and carry its paths; skipped)"
  exit 0
fi
cs() { "$NODE" bin/calibscope.js "$@"; }
now() { date +%s%N; }
secs() { python3 -c "print(($2 - $1) / 1e9)"; }

echo "== the $SIZE demo pipeline through the CLI (--backend $BACKEND)"
cs info --json | sed 's/^/{"cli_info": /; s/$/}/' | tee -a "$RES"
rm -rf "$WORK" && mkdir -p "$WORK"
t0=$(now)
cs demo --size "$SIZE" --out "$WORK/demo" --json > "$WORK/demo.json" || { echo "pipeline: demo failed"; exit 1; }
t1=$(now)
read -r models weights bytes < <(python3 -c "
import json, sys
d = json.load(open('$WORK/demo.json'))
print(len(d['models']), d['parameters'], d['bytes'])")
echo "{\"pipeline_demo\": {\"size\": \"$SIZE\", \"models\": $models, \"weights\": $weights, \"bytes\": $bytes, \"seconds\": $(secs "$t0" "$t1")}}" | tee -a "$RES"
cat "$WORK"/demo/*/*.safetensors > /dev/null  # into the page cache
sleep 2.1  # past the stat cache's racy margin, so that the first run's hashes are remembered

# nvfp4 first: no profile, every checkpoint hashed; every later run takes the hashes from the stat
# cache. force: the profiles exist and are recalibrated.
for format in nvfp4 fp4; do
  for run in first force; do
    extra=()
    [ "$run" = force ] && extra=(--force)
    t0=$(now)
    cs calibrate --pipeline "$WORK/demo/pipeline.json" --format "$format" --backend "$BACKEND" --cache "$WORK/cache" --json "${extra[@]}" \
      > "$WORK/$format-$run.json" 2> "$WORK/$format-$run.err"
    rc=$?
    t1=$(now)
    python3 - "$WORK/$format-$run.json" "$format" "$run" "$rc" "$(secs "$t0" "$t1")" "$models" "$weights" <<'PY' | tee -a "$RES"
import json, sys
path, fmt, run, rc, secs, models, weights = sys.argv[1:]
try:
    profiles = json.load(open(path))['profiles']
except Exception:
    profiles = []
out = {'format': fmt, 'run': run, 'exit': int(rc), 'seconds': float(secs), 'models': int(models), 'weights': int(weights),
       'calibrated': sum(1 for p in profiles if not p.get('cached')), 'backends': sorted({p.get('backend') for p in profiles if p.get('backend')})}
if profiles:
    out['overall_mse_before'] = sum(p['overall_mse_before'] for p in profiles) / len(profiles)
    out['overall_mse'] = sum(p['overall_mse'] for p in profiles) / len(profiles)
print(json.dumps({'pipeline': out}))
PY
    [ "$rc" = 0 ] || tail -5 "$WORK/$format-$run.err"
  done
done
