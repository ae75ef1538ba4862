#!/usr/bin/env node
'use strict';
// The CUDA part of the native build, called by binding.gyp while it configures:
//   --sources  the C++ sources the addon needs for CUDA (the fallback that reports CUDA as unavailable when it is off)
//   --link     builds build/cuda/libcalibscope_cuda.a with nvcc when it is out of date and prints
//              the link arguments (nothing when CUDA is off)
//   --status   one line: whether CUDA is built and why
// CUDA is built when nvcc is found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin) unless
// CALIBSCOPE_CUDA=0. Kernels: sm_90 machine code (H100/H200) plus compute_75 PTX for other GPUs.
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync, spawn } = require('node:child_process');

const root = path.join(__dirname, '..');
const cudaDir = path.join(root, 'native', 'cuda');
const outDir = path.join(root, 'build', 'cuda');
const lib = path.join(outDir, 'libcalibscope_cuda.a');

function findNvcc() {
  const candidates = [];
  for (const d of (process.env.PATH || '').split(path.delimiter)) if (d) candidates.push(path.join(d, 'nvcc'));
  if (process.env.CUDA_HOME) candidates.push(path.join(process.env.CUDA_HOME, 'bin', 'nvcc'));
  candidates.push('/usr/local/cuda/bin/nvcc');
  return candidates.find((c) => fs.existsSync(c)) || null;
}

function cudaHome(nvcc) {
  // nvcc may be a wrapper script on PATH: ask the real toolkit where it lives.
  const real = fs.realpathSync(nvcc);
  const guess = path.dirname(path.dirname(real));
  if (fs.existsSync(path.join(guess, 'lib64', 'libcudart_static.a'))) return guess;
  if (process.env.CUDA_HOME) return process.env.CUDA_HOME;
  return '/usr/local/cuda';
}

function config() {
  if (process.env.CALIBSCOPE_CUDA === '0') return { enabled: false, why: 'CALIBSCOPE_CUDA=0' };
  const nvcc = findNvcc();
  if (!nvcc) return { enabled: false, why: 'nvcc not found' };
  const home = cudaHome(nvcc);
  if (!fs.existsSync(path.join(home, 'lib64', 'libcudart_static.a'))) return { enabled: false, why: `no libcudart_static.a under ${home}` };
  return { enabled: true, nvcc, home, why: `nvcc at ${nvcc}` };
}

// Shared with native/Makefile (the standalone benchmark). The CPU engine's arithmetic: no FMA
// contraction, IEEE division and square root, subnormals kept.
const NVCC_FLAGS = fs.readFileSync(path.join(cudaDir, 'nvcc.flags'), 'utf8').split(/\s+/).filter(Boolean);

function newest(files) {
  return Math.max(...files.map((f) => fs.statSync(f).mtimeMs));
}

async function buildLib(cfg) {
  const cus = fs.readdirSync(cudaDir).filter((f) => f.endsWith('.cu')).map((f) => path.join(cudaDir, f));
  const headers = ['native/core', 'native/cuda'].flatMap((d) =>
    fs.readdirSync(path.join(root, d)).filter((f) => f.endsWith('.h') || f.endsWith('.cuh')).map((f) => path.join(root, d, f)));
  if (fs.existsSync(lib) && fs.statSync(lib).mtimeMs >= newest([...cus, ...headers, __filename])) return;
  fs.mkdirSync(outDir, { recursive: true });
  // One nvcc per file, all at once: the per-format kernel files are the slow part.
  const objs = cus.map((cu) => path.join(outDir, path.basename(cu, '.cu') + '.o'));
  const jobs = cus.map((cu, i) => new Promise((resolve, reject) => {
    const p = spawn(cfg.nvcc, [...NVCC_FLAGS, '-c', cu, '-o', objs[i]], { stdio: ['ignore', process.stderr, process.stderr] });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nvcc failed on ${path.relative(root, cu)} (exit ${code})`))));
  }));
  await Promise.all(jobs);
  fs.rmSync(lib, { force: true });
  execFileSync('ar', ['rcs', lib, ...objs], { stdio: ['ignore', process.stderr, process.stderr] });
}

async function main() {
  const cfg = config();
  const mode = process.argv[2];
  if (mode === '--sources') {
    if (!cfg.enabled) console.log('native/cuda/cuda_unavailable.cc');
  } else if (mode === '--link') {
    if (cfg.enabled) {
      await buildLib(cfg);
      console.log([lib, `-L${path.join(cfg.home, 'lib64')}`, '-lcudart_static', '-ldl', '-lrt'].join('\n'));
    }
  } else if (mode === '--status') {
    console.log(cfg.enabled ? `CUDA kernels: built (${cfg.why})` : `CUDA kernels: not built (${cfg.why})`);
  } else if (mode === '--nvcc-flags') {
    console.log(NVCC_FLAGS.join(' '));
  } else {
    console.error('usage: build-cuda.js --sources | --link | --status | --nvcc-flags');
    process.exit(2);
  }
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
