// The one setting a Vite app needs for openpsd: keep the package out of the dev server's
// dependency pre-bundling, so that `new URL('openpsd_bg.wasm', import.meta.url)` in its
// ES module still points next to the module (`vite build` handles it either way).
export default {
  optimizeDeps: { exclude: ['openpsd'] },
  build: { target: 'es2022' },
};
