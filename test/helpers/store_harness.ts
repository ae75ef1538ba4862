// The renderer's store against the real service in one process: a transport that round-trips every
// message through JSON, as the WebSocket does, and a wait for the store to reach a state.
import assert from 'node:assert/strict';
import { createWorkbenchStore, type WorkbenchStore } from '../../renderer/src/store';
import type { Transport } from '../../renderer/src/transport';
import type { ServiceEvent } from '../../src/service/protocol.js';
import { WorkbenchService } from '../../src/service/service.js';

export function inProcess(service: WorkbenchService): Transport {
  const wire = <T>(x: T): T => JSON.parse(JSON.stringify(x));
  return {
    request: async (method, params) => wire(await service.request(method, wire(params))) as never,
    onEvent: (cb) => service.onEvent((e: ServiceEvent) => cb(wire(e))),
    onConnection: (cb) => {
      cb('open');
      return () => undefined;
    },
  };
}

export async function until(store: WorkbenchStore, ok: () => boolean, what: string, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}; toasts: ${JSON.stringify(store.getState().toasts)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A browser-mode service on `cacheDir` with `model` opened, and a store on it, initialised. */
export async function storeOnService(cacheDir: string, model: string): Promise<{ service: WorkbenchService; store: WorkbenchStore }> {
  const service = new WorkbenchService({ cacheDir, mode: 'browser' });
  await service.openModel(model);
  const store = createWorkbenchStore(inProcess(service));
  await store.getState().init();
  return { service, store };
}
