// node node-bench.mjs <target/wasm-pkg/nodejs> [seconds] - prints {"typed":…, "raw":…}
import { createRequire } from 'node:module';
import path from 'node:path';
import { run } from './bench.mjs';

const pkg = createRequire(import.meta.url)(path.resolve(process.argv[2], 'openpsd.js'));
console.log(JSON.stringify(run(pkg, Number(process.argv[3] || 3))));
