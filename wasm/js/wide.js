// wide.js - picks the module build for this WebAssembly engine (issue 17 §4).
//
// The package ships the main module twice: `openpsd_bg.wasm`, which every engine runs, and
// `wide/openpsd_bg.wasm`, the same code compiled with the wide-arithmetic instructions
// (`i64.mul_wide_u` instead of a call to `__multi3` for every 64×64→128-bit product of the
// P-256 field arithmetic), ~1.4× faster at signing where the engine has them. Both have the
// same exports, so the one `openpsd.js` drives either:
//
//   import init, * as openpsd from 'openpsd';
//   import { moduleUrl } from 'openpsd/wide';
//   await init({ module_or_path: moduleUrl() });
//
// An engine without the instructions refuses the wide module at compile time, so the choice
// is made by validating a 41-byte probe module that uses one, never by user-agent sniffing.

// (module (func (export "f") (param i64 i64) (result i64 i64)
//   local.get 0 local.get 1 i64.mul_wide_u))
const PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
  0x01, 0x08, 0x01, 0x60, 0x02, 0x7e, 0x7e, 0x02, 0x7e, 0x7e, // type: (i64 i64) -> (i64 i64)
  0x03, 0x02, 0x01, 0x00, // one function of that type
  0x07, 0x05, 0x01, 0x01, 0x66, 0x00, 0x00, // export "f"
  0x0a, 0x0a, 0x01, 0x08, 0x00, 0x20, 0x00, 0x20, 0x01, 0xfc, 0x16, 0x0b, // i64.mul_wide_u
]);

let wide;

/** True if this engine has WebAssembly's wide-arithmetic instructions. */
export function hasWideArithmetic() {
  if (wide === undefined) {
    wide = typeof WebAssembly === 'object' && WebAssembly.validate(PROBE);
  }
  return wide;
}

/** The URL of the module build to give `init`: the wide one where the engine has it. */
export function moduleUrl() {
  // Two literal `new URL(..., import.meta.url)`s, so bundlers (Vite, webpack) see and copy both
  // modules; a URL computed from a variable would be left out of the bundle.
  return hasWideArithmetic()
    ? new URL('./wide/openpsd_bg.wasm', import.meta.url)
    : new URL('./openpsd_bg.wasm', import.meta.url);
}
