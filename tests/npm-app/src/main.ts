// A small app as a JS developer writes it against the npm package `openpsd` (issue 19,
// part 4): Vite bundles it, `tsc --strict` checks it (scripts/npm-test.sh). It restores a
// funded PSD — the first time from ./psd-state.bin (a saved state a real app gets from its
// vendor's room; the test serves tests/state/v1/wasm-psd.state), later from its own sealed
// copy in IndexedDB (`openpsd/storage`) — and issues an indicium with its DataMatrix label.
import init, { Psd, dataMatrixSvg, verifyIndicium } from 'openpsd';
import type { IndiciumRequest, IssuedIndicium, OpenpsdError, Registers, Verification } from 'openpsd';
import { openStorage } from 'openpsd/storage';
import { moduleUrl } from 'openpsd/wide';
import type { SealedStorage } from 'openpsd/storage';

const STATE_NAME = 'npm-app-psd';

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
}

const entropy = (): Uint8Array => crypto.getRandomValues(new Uint8Array(32));
const localDate = (): string => {
  const d = new Date();
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
};

function isOpenpsdError(e: unknown): e is OpenpsdError {
  return e instanceof Error && ['CardError', 'InputError', 'StateError', 'TransferError'].includes(e.name);
}

async function loadPsd(storage: SealedStorage, today: string): Promise<{ psd: Psd; from: string }> {
  const sealed = await storage.loadSealed(STATE_NAME);
  if (sealed) return { psd: Psd.restore(sealed, entropy(), today), from: 'sealed storage' };
  const res = await fetch('./psd-state.bin');
  if (!res.ok) throw new Error(`psd-state.bin: HTTP ${res.status}`);
  const psd = Psd.restore(new Uint8Array(await res.arrayBuffer()), entropy(), today);
  await storage.saveSealed(STATE_NAME, psd.saveState());
  return { psd, from: 'psd-state.bin' };
}

function describe(regs: Registers): string {
  return `license ${regs.license} (${regs.origin}): ${regs.dr} left, ${regs.ar} used, ${regs.pieces} piece(s)`;
}

async function main(): Promise<void> {
  // The wide-arithmetic build where the engine has the instructions (both are in the bundle).
  await init({ module_or_path: moduleUrl() });
  const today = localDate();
  const storage = await openStorage('openpsd-npm-app');
  const { psd, from } = await loadPsd(storage, today);
  const info = psd.info();
  const device = byId<HTMLParagraphElement>('device');
  device.textContent = `Meter ${info.deviceId} (from ${from}); ${describe(psd.registers(0))}`;
  device.dataset.deviceId = info.deviceId;
  device.dataset.publicKey = info.publicKey;

  const button = byId<HTMLButtonElement>('issue');
  const result = byId<HTMLParagraphElement>('result');
  const label = byId<HTMLDivElement>('label');
  byId<HTMLFormElement>('piece').addEventListener('submit', (ev: SubmitEvent) => {
    ev.preventDefault();
    void (async (): Promise<void> => {
      const regs = psd.registers(0);
      const request: IndiciumRequest = {
        postage: byId<HTMLInputElement>('postage').value.trim(),
        date: info.lastDate && info.lastDate > today ? info.lastDate : today,
        rate: 1,
        origin: regs.origin,
        destination: byId<HTMLInputElement>('destination').value.trim().toUpperCase(),
      };
      try {
        const issued: IssuedIndicium = psd.issueIndicium(request);
        await storage.saveSealed(STATE_NAME, psd.saveState());
        const check: Verification = verifyIndicium(issued.barcode, info.publicKey);
        label.innerHTML = dataMatrixSvg(issued.barcode, 4);
        const f = issued.fields;
        result.textContent = `Indicium ${f.postage} on ${f.date}, ${f.origin} → ${f.destination}, piece ${f.pieces}; ` +
          `signature ${check.valid ? 'valid' : `INVALID (${check.error ?? '?'})`}`;
        result.dataset.state = check.valid ? 'issued' : 'invalid';
        result.dataset.barcode = Array.from(issued.barcode, (b: number) => b.toString(16).padStart(2, '0')).join('');
        result.dataset.pieces = String(f.pieces);
        device.textContent = `Meter ${info.deviceId}; ${describe(issued.registers)}`;
      } catch (e: unknown) {
        if (!isOpenpsdError(e)) throw e;
        result.textContent = e.swHex ? `${e.message} (${e.swHex})` : e.message;
        result.dataset.state = 'refused';
      }
    })();
  });
  button.disabled = false;
  document.body.dataset.ready = '1';
}

main().catch((e: unknown) => {
  byId<HTMLParagraphElement>('device').textContent = `Failed: ${e instanceof Error ? e.message : String(e)}`;
  document.body.dataset.ready = 'failed';
});
