// The CLI as an ML engineer puts it in CI: the documented commands on a copy of the reference
// model, checkpoints in the layouts people have (sentence-transformers, PyTorch .bin, a
// model.safetensors beside a sharded index), --help for every command, --json piped on, output
// into a pipe that closes early, and the docs' JSON field lists against what the CLI prints.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { SafetensorsFile } from '../src/checkpoints/safetensors.js';
import { encodeSafetensors, type TensorToWrite } from '../src/checkpoints/safetensors_writer.js';
import { ROOT, describeRun, runCli, scratchSpace } from './helpers/cli_runner.js';
import { FIXTURES } from './helpers/reference.js';

const BIN = path.join(ROOT, 'bin', 'calibscope.js');
const { dir: scratch, tmpDir } = scratchSpace('calibscope-walk-');
// Nothing may reach the home folder's cache, even where a test forgets --cache.
const env = { XDG_CACHE_HOME: path.join(scratch, 'xdg-cache'), CALIBSCOPE_CACHE: path.join(scratch, 'env-cache') };
const cli = (args: string[]) => runCli(args, { env, timeout: 60_000 });

/** A fresh copy of a reference model folder (the fixtures stay untouched). */
function copyModel(name: 'model' | 'sentence_transformer', label: string = name): string {
  const dst = path.join(tmpDir(label), label);
  fs.cpSync(path.join(FIXTURES, 'bert-tiny-a', name), dst, { recursive: true });
  return dst;
}

function json(r: SpawnSyncReturns<string>): any {
  assert.equal(r.status, 0, describeRun(r));
  assert.match(r.stdout, /^[^\n]+\n$/, `one JSON line expected\n${describeRun(r)}`);
  return JSON.parse(r.stdout);
}

function jsonError(r: SpawnSyncReturns<string>, code: string, exit: number): { code: string; message: string; details: any } {
  assert.equal(r.status, exit, describeRun(r));
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  const e = JSON.parse(r.stdout).error;
  assert.equal(e.code, code, e.message);
  return e;
}

// ---------------------------------------------------------------------------------------------

describe('the README walk-through', () => {
  test('calibrate twice (second cached), relative and absolute paths, --json piped into node, touch vs a changed byte', () => {
    const model = copyModel('model');
    const work = path.dirname(model);
    const cache = path.join(work, 'cache');

    // `calibscope ... --json | node -e 'JSON.parse(...)'`, with pipefail, as a CI step writes it.
    const reader = `let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const j=JSON.parse(s);process.stdout.write(JSON.stringify({cached:j.cached,path:j.profile_path}))})`;
    const pipe = (args: string[]) => {
      const line = `set -o pipefail; "${process.execPath}" "${BIN}" ${args.map((a) => `'${a}'`).join(' ')} | "${process.execPath}" -e "${reader}"`;
      const r = spawnSync('bash', ['-c', line], { cwd: work, encoding: 'utf8', env: { ...process.env, ...env } });
      assert.equal(r.status, 0, describeRun(r));
      return JSON.parse(r.stdout) as { cached: boolean; path: string };
    };
    const first = pipe(['calibrate', 'model', '--format', 'nvfp4', '--cache', 'cache', '--json']);
    assert.equal(first.cached, false);
    assert.equal(first.path, path.join(cache, 'calibration', 'model', path.basename(first.path)), 'a relative --cache resolves against the working folder');
    // The same model by its absolute path, and by its weight file: the same profile, reused.
    const second = json(cli(['calibrate', model, '--format', 'nvfp4', '--cache', cache, '--json']));
    assert.equal(second.cached, true);
    assert.equal(second.profile_path, first.path);
    const byFile = json(cli(['calibrate', path.join(model, 'model.safetensors'), '--format', 'nvfp4', '--cache', cache, '--json']));
    assert.equal(byFile.cached, true);
    assert.equal(byFile.profile_path, first.path);

    const status = () => json(cli(['status', model, '--format', 'nvfp4', '--cache', cache, '--json']));
    assert.equal(status().state, 'valid');
    const weights = path.join(model, 'model.safetensors');
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(weights, later, later);
    assert.equal(status().state, 'valid', 'touching the weights changes no byte');
    const bytes = fs.readFileSync(weights);
    bytes[bytes.length - 3] ^= 1;
    fs.writeFileSync(weights, bytes);
    const stale = status();
    assert.equal(stale.state, 'stale');
    assert.notEqual(stale.checkpoint_hash, stale.golden_checkpoint_hash);
    const again = json(cli(['calibrate', model, '--format', 'nvfp4', '--cache', cache, '--json']));
    assert.equal(again.cached, false, 'a stale profile is recalibrated');
    assert.equal(again.profile.golden_checkpoint_hash, stale.checkpoint_hash);
  });

  test('a sentence-transformers folder, and an older one with the weights in 0_Transformer/, calibrate and validate', () => {
    const st = copyModel('sentence_transformer');
    const cache = tmpDir('st-cache');
    const flat = json(cli(['calibrate', st, '--format', 'fp4', '--cache', cache, '--json']));
    // The older layout: the Transformer module's files in its own subfolder, named by modules.json.
    const old = copyModel('sentence_transformer', 'st-old');
    const sub = path.join(old, '0_Transformer');
    fs.mkdirSync(sub);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt', 'sentence_bert_config.json']) {
      if (fs.existsSync(path.join(old, f))) fs.renameSync(path.join(old, f), path.join(sub, f));
    }
    const modules = JSON.parse(fs.readFileSync(path.join(old, 'modules.json'), 'utf8'));
    for (const m of modules) if (/Transformer$/.test(m.type)) m.path = '0_Transformer';
    fs.writeFileSync(path.join(old, 'modules.json'), JSON.stringify(modules));
    const moved = json(cli(['calibrate', old, '--format', 'fp4', '--cache', cache, '--json']));
    assert.equal(moved.profile.golden_checkpoint_hash, flat.profile.golden_checkpoint_hash, 'the same config.json and weights, wherever the module keeps them');
    const v = json(cli(['validate', old, '--format', 'fp4', '--cache', cache, '--queries', path.join(FIXTURES, 'bert-tiny-a', 'queries.txt'), '--json']));
    assert.equal(v.passed, v.mean_correlation >= v.threshold);
  });
});

describe('--help and commands', () => {
  // Every command the top-level help lists.
  const top = runCli(['--help']);
  const commands = [...new Set([...top.stdout.matchAll(/^ {2}calibscope ([a-z]+)/gm)].map((m) => m[1]))];

  test('every command has its own --help, which starts with its own usage and exits 0', () => {
    assert.ok(commands.length >= 9, `commands found in --help: ${commands.join(', ')}`);
    for (const c of commands) {
      const r = cli([c, '--help']);
      assert.equal(r.status, 0, describeRun(r));
      assert.ok(r.stdout.startsWith(`calibscope ${c}`), `${c} --help should start with "calibscope ${c}", got: ${r.stdout.slice(0, 120)}`);
    }
  });

  test('a name that is a member of every JavaScript object is an unknown command, not a crash', () => {
    for (const name of ['constructor', 'toString', '__proto__']) {
      const r = cli([name]);
      assert.equal(r.status, 2, describeRun(r));
      assert.match(r.stderr, new RegExp(`unknown command "${name}"`));
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    }
  });

  test('a usage error in --json is one short message; the human form points to --help', () => {
    const e = jsonError(cli(['calibrate', '--json']), 'E_BAD_ARGUMENT', 2);
    assert.doesNotMatch(e.message, /\n/, 'the message is not the whole help text');
    assert.match(e.message, /one model path, got none/);
    const f = jsonError(cli(['status', 'a', '--json']), 'E_BAD_FORMAT', 2);
    assert.doesNotMatch(f.message, /\n/);
    assert.match(f.message, /nvfp4/, 'names the formats');
    const human = cli(['calibrate', 'a', 'b', '--format', 'fp4']);
    assert.equal(human.status, 2);
    assert.match(human.stderr, /got 2: "a", "b"/);
    assert.match(human.stderr, /calibscope calibrate --help/);
  });

  test('quickstart --json is one JSON object holding both formats', () => {
    const cache = path.join(tmpDir('quickstart'), 'cache');
    const j = json(cli(['quickstart', '--cache', cache, '--json']));
    assert.deepEqual(j.results.map((r: any) => r.format), ['nvfp4', 'fp4']);
    for (const r of j.results) {
      assert.equal(r.profile.format, r.format);
      assert.ok(r.profile_path.startsWith(cache));
    }
  });

  test('demo --out on a foreign folder is refused without first saying it is writing there', () => {
    const out = tmpDir('foreign');
    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    const r = cli(['demo', '--size', 'tiny', '--out', out]);
    assert.equal(r.status, 2, describeRun(r));
    assert.doesNotMatch(r.stdout, /writing/);
    assert.match(r.stderr, /not empty \(notes\.txt\)/);
  });
});

describe('output into a pipe that closes early', () => {
  test('`calibscope calibrate ... | head -0`: no EPIPE crash, the profile is written, exit 0', async () => {
    const model = copyModel('model', 'pipe');
    const cache = tmpDir('pipe-cache');
    const child = spawn(process.execPath, [BIN, 'calibrate', model, '--format', 'fp4', '--cache', cache], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.destroy(); // the reader goes away before anything is written
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const [status, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    assert.equal(signal, null, stderr);
    assert.doesNotMatch(stderr, /EPIPE|\n\s+at /, 'no unhandled error');
    assert.equal(status, 0, stderr);
    assert.equal(json(cli(['status', model, '--format', 'fp4', '--cache', cache, '--json'])).state, 'valid');
  });
});

describe('checkpoint layouts', () => {
  test('PyTorch weights: a folder, a pytorch_model.bin and a sharded .bin index each say to convert to safetensors', () => {
    const dir = tmpDir('torch');
    fs.copyFileSync(path.join(FIXTURES, 'bert-tiny-a', 'model', 'config.json'), path.join(dir, 'config.json'));
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), Buffer.from('PK\u0003\u0004 not a real pickle'));
    const folder = jsonError(cli(['calibrate', dir, '--format', 'fp4', '--out', path.join(dir, 'p'), '--json']), 'E_NOT_FOUND', 1);
    assert.match(folder.message, /PyTorch/);
    assert.match(folder.message, /safetensors/);
    const file = jsonError(cli(['calibrate', path.join(dir, 'pytorch_model.bin'), '--format', 'fp4', '--out', path.join(dir, 'p'), '--json']), 'E_BAD_CHECKPOINT', 1);
    assert.match(file.message, /PyTorch weights, not safetensors/);
    // A sharded PyTorch checkpoint's index is not a safetensors index (its shards are pickles).
    fs.writeFileSync(path.join(dir, 'pytorch_model-00001-of-00001.bin'), 'x');
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin.index.json'), JSON.stringify({ weight_map: { 'pooler.dense.weight': 'pytorch_model-00001-of-00001.bin' } }));
    const index = jsonError(cli(['status', path.join(dir, 'pytorch_model.bin.index.json'), '--format', 'fp4', '--cache', tmpDir('torch-cache'), '--json']), 'E_BAD_CHECKPOINT', 1);
    assert.match(index.message, /PyTorch weights, not safetensors/);
    assert.ok(!fs.existsSync(path.join(dir, 'p')), 'nothing written');
  });

  test('model.safetensors beside a sharded index: the single file is the model (as transformers), and calibrate says so', async () => {
    const model = copyModel('model', 'both');
    const src = await SafetensorsFile.open(path.join(model, 'model.safetensors'));
    const parts: TensorToWrite[][] = [[], []];
    const weightMap: Record<string, string> = {};
    try {
      for (const [i, t] of src.tensors.entries()) {
        const data = new Uint8Array(await src.readTensor(t));
        parts[i % 2].push({ name: t.name, dtype: t.dtype, shape: t.shape, data });
        weightMap[t.name] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
      }
    } finally {
      await src.close();
    }
    parts.forEach((p, i) => fs.writeFileSync(path.join(model, `model-0000${i + 1}-of-00002.safetensors`), encodeSafetensors(p)));
    const index = path.join(model, 'model.safetensors.index.json');
    fs.writeFileSync(index, JSON.stringify({ metadata: {}, weight_map: weightMap }));

    const alone = copyModel('model', 'alone');
    const cacheA = tmpDir('alone-cache');
    const reference = json(cli(['calibrate', alone, '--format', 'fp4', '--cache', cacheA, '--json'])).profile.golden_checkpoint_hash;

    const cache = tmpDir('both-cache');
    const human = cli(['calibrate', model, '--format', 'fp4', '--cache', cache]);
    assert.equal(human.status, 0, describeRun(human));
    assert.match(human.stderr, /holds both model\.safetensors and model\.safetensors\.index\.json/);
    assert.ok(human.stderr.includes(index), 'names the index to pass instead');
    const viaFolder = json(cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--json']));
    assert.equal(viaFolder.profile.golden_checkpoint_hash, reference, 'the folder is hashed as model.safetensors alone');
    const viaIndex = json(cli(['calibrate', index, '--format', 'fp4', '--cache', tmpDir('index-cache'), '--json']));
    assert.notEqual(viaIndex.profile.golden_checkpoint_hash, reference, 'the index names the shards');
    assert.deepEqual(Object.keys(viaIndex.profile.tensor_calibrations).sort(), Object.keys(viaFolder.profile.tensor_calibrations).sort());
  });
});

describe('status finds every profile calibrate writes', () => {
  test('a weighted mode calibrated with its own query set: status takes --queries / --calibration-queries as calibrate does', () => {
    const model = copyModel('model', 'weighted');
    const cache = tmpDir('weighted-cache');
    const queries = path.join(tmpDir('q'), 'queries.txt');
    fs.writeFileSync(queries, 'how to bake bread\nwhat is a transformer\nfp4 block scales\n');
    const flags = ['--format', 'nvfp4', '--mode', 'activation-aware', '--cache', cache, '--json'];
    const made = json(cli(['calibrate', model, ...flags, '--queries', queries]));
    for (const opt of ['--queries', '--calibration-queries']) {
      const st = json(cli(['status', model, ...flags, opt, queries]));
      assert.equal(st.profile_path, made.profile_path, `${opt} names the same folder`);
      assert.equal(st.state, 'valid');
    }
    // Without the query set it is another folder: the shipped set's profile, not calibrated here.
    assert.equal(json(cli(['status', model, ...flags])).state, 'missing');
    // The same for a pipeline.
    const manifest = path.join(path.dirname(model), 'pipeline.json');
    fs.writeFileSync(manifest, JSON.stringify({ models: [{ id: 'weighted', path: 'weighted' }] }));
    const lines = json(cli(['status', '--pipeline', manifest, ...flags, '--calibration-queries', queries])).models;
    assert.equal(lines[0].state, 'valid');
    assert.equal(lines[0].profile_path, made.profile_path);
  });
});

describe('the docs say what the CLI prints', () => {
  /** The quoted keys of the first `{"...", ...}` list on the line of docs/pipeline.md that `marker` starts. */
  function documentedKeys(marker: string): string[] {
    const doc = fs.readFileSync(path.join(ROOT, 'docs', 'pipeline.md'), 'utf8');
    const at = doc.indexOf(marker);
    assert.ok(at >= 0, `docs/pipeline.md mentions ${marker}`);
    const list = doc.slice(at).match(/\{(?:"profiles": \[)?\{?([^{}]*)\}/);
    assert.ok(list, `a key list after ${marker}`);
    return [...list[1].matchAll(/"([a-z_]+)"/g)].map((m) => m[1]).sort();
  }

  test('calibrate --pipeline --json and --out --json carry exactly the documented fields', () => {
    const model = copyModel('model', 'docs');
    const manifest = path.join(path.dirname(model), 'pipeline.json');
    fs.writeFileSync(manifest, JSON.stringify({ models: [{ id: 'docs', path: 'docs' }] }));
    const run = json(cli(['calibrate', '--pipeline', manifest, '--format', 'fp4', '--cache', tmpDir('docs-cache'), '--json']));
    assert.deepEqual(Object.keys(run.profiles[0]).sort(), documentedKeys('- `--json` prints'));
    const out = json(cli(['calibrate', model, '--format', 'fp4', '--out', path.join(tmpDir('docs-out'), 'p'), '--json']));
    assert.deepEqual(Object.keys(out).sort(), documentedKeys('its JSON output is'));
  });
});
