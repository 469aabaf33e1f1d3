// What the browser journeys (journey.mjs, certificates.mjs, online.mjs) share: their
// `--name value` arguments, playwright-core from the web toolchain, a logger whose
// `check` throws on a failed expectation, and the axe-core accessibility audit.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
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

/** axe-core's browser script (the accessibility audit), from the web toolchain. */
export function axeSource() {
  const require = createRequire(import.meta.url);
  const tools = process.env.WEB_TOOLS || join(process.env.HOME || '', '.cache/openpsd/web-tools');
  for (const name of ['axe-core/axe.min.js', join(tools, 'js/node_modules/axe-core/axe.min.js')]) {
    try {
      return readFileSync(require.resolve(name), 'utf8');
    } catch {
      // next
    }
  }
  throw new Error('axe-core not found: run bash scripts/install-web-toolchain.sh');
}

/**
 * Runs axe-core in `page` (WCAG 2 A/AA rules and best practices); returns the serious and
 * critical violations as lines "rule (impact): help: first target", and the count of all.
 */
export async function axeAudit(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    await page.addScriptTag({ content: axeSource() });
  }
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(' ')).slice(0, 3) }));
  });
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  return {
    all: violations.length,
    bad: bad.map((v) => `${v.id} (${v.impact}): ${v.help}: ${v.targets.join(', ')}`),
    other: violations.filter((v) => !bad.includes(v)).map((v) => `${v.id} (${v.impact})`),
  };
}
