// The quantized model's weights for the encoder: each tensor the profile calibrated, quantize-
// dequantized with its stored scales (exactly the x̂ the profile's metrics were computed from);
// tensors the profile does not cover stay at the checkpoint's values.
import path from 'node:path';
import { bitsPerWeight, schemeFor } from '../calibration/schemes.js';
import type { TensorCalibration } from '../calibration/tensor_calibration.js';
import type { CalibrationResult, ModelCalibrationProfile } from '../calibration/types.js';
import { dtypeBits } from '../checkpoints/safetensors.js';
import { SCALES_FILE } from '../profiles/profile_writer.js';
import { readScales } from '../profiles/store.js';
import { fakeQuantize, type BlockScales } from '../quantize/index.js';
import { CalibscopeError } from '../util/errors.js';
import type { SemanticModel } from './model.js';

/** Where a tensor's block scales come from: a profile folder, or calibrations held in memory. */
export type ScalesSource =
  | { kind: 'profile'; dir: string; profile: ModelCalibrationProfile }
  | { kind: 'memory'; profile: ModelCalibrationProfile; tensors: ReadonlyMap<string, TensorCalibration> };

export async function scalesOf(src: ScalesSource, tensor: string): Promise<BlockScales> {
  if (src.kind === 'profile') return readScales(src.dir, tensor, src.profile);
  const tc = src.tensors.get(tensor);
  if (!tc) throw new CalibscopeError('E_BAD_PROFILE', `no scales for tensor '${tensor}'`, { tensor });
  return tc;
}

export function float32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** x̂ of one encoder weight under a calibration result and its scales. */
export async function quantizeWeight(
  model: SemanticModel,
  encoderName: string,
  result: Pick<CalibrationResult, 'format' | 'block_size'> & Partial<CalibrationResult>,
  scales: BlockScales,
  threads?: number,
  /** Where the scales came from, for messages (default: the model folder). */
  scalesSource?: string,
): Promise<Float32Array> {
  const w = model.weights.get(encoderName);
  if (!w) throw new CalibscopeError('E_BAD_ARGUMENT', `the encoder has no weight '${encoderName}'`, { tensor: encoderName });
  // The checkpoint's F16/BF16 values are exact in float32, so quantizing the float32 copy gives the same x̂.
  return fakeQuantize(
    { name: w.checkpointName, dtype: 'F32', shape: w.shape, data: float32Bytes(w.data) },
    { format: result.format, block_size: result.block_size, tensor_name: w.checkpointName, shape: result.shape, nonfinite_excluded: result.nonfinite_excluded },
    scales,
    { threads, source: scalesSource ?? model.modelDir },
  );
}

export interface QuantizedPlan {
  /** Profile tensors the encoder reads: checkpoint name → encoder name. */
  used: { tensor: string; encoderName: string; result: CalibrationResult }[];
  /** Profile tensors the encoder does not read (a pooler, a task head): they cannot move the embeddings. */
  unused: string[];
}

export function planQuantized(model: SemanticModel, profile: ModelCalibrationProfile): QuantizedPlan {
  const used: QuantizedPlan['used'] = [];
  const unused: string[] = [];
  for (const [name, result] of Object.entries(profile.tensor_calibrations)) {
    const enc = model.byCheckpointName.get(name);
    if (enc) used.push({ tensor: name, encoderName: enc, result });
    else unused.push(name);
  }
  return { used, unused };
}

/**
 * x̂ of every profile tensor the encoder reads. With `onWeight` each is handed over as it is made
 * and not kept (memory stays at one tensor); otherwise they are returned by encoder name.
 */
export async function quantizedWeights(
  model: SemanticModel,
  src: ScalesSource,
  plan: QuantizedPlan,
  opts: { threads?: number; onTensor?: (done: number, total: number) => void; onWeight?: (encoderName: string, data: Float32Array) => void } = {},
): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  // A bad scale (zero, negative, not finite) is reported against the profile file that holds it.
  const source = src.kind === 'profile' ? path.join(src.dir, SCALES_FILE) : undefined;
  for (const [i, u] of plan.used.entries()) {
    const x = await quantizeWeight(model, u.encoderName, u.result, await scalesOf(src, u.tensor), opts.threads, source);
    if (opts.onWeight) opts.onWeight(u.encoderName, x);
    else out.set(u.encoderName, x);
    opts.onTensor?.(i + 1, plan.used.length);
  }
  return out;
}

/** Storage of a tensor kept as the checkpoint stores it (FP16 → 16 bits per weight). */
export function storedBits(dtype: string): number {
  return dtypeBits(dtype) ?? 32;
}

/** bits/weight of a tensor at a scheme and block size (element bits + scales), as the profile computes it. */
export function schemeBits(format: string, blockSize: number, shape: readonly number[]): number {
  const cols = shape.length > 0 ? shape[shape.length - 1] : 1;
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return bitsPerWeight(schemeFor(format), blockSize, rows, cols);
}
