// Builds the renderer (renderer/) into dist/ui: one page, relative asset paths so the same build
// loads from the Electron app:// protocol and from `calibscope serve`.
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

export default defineConfig({
  root: 'renderer',
  base: './',
  plugins: [react()],
  build: {
    outDir: '../dist/ui',
    emptyOutDir: true,
    // plotly.js-dist-min is one large prebuilt file; splitting it out keeps the app chunk small.
    chunkSizeWarningLimit: 6000,
    rollupOptions: {
      output: {
        manualChunks: (id: string) => (id.includes('plotly.js-dist-min') ? 'plotly' : undefined),
      },
    },
  },
});
