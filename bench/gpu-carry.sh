#!/usr/bin/env bash
# Prepares, on a development machine with nvcc, what bench/gpu-check.sh needs on a GPU machine that
# has no Node and no network: the standalone benchmark, the addon built with the CUDA kernels, the
# compiled CLI, a compressed copy of this machine's Node and the PyTorch peer, all in .gpu-carry/
# (ignored by git). The binaries are mostly GPU code that xz shrinks about sixfold, and what
# travels (the working tree and the carried paths together) is limited to 64 MiB, so they go as
# one archive (build.tar.xz, about 6 MB) that gpu-check.sh unpacks; Node goes as node.xz (24 MB).
# Prints the paths to carry.
#   bash bench/gpu-carry.sh [path/to/baseline_torch.py]
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${1:-../shared/bench/baseline_torch.py}
mkdir -p .gpu-carry

make -C native -j"$(nproc)" bench >&2
if [ ! -f build/Release/calibscope.node ]; then npx node-gyp rebuild >&2; fi
npx tsc -p . >&2
compiled=$(node -e "process.stdout.write(String(require('./build/Release/calibscope.node').info().cuda.compiled))")
if [ "$compiled" != true ]; then
  echo "gpu-carry: build/Release/calibscope.node was built without the CUDA kernels (no nvcc, or CALIBSCOPE_CUDA=0); rebuild it with nvcc on the PATH" >&2
  exit 1
fi
[ -f .gpu-carry/node.xz ] || xz -T2 -6 -c "$(command -v node)" > .gpu-carry/node.xz
if [ -f "$PEER" ]; then cp "$PEER" .gpu-carry/; else echo "gpu-carry: peer $PEER not found: the check will skip it" >&2; fi

tar -cJf .gpu-carry/build.tar.xz build/cuda-bench/calibscope-gpu-bench build/Release/calibscope.node dist/src node_modules/ws
du -shc .gpu-carry/* >&2
printf '[".gpu-carry"]\n'
