// Entry point: picks the transport (Electron preload bridge, else the browser mode's WebSocket),
// creates the store and renders the workbench.
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App, ErrorBoundary } from './App';
import { StoreContext } from './context';
import { loadPlotly } from './Plot';
import { createWorkbenchStore } from './store';
import './styles.css';
import { electronTransport, webSocketTransport, type PreloadBridge } from './transport';

const bridge = (window as unknown as { calibscope?: PreloadBridge }).calibscope;
let transport;
if (bridge) {
  transport = electronTransport(bridge);
} else {
  // The token is in the cookie now: keep it out of the address bar and the history.
  if (location.search.includes('token=')) history.replaceState(null, '', location.pathname);
  transport = webSocketTransport(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
}
const store = createWorkbenchStore(transport);
void store.getState().init();

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <ErrorBoundary>
      <StoreContext.Provider value={store}>
        <App />
      </StoreContext.Provider>
    </ErrorBoundary>
  </StrictMode>,
);
// Fetch and parse plotly once the first frame is up, so the heatmap does not wait for it later.
setTimeout(() => void loadPlotly(), 0);
