import { defineConfig } from 'vite';

// The appliance serves the build at `/` (same origin as /api) under a strict
// CSP: no inline script or style, hashed files under assets/.
export default defineConfig({
  base: '/',
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: process.env.LIFEBOAT_WEB_OUT || 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    modulePreload: { polyfill: false },
    sourcemap: false,
    chunkSizeWarningLimit: 1000,
  },
  server: {
    proxy: { '/api': { target: process.env.LIFEBOAT_DEV_API || 'http://127.0.0.1:8080', changeOrigin: false } },
  },
});
