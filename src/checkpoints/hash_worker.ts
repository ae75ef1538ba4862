// The worker thread behind checkpointHash and sha256File (hash.ts): hashes what it is given and
// replies once, with the hash or with the error (the error model's JSON, or an fs error's code).
import { parentPort, workerData } from 'node:worker_threads';
import { asCalibscopeError } from '../util/errors.js';
import { hashFiles, sha256FileHere, type HashReply, type HashTask } from './hash.js';

const task = workerData as HashTask;
const reply = (m: HashReply) => parentPort!.postMessage(m);
if ('files' in task) {
  hashFiles(task.files).then(
    (hash) => reply({ hash }),
    (err: unknown) => reply({ error: asCalibscopeError(err).toJSON() }),
  );
} else {
  sha256FileHere(task.file).then(
    (hash) => reply({ hash }),
    (err: NodeJS.ErrnoException) => reply({ fsError: { code: err.code, message: err.message } }),
  );
}
