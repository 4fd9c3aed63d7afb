import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

/** Where `npm run dev` (and `vite preview`) send /api requests: the local API server. */
const API_TARGET = 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
  // Assets are referenced as /assets/…: the page is served from the site root.
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
  },
  server: {
    proxy: { '/api': API_TARGET },
  },
  preview: {
    proxy: { '/api': API_TARGET },
  },
});
