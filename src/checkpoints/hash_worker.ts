// The worker thread behind checkpointHash (hash.ts): hashes the files it is given and replies once,
// with the hash or with the error as the error model's JSON.
import { parentPort, workerData } from 'node:worker_threads';
import { asCalibscopeError } from '../util/errors.js';
import { hashFiles, type HashedFile } from './hash.js';

hashFiles(workerData as HashedFile[]).then(
  (hash) => parentPort!.postMessage({ hash }),
  (err: unknown) => parentPort!.postMessage({ error: asCalibscopeError(err).toJSON() }),
);
