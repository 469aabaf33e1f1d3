/** True if this engine has WebAssembly's wide-arithmetic instructions. */
export function hasWideArithmetic(): boolean;
/** The URL of the module build to give `init`: `wide/openpsd_bg.wasm` where the engine has
 * the instructions, `openpsd_bg.wasm` otherwise. */
export function moduleUrl(): URL;
