// The virtual meter box's signed records (seed 001; docs/apdu.md §11 and §11.9:
// `core/src/vbox/txn.rs` and `core/src/vbox/login.rs`), checked in the page with WebCrypto.
// Each record is its fields followed by an ECDSA P-256 / SHA-256 signature (r ‖ s, 64 bytes)
// over a label ‖ the fields, made with the box's transaction key. Checked here rather than
// in the wasm module: WebCrypto verifies P-256 natively, and the main module has under 1 KB
// left of its size budget (wasm/API.md).
//
// What it proves: a record that verifies was made by the key the data center names as its
// box's (`GET /v1/history`'s `box_key`). The data center checks every stored record before
// it answers (one edited in its database is a 500, not a row), so what this check catches is
// a record changed after that check: on the way (the demo server, a proxy) or by a data
// center whose own check was taken out. It does not prove that key is the box's: the data
// center states it (the KMS holds the registered one; the auditor's `--box-key` uses that).

import { hexToBytes } from './util.js';

const SIG = 64;
const TXN_LABEL = new TextEncoder().encode('openpsd vbox txn v1');
const LOGIN_LABEL = new TextEncoder().encode('openpsd vbox login v1');
/** Lengths of the signed records: 155 + 64 and 40 + 64 bytes. */
const TXN_LEN = 219;
const LOGIN_LEN = 104;
/** The transaction record's kinds, as `GET /v1/history` names them. */
const KINDS = { 1: 'create', 2: 'issue', 3: 'refill', 4: 'reprint' };

/** The box's public key (SEC1 uncompressed, hex) for verifying, or null if it is not one. */
export async function boxKey(hex) {
  try {
    return await crypto.subtle.importKey('raw', hexToBytes(hex), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  } catch {
    return null;
  }
}

/** The record's fields (a DataView over them) if its signature verifies under `key` with `label`. */
async function open(key, label, hex, length) {
  let bytes;
  try {
    bytes = hexToBytes(hex);
  } catch {
    return null;
  }
  if (!key || bytes.length !== length) return null;
  const body = bytes.subarray(0, length - SIG);
  const msg = new Uint8Array(label.length + body.length);
  msg.set(label);
  msg.set(body, label.length);
  const ok = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, bytes.subarray(length - SIG), msg);
  return ok ? new DataView(body.buffer, body.byteOffset, body.length) : null;
}

const hexOf = (v, at, n) => Array.from(new Uint8Array(v.buffer, v.byteOffset + at, n), (b) => b.toString(16).padStart(2, '0')).join('');
const u64 = (v, at) => Number(v.getBigUint64(at));

/**
 * A transaction record (hex) the box signed: box ID 8 ‖ shard 2 ‖ sequence 8 ‖ kind 1 ‖
 * meter 8 ‖ slot 4 ‖ amount 8 ‖ AR 8 ‖ DR 8 ‖ pieces 4 ‖ digest 32 ‖ roots 64. Its fields,
 * or null when it does not verify under `key`.
 */
export async function openTransaction(key, hex) {
  const v = await open(key, TXN_LABEL, hex, TXN_LEN);
  if (!v) return null;
  return {
    shard: v.getUint16(8),
    sequence: u64(v, 10),
    kind: KINDS[v.getUint8(18)] || `kind ${v.getUint8(18)}`,
    meterId: hexOf(v, 19, 8),
    amount: u64(v, 31),
    used: u64(v, 39),
    balance: u64(v, 47),
    pieces: v.getUint32(55),
  };
}

/**
 * A log-in record (hex) the box signed: box ID 8 ‖ sequence 8 ‖ mailer 16 ‖ time 8. Its
 * fields, or null when it does not verify under `key`.
 */
export async function openLogin(key, hex) {
  const v = await open(key, LOGIN_LABEL, hex, LOGIN_LEN);
  if (!v) return null;
  return { sequence: u64(v, 8), mailerId: hexOf(v, 16, 16), at: u64(v, 32) };
}
