// The mailer's host side of the remote refill (docs/refill.md, seed 000 Fig. 4), talking to
// the meter server's own API at /v1 on this page's origin, with the PSD in this page. The
// same steps as host/src/refill.rs (`openpsd refill`):
//
//   POST /v1/refills                 -> nonce              (step 200-210)
//   AUDIT(nonce) on the PSD                                (step 215)
//   POST /v1/refills/{txn}/audit     -> refill message, receipt, confirm nonce (220-285)
//   REFILL(message), RECEIPT on the PSD                    (290-305)
//   AUDIT(confirm nonce); POST /v1/refills/{txn}/confirm   -> completed
//
// Idempotent by client_txn_id: the page keeps the transaction ID of an unfinished refill and
// resumes it (the meter server hands back the refill wherever it stands).

import { bytesToHex, hexToBytes } from './util.js';

/** A refill message: the 42-byte combination and the KMS's ECDSA signature (64 bytes). */
const REFILL_MESSAGE_LEN = 106;

/** A refusal by the back office: HTTP status + {code, step, message}. */
export class BackOfficeError extends Error {
  constructor(status, detail) {
    super(`${detail.code} at ${detail.step}: ${detail.message}`);
    this.name = 'BackOfficeError';
    this.status = status;
    this.detail = detail;
  }
}

/** JSON call to this origin; a non-2xx answer throws BackOfficeError. */
export async function call(method, path, body) {
  const resp = await fetch(path, {
    method,
    // Always JSON for a change: the room refuses other content types (CSRF, docs/security.md).
    headers: method === 'GET' ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let value;
  try {
    value = await resp.json();
  } catch {
    throw new BackOfficeError(resp.status, { code: 'bad_answer', step: path, message: `HTTP ${resp.status} without JSON` });
  }
  if (!resp.ok) {
    throw new BackOfficeError(resp.status, value && value.error ? value.error
      : { code: 'http_' + resp.status, step: path, message: JSON.stringify(value) });
  }
  return value;
}

function fieldBytes(r, name, len) {
  const v = r[name];
  if (typeof v !== 'string' || !/^[0-9a-fA-F]*$/.test(v) || (len && v.length !== 2 * len)) {
    throw new BackOfficeError(502, { code: 'bad_answer', step: 'host', message: `the meter server sent no valid ${name}` });
  }
  return hexToBytes(v);
}

/**
 * Runs (or resumes) one refill.
 * dev: {psd, deviceId, accountId, set, save: async () => void}
 * req: {txn, amount (minor units)}; progress(text) reports each step.
 * Returns {state, registers, inspectionRenewed}.
 */
export async function refill(dev, req, progress) {
  const { psd, set } = dev;
  const txn = req.txn;
  let r = await call('POST', '/v1/refills', {
    client_txn_id: txn, device_id: dev.deviceId, set, account_id: dev.accountId, amount: req.amount,
  });
  progress(`meter server: refill ${txn} ${r.state}${r.nonce ? ', nonce ' + r.nonce.slice(0, 8) + '…' : ''}`);
  if (r.state === 'refused' && r.error) {
    throw new BackOfficeError(409, r.error);
  }
  let inspectionRenewed = false;
  if (r.state === 'awaiting_audit') {
    const audit = psd.audit(fieldBytes(r, 'nonce', 16), set);
    await dev.save();
    progress(`PSD: audit made for the nonce (${audit.length} bytes, signed by the PSD's own key); sent to the meter server`);
    r = await call('POST', `/v1/refills/${txn}/audit`, { audit: bytesToHex(audit) });
    progress(`meter server: audit verified by the KMS under the PSD's public key and checked against history; recharging center held the amount; KMS signed the refill message (combination ${r.combination_id})`);
    await applyMessage(dev, r, progress);
    const date = psd.receipt(fieldBytes(r, 'receipt'));
    await dev.save();
    inspectionRenewed = true;
    progress(`PSD: audit receipt accepted, inspection renewed (${date})`);
  } else if (r.state === 'message_issued') {
    await applyMessage(dev, r, progress);
  }
  if (r.state === 'message_issued') {
    const audit = psd.audit(fieldBytes(r, 'confirm_nonce', 16), set);
    await dev.save();
    progress('PSD: confirming audit made; sent to the meter server');
    r = await call('POST', `/v1/refills/${txn}/confirm`, { audit: bytesToHex(audit) });
    progress(`meter server: ${r.state} (the recharging center settled the hold)`);
  }
  if (r.state !== 'completed') {
    throw new BackOfficeError(409, { code: 'wrong_state', step: 'host', message: `refill ${txn} ended in state ${r.state}` });
  }
  return { state: r.state, registers: psd.registers(set), inspectionRenewed };
}

async function applyMessage(dev, r, progress) {
  try {
    const regs = dev.psd.applyRefill(fieldBytes(r, 'refill_message', REFILL_MESSAGE_LEN), dev.set);
    await dev.save();
    progress(`PSD: refill message applied: DR ${regs.dr}, control sum ${regs.controlSum}`);
  } catch (e) {
    if (e && e.name === 'CardError' && e.swHex === '9A12') {
      progress('PSD: the refill message was applied before');
    } else {
      throw e;
    }
  }
}

/** A plain audit whose receipt renews the inspection (POST /v1/inspections). */
export async function inspect(dev, progress) {
  const { psd, set } = dev;
  const i = await call('POST', '/v1/inspections', { device_id: dev.deviceId, set });
  progress(`meter server: inspection ${i.inspection_id.slice(0, 8)}…, nonce ${i.nonce.slice(0, 8)}…`);
  const audit = psd.audit(fieldBytes(i, 'nonce', 16), set);
  await dev.save();
  progress('PSD: audit made; sent to the meter server');
  const r = await call('POST', `/v1/inspections/${i.inspection_id}/audit`, { audit: bytesToHex(audit) });
  const date = psd.receipt(fieldBytes(r, 'receipt'));
  await dev.save();
  progress(`PSD: receipt accepted, inspection renewed (${date})`);
  return date;
}
