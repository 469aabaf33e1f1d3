// What the mailer reads when something is refused: the PSD's status words (thrown by the
// wasm module as CardError with sw / swHex / message) and the back office's error codes
// (docs/refill.md § Errors). Each text says what happened and what to do; the raw code is
// shown next to it.

/**
 * The plain sentence for a PSD personalized before the new refill keys (status 9A16 from
 * AUDIT, or the KMS's legacy_refill_suite): it keeps franking, but only a new device can be
 * refilled. The page offers to start over (app.js).
 */
export const LEGACY_REFILL_TEXT =
  'This browser PSD was made before the new refill keys: it keeps franking with the postage it holds, ' +
  'but it can no longer be refilled or inspected. To refill, start over: delete the stored device ' +
  '(below) and create a new one. Postage left in it is lost when it is deleted: use it up first ' +
  '(frank with it, or move it to a purse).';

/** Whether `err` says the PSD belongs to the retired refill suite (9A16 / legacy_refill_suite). */
export function isLegacyRefill(err) {
  return !!err && ((err.name === 'CardError' && err.swHex === '9A16') ||
    (err.name === 'BackOfficeError' && err.detail && err.detail.code === 'legacy_refill_suite'));
}

/** Mailer-facing text for a PSD status word; `ctx` may carry registers/info for details. */
export function cardText(swHex, fallback, ctx = {}) {
  const r = ctx.registers;
  const info = ctx.info;
  if (/^63C[0-9A-F]$/.test(swHex)) {
    const left = parseInt(swHex[3], 16);
    return left === 0
      ? 'Wrong PIN, and no tries are left: the PIN is now blocked.'
      : `Wrong PIN: ${left} ${left === 1 ? 'try' : 'tries'} left before the PIN is blocked.`;
  }
  switch (swHex) {
    case '9A01':
      return `Insufficient funds: the meter holds ${r ? r.dr : 'less than that'}, not enough for this postage. Refill first.`;
    case '9A02':
      return `Postage above the limit: one piece may carry at most ${info ? info.maxPostage : 'the device limit'}.`;
    case '9A03':
      return `Date refused: it is earlier than the last date this meter used${info && info.lastDate ? ` (${info.lastDate})` : ''}, or more than a day in the past.`;
    case '9A04':
      return 'Origin refused: the origin postal code is not the one of the meter\'s license.';
    case '9A05':
      return 'Date refused: more than 7 days ahead. Mail can be franked at most a week in advance.';
    case '9A06':
      return 'Counter overflow: a register would overflow; the meter must be replaced.';
    case '9A07':
      return 'Transaction ID reused with other data: this request is not a retry of the last one.';
    case '9A08':
      return `Inspection due: this meter must reach the data center every ${info ? info.inspectionDays : 'few'} days${info && info.lastInspection ? ` (last inspection ${info.lastInspection})` : ' and has not been inspected yet'}. Refill, or run "Inspection only".`;
    case '9A10':
      return 'Refused: the refill message or receipt is for another device.';
    case '9A11':
      return 'Refused: the refill message is for another license.';
    case '9A12':
      return 'That refill message was applied already.';
    case '9A13':
      return 'Refused: the refill message was made for an older state of the registers.';
    case '9A14':
      return `Refill refused: the descending register would exceed the meter's maximum${info ? ` of ${info.maxDr}` : ''}.`;
    case '9A15':
      return 'Receipt refused: it is for another audit than the meter\'s last one.';
    case '9A16':
      return LEGACY_REFILL_TEXT;
    case '9A20':
      return 'A transfer to a purse is still pending: finish it with that purse first.';
    case '9A21':
      return 'Transfer refused: the purse\'s balance would exceed its maximum.';
    case '9A22':
      return 'Transfer refused: the amount is above the purse\'s per-transfer maximum.';
    case '9A23':
      return 'This purse has forgotten too many meters to show what became of the pending transfer; the value stays pending and the audit reports it.';
    case '9A24':
      return 'The pending transfer is for another purse.';
    case '9A25':
      return 'This device was personalized before certificates (with the old scheme key): it keeps franking and refilling, but it cannot transfer. Create a new one to move value to purses.';
    case '9A26':
      return 'The device has no certificate from the scheme issuer yet: transfers need one.';
    case '9A27':
      return 'Transfer refused: the other device\'s certificate is not the scheme issuer\'s, is expired or is revoked.';
    case '9A30':
      return 'License refused: this PSD holds that license already (in a slot or in an exported file).';
    case '9A31':
      return 'Install refused: the PSD has no license request waiting for this grant. Request a license again.';
    case '9A32':
      return 'Install refused: this grant was installed already, or its request was replaced by a newer one.';
    case '9A33':
      return 'Import refused: older or duplicate copy: it can never be used (9A33). This PSD took that register set back already, or exported it again since; the file is spent.';
    case '9A34':
      return 'This register set is frozen by an export: finish the export (Export to file) first.';
    case '9A35':
      return 'Refused: the date is outside the license\'s validity.';
    case '9A36':
      return 'Export refused: 16 register sets are out in files already. Import one before exporting another.';
    case '9A37':
      return 'This PSD was personalized without the postal authority\'s key: it cannot take licenses. Create a new device to add licenses.';
    case '9A40':
      return 'No fee for this service in the rate table in effect (or no table is in effect yet): open the Certificates tab again to load the meter\'s tables, or wait for the new table\'s date.';
    case '9A41':
      return 'Not newer: the PSD holds this (or a newer) table, anchor or order already.';
    case '9A42':
      return 'Fees are due (a revocation the descending register could not pay): the next refill settles them; paid services wait until then.';
    case '9A43':
      return 'No key for this service: request a certificate for it first (Certificates: Request a postmark certificate).';
    case '9A44':
      return 'Certificate refused: not for this key, not from the CA the PSD trusts, not of the key\'s purpose, or outside its validity today.';
    case '9A45':
      return 'The key for this service was revoked: request a new certificate.';
    case '9A47':
      return 'Clock refused: the page\'s time is before the last postmark\'s, or outside the window of the last contact with the back office (refill or inspection first).';
    case '6A84':
      return 'No free slot: all four register set slots are in use. Export a set to a file first (the file stays valid).';
    case '6983':
      return 'PIN blocked: too many wrong PINs (or failed recognitions). The card issuer must unblock it.';
    case '6982':
      return 'Refused: a signature or MAC did not verify (a message not made for this meter, or altered).';
    case '6985':
      return 'Not allowed in the device\'s state.';
    case '6581':
      return 'The device\'s memory failed during a commit. Reload the page; nothing was lost that was confirmed.';
    default:
      return fallback || `The PSD refused (${swHex}).`;
  }
}

/** Mailer-facing text for a back-office error body {code, step, message}. */
export function backOfficeText(e) {
  switch (e.code) {
    case 'insufficient_deposit':
      return 'Refill refused by the recharging center: your deposit does not cover this amount.';
    case 'amount_invalid':
      return 'Refill refused: the amount is zero or above what this meter may hold.';
    case 'unknown_account':
      return 'Refill refused: that is not your customer account.';
    case 'unauthenticated':
      return 'Your session with the back office has ended (sessions last 8 hours, and the page keeps it only as a cookie). Create the meter again to start a new one.';
    case 'rate_limited':
      return 'Too many requests in a short time; wait a moment and try again.';
    case 'unknown_device':
      return 'The back office does not know this meter. It was probably restarted with a fresh data directory (bash scripts/demo.sh keeps target/demo-data): this meter\'s value can no longer be refilled there.';
    case 'refill_outstanding':
      return 'Another refill of this meter is still open at the meter server; finish it first.';
    case 'audit_inconsistent':
      return 'The meter server refused the audit: the registers do not follow from the last audit it accepted (a restored older state?).';
    case 'audit_signature_invalid':
      return 'The key management system refused the audit: its signature does not verify under this meter\'s registered key.';
    case 'legacy_refill_suite':
      return LEGACY_REFILL_TEXT;
    case 'device_revoked':
      return 'The key management system refuses this meter: its issuer revoked it. It can no longer be refilled or inspected.';
    case 'service_unavailable':
      return 'A back-office service is not reachable right now; nothing was charged. Try again.';
    case 'not_applied':
      return 'The meter server does not see the refill in the meter yet.';
    case 'unknown_license_order':
      return 'The meter server has no grant for this license order yet.';
    case 'license_refused':
      return `The postal authority refused the license: ${e.message}`;
    case 'request_invalid':
      return 'The manufacturer refused the license request: its signatures do not verify for this device.';
    case 'grant_invalid':
      return 'The manufacturer refused the postal authority\'s grant (it did not check out): nothing was installed.';
    case 'device_conflict':
      return 'The back office has this device registered with another key.';
    default:
      return e.message || e.code;
  }
}

/** A refusal the page shows: {text, code} from whatever was thrown. */
export function describe(err, ctx = {}) {
  const d = describeOnly(err, ctx);
  if (err && err.hint) d.text += ' ' + err.hint;
  return d;
}

function describeOnly(err, ctx) {
  if (err && err.name === 'CardError') {
    return { text: cardText(err.swHex, err.message, ctx), code: `Card status ${err.swHex}: ${err.message}` };
  }
  if (err && err.name === 'BackOfficeError') {
    return { text: backOfficeText(err.detail), code: `${err.detail.code} at ${err.detail.step} (HTTP ${err.status}): ${err.detail.message}` };
  }
  if (err && err.name === 'InputError') {
    return { text: `Input refused: ${err.message}`, code: 'InputError' };
  }
  if (err && err.name === 'TransferError') {
    return { text: `Transfer stopped: ${err.message}`, code: 'TransferError' };
  }
  if (err && err.name === 'StateError') {
    return { text: `The stored device does not open: ${err.message}`, code: 'StateError' };
  }
  if (err instanceof TypeError && /fetch/i.test(err.message)) {
    return { text: 'The back office is not reachable (is `bash scripts/demo.sh` still running?).', code: err.message };
  }
  return { text: String(err && err.message ? err.message : err), code: err && err.name ? err.name : '' };
}
