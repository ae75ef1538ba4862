// Preload (sandboxed, context-isolated): exposes exactly two functions to the page — send a
// protocol request, listen to protocol events — and nothing of Node or Electron itself.
import { contextBridge, ipcRenderer, type IpcRendererEvent } from 'electron';

// Kept in step with electron/policy.ts (a sandboxed preload cannot require other files).
const REQUEST_CHANNEL = 'calibscope:request';
const EVENT_CHANNEL = 'calibscope:event';

contextBridge.exposeInMainWorld('calibscope', {
  request: (method: string, params: unknown): Promise<unknown> => ipcRenderer.invoke(REQUEST_CHANNEL, method, params),
  onEvent: (cb: (event: unknown) => void): (() => void) => {
    const listener = (_e: IpcRendererEvent, event: unknown) => cb(event);
    ipcRenderer.on(EVENT_CHANNEL, listener);
    return () => {
      ipcRenderer.removeListener(EVENT_CHANNEL, listener);
    };
  },
});
