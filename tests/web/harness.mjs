// What the browser journeys (journey.mjs, certificates.mjs, online.mjs) share: their
// `--name value` arguments, playwright-core from the web toolchain, and a logger whose
// `check` throws on a failed expectation.

import { createRequire } from 'node:module';
import { join } from 'node:path';

/** `--name value` pairs of the command line. */
export function parseArgs(argv = process.argv.slice(2)) {
  return Object.fromEntries(
    argv.reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
  );
}

/** playwright-core, installed by scripts/install-web-toolchain.sh. */
export function loadPlaywright() {
  const require = createRequire(import.meta.url);
  const tools = process.env.WEB_TOOLS || join(process.env.HOME || '', '.cache/openpsd/web-tools');
  for (const name of ['playwright-core', join(tools, 'js/node_modules/playwright-core')]) {
    try {
      return require(name);
    } catch {
      // next
    }
  }
  throw new Error('playwright-core not found: run bash scripts/install-web-toolchain.sh (and source scripts/web-env.sh)');
}

/** `{ log, check }` prefixed with `name` and the seconds since now. */
export function logger(name) {
  const t0 = Date.now();
  const log = (msg) => console.log(`[${name} ${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);
  const check = (cond, what) => {
    if (!cond) throw new Error(`check failed: ${what}`);
    log(`ok: ${what}`);
  };
  return { log, check };
}
