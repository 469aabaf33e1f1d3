// The web demo's postage client: a PSD in this page (the wasm package's `Psd`), its sealed
// state in IndexedDB (the package's storage.js), refills through the meter server
// (meter.js), labels with a DataMatrix indicium, and the history of indicia issued.

import { call, refill, inspect, BackOfficeError } from './meter.js';
import { describe, isLegacyRefill, LEGACY_REFILL_TEXT } from './messages.js';
import { bytesToHex, hexToBytes, randomBytes, today, minorUnits, amountText } from './util.js';
import { initCertificates } from './certificates.js';
import { initOnline } from './online.js';
import { fillLabel, initLabelTools } from './label.js';
import { RATES, CURRENCY, rateByCode, rateText, rateLabel } from './rates.js';

const STATE_NAME = 'psd';
const PURSE_STATE_NAME = 'purse';
const SET = 0;
/** The Certificates tab (certificates.js): applies forced revocation orders before a refill. */
let certs = null;
const $ = (id) => document.getElementById(id);

const app = {
  wasm: null,      // the package's exports
  store: null,     // SealedStorage
  psd: null,       // Psd
  purse: null,     // Purse (the purse card), or null
  licenses: null,  // psd.licenses(): the slots, their balances, the exports
  meta: null,      // {deviceId, accountId, registered}
  info: null,      // psd.info()
  registers: null, // psd.registers(SET)
  saving: Promise.resolve(),
  busy: false,
};

// ---------------------------------------------------------------- small UI helpers

function status(text, state) {
  const el = $('status');
  el.textContent = text;
  el.dataset.state = state;
}

// Feedback next to the action that caused it: the notice moves to just after the form (or
// the block) of the last button the mailer used, while that is on screen; otherwise it
// stays at the top of the page.
// (A button in a table row: after the table, whose rows are redrawn.)
let actionAt = null;
const noticeEl = $('notice');
for (const type of ['click', 'submit']) {
  document.addEventListener(type, (ev) => {
    const t = ev.target instanceof Element ? ev.target : null;
    if (t && t.closest('main') && (type === 'submit' || t.closest('button'))) {
      actionAt = t.closest('form') || t.closest('table') || t.closest('button').parentElement;
    }
  }, true);
}

function placeNotice(el) {
  if (actionAt && actionAt.isConnected && actionAt.checkVisibility()) {
    if (actionAt.nextElementSibling !== el) actionAt.after(el);
  } else if (document.querySelector('header').nextElementSibling !== el) {
    document.querySelector('header').after(el);
  }
}

function notice(text, code, kind = 'error') {
  const el = noticeEl;
  placeNotice(el);
  el.replaceChildren();
  const p = document.createElement('p');
  p.textContent = text;
  el.append(p);
  if (code) {
    const c = document.createElement('p');
    c.className = 'code';
    c.textContent = code;
    el.append(c);
  }
  el.dataset.kind = kind;
  el.hidden = false;
  if (el.scrollIntoView) el.scrollIntoView({ block: 'nearest' });
}

function clearNotice() {
  noticeEl.hidden = true;
}

function refusal(err) {
  const d = describe(err, { registers: app.registers, info: app.info });
  notice(d.text, d.code);
  console.warn(err);
  if (isLegacyRefill(err)) offerStartOver();
}

function show(...ids) {
  for (const id of ids) $(id).hidden = false;
}

async function busy(what, fn) {
  if (app.busy) return;
  app.busy = true;
  document.querySelectorAll('main button').forEach((b) => { b.dataset.was = b.disabled; b.disabled = true; });
  status(what, 'busy');
  clearNotice();
  try {
    await fn();
    status('Ready.', 'ready');
  } catch (e) {
    refusal(e);
    status('Refused — see the message next to the action.', 'ready');
  } finally {
    document.querySelectorAll('main button').forEach((b) => { b.disabled = b.dataset.was === 'true'; });
    app.busy = false;
    if (app.psd) render();
    // The form may be gone now (the device created): then the notice goes back to the top.
    if (!noticeEl.hidden) placeNotice(noticeEl);
  }
}

// ---------------------------------------------------------------- device state

const metaKey = 'openpsd.device';
const historyKey = (id) => `openpsd.history.${id}`;
const pendingRefillKey = (id) => `openpsd.pendingRefill.${id}`;
const pendingLicenseKey = (id) => `openpsd.pendingLicense.${id}`;
const exportsKey = (id) => `openpsd.exports.${id}`;
// Value moved to purse cards, as this page did it: [{amount, purse, date}] (the ascending
// register counts it with the postage printed; the page shows the two apart).
const transfersKey = (id) => `openpsd.transfers.${id}`;
// The sender's address last used with this device (the form's default).
const senderKey = (id) => `openpsd.sender.${id}`;

function loadJson(key, dflt) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? dflt : JSON.parse(v);
  } catch {
    return dflt;
  }
}

function saveJson(key, value) {
  if (value === null) localStorage.removeItem(key);
  else localStorage.setItem(key, JSON.stringify(value));
}

/** Seals the PSD's state now (in call order) and waits until it is stored. */
function save() {
  const state = app.psd.saveState();
  app.saving = app.saving.then(() => app.store.saveSealed(STATE_NAME, state));
  return app.saving;
}

/** Seals the purse's state (same queue as the PSD's) and waits until it is stored. */
function savePurse() {
  const state = app.purse.saveState();
  app.saving = app.saving.then(() => app.store.saveSealed(PURSE_STATE_NAME, state));
  return app.saving;
}

function device() {
  return { psd: app.psd, deviceId: app.meta.deviceId, accountId: app.meta.accountId, set: SET, save };
}

// A PSD personalized before the asymmetric refill keys (its record holds K1) answers every
// AUDIT with 9A16: ask it before the meter server opens a refill or inspection that could
// never finish. (An AUDIT changes nothing in the PSD; its answer is dropped.)
function checkRefillKeys() {
  app.psd.audit(randomBytes(16), SET);
}

// Such a PSD keeps franking, but only a new device can be refilled: the page remembers it
// and offers the same way out as for a damaged record, deleting the stored device.
function offerStartOver() {
  if (app.meta && !app.meta.legacyRefill) {
    app.meta.legacyRefill = true;
    saveJson(metaKey, app.meta);
  }
  $('fatal-title').textContent = 'This device can no longer be refilled';
  $('fatal-text').textContent = LEGACY_REFILL_TEXT;
  $('fatal-hint').textContent = 'Until you delete it, it keeps franking (and moving value to a purse). '
    + 'Then create a new device: it gets the new refill keys.';
  show('fatal');
}

async function register() {
  const reg = await call('POST', `/demo/v1/devices/${app.info.deviceId}/register`, {
    key_id: app.info.keyId, public_key: app.info.publicKey,
  });
  app.meta.registered = true;
  // The account is the session's customer's (the room signed them up with the device).
  if (reg.account && reg.account.account_id) app.meta.accountId = reg.account.account_id;
  saveJson(metaKey, app.meta);
  return reg;
}

// ---------------------------------------------------------------- rendering

async function render() {
  app.info = app.psd.info();
  app.registers = app.psd.registers(SET);
  const i = app.info;
  const r = app.registers;
  $('dev-id').textContent = i.deviceId;
  $('dev-license').textContent = `${r.license} / ${r.origin}`;
  $('dev-keyid').textContent = i.keyId;
  $('dev-pubkey').textContent = i.publicKey;
  $('dev-limits').textContent = `per piece ${i.maxPostage}, descending register ${i.maxDr}, inspection every ${i.inspectionDays} days`;
  $('reg-ar').textContent = r.ar;
  $('reg-dr').textContent = r.dr;
  $('reg-cs').textContent = r.controlSum;
  renderUsed(r);
  $('reg-pieces').textContent = r.pieces;
  $('reg-refills').textContent = r.refills;
  $('reg-inspection').textContent = inspectionText(i);
  renderHistory();
  renderPurse();
  try {
    renderLicenses();
  } catch (e) {
    $('license-exported').hidden = false;
    $('license-exported').textContent = `The license slots cannot be read: ${describe(e).text}`;
  }
  const pending = loadJson(pendingRefillKey(app.meta.deviceId), null);
  $('refill-pending').hidden = !pending;
  $('refill-pending').textContent = pending
    ? `An interrupted refill of ${amountText(pending.amount)} (transaction ${pending.txn}) is waiting: Refill finishes it first.`
    : '';
  try {
    const a = await call('GET', `/demo/v1/accounts/${app.meta.accountId}`);
    $('dev-account').textContent = `${a.account_id}: available ${amountText(a.available)}, held ${amountText(a.held)}, debited ${amountText(a.debited)}`;
  } catch (e) {
    $('dev-account').textContent = `${app.meta.accountId} (${describe(e).text})`;
  }
}

// The ascending register apart: postage printed (this device's verified labels in the
// history) and value moved to purses (this page's transfers); what neither explains (records
// of another browser, fees) gets its own row.
function renderUsed(r) {
  let printed = 0;
  for (const entry of loadJson(historyKey(app.meta.deviceId), [])) {
    const v = app.wasm.verifyIndicium(hexToBytes(entry.barcode), app.info.publicKey);
    if (v.valid) printed += minorUnits(v.fields.postage);
  }
  const moved = loadJson(transfersKey(app.meta.deviceId), []).reduce((sum, t) => sum + (minorUnits(t.amount) || 0), 0);
  const other = minorUnits(r.ar) - printed - moved;
  $('reg-printed').textContent = amountText(printed);
  $('reg-moved').textContent = amountText(moved);
  $('reg-other-row').hidden = other === 0;
  $('reg-other').textContent = other < 0 ? `-${amountText(-other)}` : amountText(other);
}

function renderPurse() {
  $('purse-create-form').hidden = !!app.purse;
  $('purse-card').hidden = !app.purse;
  if (!app.purse) return;
  const p = app.purse.info();
  $('purse-id').textContent = p.cardId;
  $('purse-balance').textContent = p.balance;
  $('purse-limits').textContent = `balance at most ${p.maxBalance}, at most ${p.maxTransfer} per transfer`;
  $('purse-transfers').textContent = `${p.transfers} (total ${p.totalIn}${p.lastTransfer ? `, last ${p.lastTransfer}` : ''})`;
  $('purse-tries').textContent = p.pinTriesLeft === 0 ? 'none: PIN blocked' : `${p.pinTriesLeft} of ${p.pinTries}`;
  $('purse-certified').textContent = p.certified ? 'installed' : 'missing';
}

function inspectionText(i) {
  if (!i.inspectionDays) return 'not required';
  if (!i.lastInspection) return 'due: never inspected — refill or run an inspection before franking';
  const due = new Date(i.lastInspection + 'T00:00:00');
  due.setDate(due.getDate() + i.inspectionDays);
  const dueText = due.toISOString().slice(0, 10);
  return `last ${i.lastInspection}, franking allowed through ${dueText}`;
}

// The history's entries as shown: verified, newest first, with the search applied.
function historyView() {
  const all = loadJson(historyKey(app.meta.deviceId), []);
  const q = $('history-q').value.trim().toLowerCase();
  const from = $('history-from').value;
  const to = $('history-to').value;
  const min = $('history-min').value.trim() ? minorUnits($('history-min').value) : null;
  const max = $('history-max').value.trim() ? minorUnits($('history-max').value) : null;
  const rows = [];
  for (const entry of all.slice().reverse()) {
    const v = app.wasm.verifyIndicium(hexToBytes(entry.barcode), app.info.publicKey);
    const f = v.fields;
    const row = { entry, v, f };
    if (q) {
      const hay = [...(entry.from || []), ...(entry.to || []), entry.transactionId,
        f ? f.origin : '', f ? f.destination : '', f ? rateLabel(f.rate) : '', f ? f.postage : ''].join('\n').toLowerCase();
      if (!hay.includes(q)) continue;
    }
    if ((from || to) && (!f || (from && f.date < from) || (to && f.date > to))) continue;
    if (min !== null || max !== null) {
      const p = f ? minorUnits(f.postage) : null;
      if (p === null || (min !== null && p < min) || (max !== null && p > max)) continue;
    }
    rows.push(row);
  }
  return { all: all.length, rows };
}

function renderHistory() {
  const tbody = $('history-rows');
  tbody.replaceChildren();
  const view = historyView();
  for (const { entry, v, f } of view.rows) {
    const tr = document.createElement('tr');
    const to = entry.to && entry.to.length ? entry.to[0] : '';
    const cells = f
      ? [f.pieces, f.date, `${CURRENCY} ${f.postage}`, rateLabel(f.rate), to, `${f.origin} → ${f.destination}`, entry.transactionId]
      : ['?', '?', '?', '?', to, '?', entry.transactionId];
    for (const c of cells) {
      const td = document.createElement('td');
      td.textContent = c;
      tr.append(td);
    }
    const ok = document.createElement('td');
    ok.textContent = v.valid ? 'verified' : `INVALID: ${v.error}`;
    ok.className = v.valid ? 'ok' : 'bad';
    tr.append(ok);
    const btn = document.createElement('td');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'secondary';
    b.textContent = 'Label';
    b.setAttribute('aria-label', `Label of piece ${f ? f.pieces : '?'}`);
    b.addEventListener('click', () => showLabel(entry));
    btn.append(b);
    tr.append(btn);
    tbody.append(tr);
  }
  $('history-count').textContent = view.rows.length === view.all
    ? `${view.all} label${view.all === 1 ? '' : 's'}.`
    : `Showing ${view.rows.length} of ${view.all} labels.`;
  $('history').hidden = view.all === 0;
}

// RFC 4180: fields with a comma, a quote or a line break quoted, quotes doubled; CRLF.
function csvField(x) {
  const t = String(x ?? '');
  return /[",\r\n]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
}

/** The rows the history shows (the search applied) as a CSV download. */
function downloadHistoryCsv() {
  const head = ['piece', 'date', 'postage', 'currency', 'product', 'rate', 'origin', 'destination',
    'from', 'to', 'transaction', 'signature', 'issued_at'];
  const lines = [head.join(',')];
  for (const { entry, v, f } of historyView().rows) {
    lines.push([f ? f.pieces : '', f ? f.date : '', f ? f.postage : '', CURRENCY, f ? rateLabel(f.rate) : '',
      f ? f.rate : '', f ? f.origin : '', f ? f.destination : '', (entry.from || []).join(', '),
      (entry.to || []).join(', '), entry.transactionId, v.valid ? 'verified' : `INVALID: ${v.error}`,
      entry.issuedAt || ''].map(csvField).join(','));
  }
  const bytes = new TextEncoder().encode(lines.join('\r\n') + '\r\n');
  const url = URL.createObjectURL(new Blob([bytes], { type: 'text/csv' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = `labels-${app.meta.deviceId}-${today()}.csv`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function showLabel(entry) {
  const v = fillLabel(app.wasm, hexToBytes(entry.barcode), app.info.publicKey, "the device's key",
    { from: entry.from, to: entry.to });
  if (!v) {
    notice('This history entry does not decode as an indicium.', app.wasm.verifyIndicium(hexToBytes(entry.barcode), app.info.publicKey).error);
    return;
  }
  $('label').dataset.barcode = entry.barcode;
}

// ---------------------------------------------------------------- actions

async function createDevice(origin) {
  // Never over an existing record (a tampered one throws here, which is right too).
  if (app.psd || (await app.store.loadSealed(STATE_NAME)) !== null) {
    throw new Error('this browser holds a device already; it is not replaced');
  }
  const pers = await call('POST', '/demo/v1/devices', { origin });
  const psd = app.wasm.Psd.create(hexToBytes(pers.personalize), randomBytes(32), today());
  const info = psd.info();
  if (info.deviceId !== pers.device_id) {
    throw new Error(`the PSD reports device ${info.deviceId}, the personalization room made ${pers.device_id}`);
  }
  app.psd = psd;
  app.meta = { deviceId: info.deviceId, accountId: pers.account_id, registered: false };
  // Sealed first, then registered: a device that exists in the page is never lost.
  await save();
  saveJson(metaKey, app.meta);
  app.info = info;
  showDevice();
  await register();
  await ensurePsdCertificate();
  notice(`Device ${info.deviceId} created and registered with the key management system; account ${pers.account_id} opened with a deposit. Refill it to start franking.`, '', 'ok');
}

async function doRefill(amountInput) {
  const id = app.meta.deviceId;
  checkRefillKeys();
  if (!app.meta.registered) await register();
  let pending = loadJson(pendingRefillKey(id), null);
  const steps = $('refill-steps');
  steps.replaceChildren();
  const progress = (text, state = 'done') => {
    const li = document.createElement('li');
    li.textContent = text;
    li.dataset.state = state;
    steps.append(li);
  };
  if (pending) {
    progress(`finishing the interrupted refill ${pending.txn} of ${amountText(pending.amount)} first`);
  } else {
    const amount = minorUnits(amountInput);
    if (!amount) throw new Error(`"${amountInput}" is not an amount (e.g. 25.00)`);
    pending = { txn: bytesToHex(randomBytes(8)), amount };
    saveJson(pendingRefillKey(id), pending);
  }
  // Forced revocation: the orders the CA issued for this PSD (an operator revoked one of its
  // certificates) applied first, as `openpsd refill` does; the meter refuses refills while
  // one stays unapplied past its grace period. Whatever cannot be applied is shown and the
  // refill goes on (the meter decides).
  const revoked = certs ? await certs.beforeContact(progress, SET) : { text: '' };
  try {
    const out = await refill(device(), pending, progress);
    saveJson(pendingRefillKey(id), null);
    progress(`done: DR ${out.registers.dr}, control sum ${out.registers.controlSum}, refills ${out.registers.refills}`);
    notice(`Refilled ${amountText(pending.amount)}: the meter now holds ${out.registers.dr}.${revoked.text ? ' ' + revoked.text : ''}`, '', 'ok');
  } catch (e) {
    // A refusal ends the refill (the meter server's refused state, or a card refusal that a
    // retry cannot change); a lost connection keeps it to resume with the same ID.
    const resumable = e instanceof TypeError || (e instanceof BackOfficeError && e.detail.code === 'service_unavailable');
    if (!resumable) saveJson(pendingRefillKey(id), null);
    else e.hint = `The refill ${pending.txn} is kept: the next Refill finishes it first, with the same transaction ID (nothing is charged twice).`;
    const li = document.createElement('li');
    li.textContent = `${resumable ? 'interrupted' : 'refused'}: ${describe(e, { registers: app.registers, info: app.info }).text}`;
    li.dataset.state = 'failed';
    steps.append(li);
    throw e;
  }
}

async function doInspect() {
  checkRefillKeys();
  if (!app.meta.registered) await register();
  const steps = $('refill-steps');
  steps.replaceChildren();
  const progress = (text, state = 'done') => {
    const li = document.createElement('li');
    li.textContent = text;
    li.dataset.state = state;
    steps.append(li);
  };
  const revoked = certs ? await certs.beforeContact(progress, SET) : { text: '' };
  const date = await inspect(device(), progress);
  notice(`Inspection accepted on ${date}.${revoked.text ? ' ' + revoked.text : ''}`, '', 'ok');
}

// An address from its text area: non-empty lines, trimmed, at most 6 of at most 60 characters.
function addressLines(id, what) {
  const lines = $(id).value.split('\n').map((l) => l.trim()).filter((l) => l);
  if (lines.length === 0) throw new Error(`Enter ${what}.`);
  if (lines.length > 6 || lines.some((l) => l.length > 60)) throw new Error(`${what[0].toUpperCase()}${what.slice(1)}: at most 6 lines of at most 60 characters.`);
  return lines;
}

// The rates picker: the weight rules products out; a product fixes the postage (read-only),
// "Other amount" (rate 9) leaves it to the mailer.
function fillRates() {
  const sel = $('frank-rate');
  if (!sel.options.length) {
    for (const r of RATES) {
      const o = document.createElement('option');
      o.value = String(r.code);
      o.textContent = rateText(r);
      sel.append(o);
    }
  }
  const grams = Number($('frank-weight').value);
  for (const o of sel.options) {
    const r = rateByCode(o.value);
    o.disabled = r.maxGrams !== null && grams > r.maxGrams;
  }
  if (sel.selectedOptions[0]?.disabled) {
    const fit = [...sel.options].find((o) => !o.disabled);
    if (fit) sel.value = fit.value;
  }
  const r = rateByCode(sel.value);
  const fixed = r && r.postage !== null;
  $('frank-postage').readOnly = fixed;
  if (fixed) $('frank-postage').value = r.postage;
  $('frank-postage-hint').textContent = fixed
    ? `${r.name}: the rate fixes the postage at ${CURRENCY} ${r.postage}.`
    : `Enter the postage, up to the meter's limit of ${CURRENCY} ${app.info ? app.info.maxPostage : '…'} per piece.`;
}

async function doFrank() {
  const regs = app.psd.registers(SET);
  const rate = rateByCode($('frank-rate').value);
  if (!rate) throw new Error('Choose a product.');
  const grams = Number($('frank-weight').value);
  if (!(grams > 0)) throw new Error('Enter the weight in grams.');
  if (rate.maxGrams !== null && grams > rate.maxGrams) throw new Error(`${rate.name} is for up to ${rate.maxGrams} g: choose another product.`);
  const from = addressLines('frank-from', 'your address (From)');
  const to = addressLines('frank-to', "the recipient's address (To)");
  const req = {
    postage: rate.postage !== null ? rate.postage : $('frank-postage').value.trim(),
    date: $('frank-date').value,
    rate: rate.code,
    origin: regs.origin,
    destination: $('frank-destination').value.trim().toUpperCase(),
    set: SET,
  };
  app.psd.setToday(today());
  const out = app.psd.issueIndicium(req);
  await save();
  const entry = {
    transactionId: out.transactionId,
    barcode: bytesToHex(out.barcode),
    issuedAt: new Date().toISOString(),
    from,
    to,
    grams,
  };
  const list = loadJson(historyKey(app.meta.deviceId), []);
  list.push(entry);
  saveJson(historyKey(app.meta.deviceId), list);
  saveJson(senderKey(app.meta.deviceId), from);
  showLabel(entry);
  $('label-area').scrollIntoView({ block: 'nearest' });
  notice(`Indicium #${out.fields.pieces} issued: ${out.fields.postage} to ${out.fields.destination} (${to[0]}). DR now ${out.registers.dr}.`, '', 'ok');
}

async function createPurse(pin) {
  if (!/^[0-9]{4,12}$/.test(pin)) throw new Error('The purse PIN must be 4 to 12 digits.');
  if (app.purse || (await app.store.loadSealed(PURSE_STATE_NAME)) !== null) {
    throw new Error('this browser holds a purse already; it is not replaced');
  }
  const pers = await call('POST', '/demo/v1/purses', { pin });
  const purse = app.wasm.Purse.create(hexToBytes(pers.personalize), randomBytes(32), today());
  const info = purse.info();
  if (info.cardId !== pers.card_id) {
    throw new Error(`the purse reports card ${info.cardId}, the personalization room made ${pers.card_id}`);
  }
  app.purse = purse;
  await savePurse();
  const cert = await call('POST', `/demo/v1/purses/${info.cardId}/certify`, { public_key: info.publicKey });
  purse.certify(hexToBytes(cert.signature));
  // The recognition key was generated inside the purse; the room's issuer certifies it.
  const rec = await call('POST', `/demo/v1/purses/${info.cardId}/certificate`, { recognition_key: purse.recognitionKey() });
  purse.installCertificate(hexToBytes(rec.certificate));
  await savePurse();
  $('purse-new-pin').value = '';
  notice(`Purse card ${info.cardId} created and certified by the issuer. Move value to it with its PIN.`, '', 'ok');
}

// The issuer's certificate on the PSD's recognition key (generated inside the PSD; only
// its public half goes to the room). A PSD personalized before certificates answers 9A25
// here, which the notice explains: it franks and refills but cannot transfer.
async function ensurePsdCertificate() {
  if (app.meta.certified) return;
  const key = app.psd.recognitionKey();
  const c = await call('POST', `/demo/v1/devices/${app.meta.deviceId}/certificate`, { recognition_key: key });
  app.psd.installCertificate(hexToBytes(c.certificate));
  await save();
  app.meta.certified = true;
  saveJson(metaKey, app.meta);
}

async function doTransfer() {
  if (!app.purse) throw new Error('Create a purse card first.');
  await ensurePsdCertificate();
  const amount = $('purse-amount').value.trim();
  const pin = $('purse-pin').value;
  app.psd.setToday(today());
  let out;
  try {
    out = app.psd.transferToPurse(app.purse, amount, pin, SET);
  } finally {
    // A refused PIN costs a try and a refused transfer may leave one pending: both cards'
    // states change either way.
    $('purse-pin').value = '';
    await save();
    await savePurse();
  }
  const moved = loadJson(transfersKey(app.meta.deviceId), []);
  if (out.resolvedFirst?.outcome === 'completed') moved.push({ amount: out.resolvedFirst.amount, purse: out.purse.cardId, date: today() });
  moved.push({ amount: out.amount, purse: out.purse.cardId, date: today() });
  saveJson(transfersKey(app.meta.deviceId), moved);
  const first = out.resolvedFirst
    ? ` (an interrupted transfer of ${out.resolvedFirst.amount} was ${out.resolvedFirst.outcome} first)`
    : '';
  notice(`Moved ${out.amount} to purse ${out.purse.cardId}${first}: the purse holds ${out.purse.balance}, the meter ${out.registers.dr}.`, '', 'ok');
}

// ---------------------------------------------------------------- licenses (seed 003)

// The set this page refills and franks with is slot 0; the others are licenses added by
// the postal authority's grants. They can be parked in a file (export) and brought back
// (import); slot 0 stays in the PSD, so the page always has its set.
function renderLicenses() {
  const lic = app.psd.licenses();
  app.licenses = lic;
  const rows = $('license-rows');
  rows.replaceChildren();
  for (const s of lic.slots) {
    const free = s.license === null;
    const r = free ? null : app.psd.registers(s.slot);
    const tr = document.createElement('tr');
    tr.dataset.slot = s.slot;
    tr.dataset.license = free ? '' : s.license;
    tr.dataset.frozen = s.frozen;
    const cells = free
      ? [s.slot, 'free', '', '', '', '', '']
      : [s.slot, s.license, r.origin, r.dr, r.ar, r.pieces, s.validUntil || 'personalized'];
    for (const c of cells) {
      const td = document.createElement('td');
      td.textContent = c;
      tr.append(td);
    }
    tr.children[3].className = 'dr';
    const act = document.createElement('td');
    if (!free && s.slot !== SET) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'secondary export';
      b.textContent = s.frozen ? 'Finish export' : 'Export to file';
      b.addEventListener('click', () => busy('Exporting the register set…', () => doExport(s.slot)));
      act.append(b);
    } else if (!free) {
      act.textContent = 'franks and refills here';
    }
    tr.append(act);
    rows.append(tr);
  }
  const out = lic.exports.filter((e) => !e.preparing);
  const el = $('license-exported');
  el.hidden = out.length === 0;
  el.replaceChildren();
  if (out.length) {
    el.append('In files, still counted by the PSD: '
      + out.map((e) => `license ${e.license} (DR ${e.dr}, export ${e.epoch})`).join('; ') + '. ');
    // This browser's copy of each file, until it is imported (a lost download is not lost).
    const kept = loadJson(exportsKey(app.meta.deviceId), []);
    for (const e of out) {
      const k = kept.find((x) => x.license === e.license && x.epoch === e.epoch);
      if (!k) continue;
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'secondary';
      b.textContent = `Download ${k.fileName} again`;
      b.addEventListener('click', () => download(hexToBytes(k.blob), k.fileName));
      el.append(b);
    }
  }
  const pending = loadJson(pendingLicenseKey(app.meta.deviceId), null);
  $('license-pending').hidden = !pending;
  $('license-pending').textContent = pending
    ? `An interrupted license order ${pending.txn} (origin ${pending.origin}) is waiting: Request a license finishes it first.`
    : '';
}

function stepList(id) {
  const steps = $(id);
  steps.replaceChildren();
  return (text, state = 'done') => {
    const li = document.createElement('li');
    li.textContent = text;
    li.dataset.state = state;
    steps.append(li);
  };
}

// Fig. 4 from the mailer's desk, the steps of `openpsd license request`
// (host/src/license_commands.rs): the PSD's signed request, the meter server's
// POST /v1/licenses (idempotent by client_txn_id), the install. An order cut short is kept
// and resumed with the same ID: GET /v1/licenses/{txn} answers its grant if there is one.
async function doLicenseRequest(originInput) {
  const id = app.meta.deviceId;
  if (!app.meta.registered) await register();
  const progress = stepList('license-steps');
  let pending = loadJson(pendingLicenseKey(id), null);
  let grant = null;
  if (pending) {
    progress(`license order ${pending.txn}: finishing the interrupted order first`);
    try {
      grant = await call('GET', `/v1/licenses/${pending.txn}`);
    } catch (e) {
      if (!(e instanceof BackOfficeError && e.detail.code === 'unknown_license_order')) throw e;
    }
  } else {
    const origin = originInput.trim().toUpperCase();
    if (!/^[A-Z0-9 -]{1,10}$/.test(origin)) throw new Error(`"${originInput}" is not a postal code (1 to 10 of A-Z 0-9 space -)`);
    pending = { txn: bytesToHex(randomBytes(8)), origin };
    saveJson(pendingLicenseKey(id), pending);
    progress(`license order ${pending.txn}`);
  }
  try {
    if (grant) {
      progress('1-2/4 the meter server has this order\'s grant already');
    } else {
      // Asking again (a resumed order) answers the same request: the pending key is kept.
      let request;
      try {
        request = app.psd.licenseRequest(pending.origin, 0, false);
      } catch (e) {
        if (e.name === 'CardError' && e.swHex === '6985') {
          e.hint = 'The PSD holds a license request for another origin that was never installed: request the license for that origin to finish it.';
        }
        throw e;
      }
      await save();
      progress('1/4 the PSD made the license key and signed the request (proof of possession + device)');
      progress('2/4 the meter server passes it on: the manufacturer checks it, the postal authority grants, the manufacturer countersigns', 'busy');
      grant = await call('POST', '/v1/licenses', { client_txn_id: pending.txn, device_id: id, request });
      $('license-steps').lastChild.dataset.state = 'done';
    }
    const f = grant.fields;
    progress(`3/4 granted: license ${f.license} at ${f.origin}, valid ${f.not_before} to ${f.not_after}, certificate serial ${f.serial}`);
    let installed;
    try {
      installed = app.psd.licenseInstall(grant.install);
    } catch (e) {
      // Installed by an earlier run of this order: find its set.
      if (!(e.name === 'CardError' && e.swHex === '9A32')) throw e;
      const s = app.psd.licenses().slots.find((x) => x.license === f.license);
      if (!s) throw e;
      installed = { slot: s.slot, keyId: s.keyId, license: s.license };
    }
    await save();
    saveJson(pendingLicenseKey(id), null);
    progress(`4/4 the PSD checked both signatures and created the register set: license ${installed.license} in slot ${installed.slot} (key ${installed.keyId})`);
    const r = app.psd.registers(installed.slot);
    notice(`License ${installed.license} at ${r.origin} installed in slot ${installed.slot}, valid until ${f.not_after}. Its balance is ${r.dr}: refill it like any set.`, '', 'ok');
  } catch (e) {
    const resumable = e instanceof TypeError || (e instanceof BackOfficeError && e.detail.code === 'service_unavailable');
    if (!resumable) saveJson(pendingLicenseKey(id), null);
    else e.hint = `The order ${pending.txn} is kept: the next request finishes it first, with the same ID.`;
    const li = $('license-steps').lastChild;
    if (li && li.dataset.state === 'busy') li.dataset.state = 'failed';
    progress(`${resumable ? 'interrupted' : 'refused'}: ${describe(e, { registers: app.registers, info: app.info }).text}`, 'failed');
    throw e;
  }
}

/** Offers `bytes` as a file download named `name`. */
function download(bytes, name) {
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// Fig. 5: the set leaves the PSD for a file. Two phases, as `openpsd license export`: the
// PSD freezes the set and seals it; the page keeps a copy of the sealed bytes (this
// browser's localStorage) and downloads the file; only then does the PSD free the slot.
// Run again on a frozen set, it answers the same bytes and finishes.
async function doExport(slot) {
  const id = app.meta.deviceId;
  const progress = stepList('license-steps');
  const blob = app.psd.exportPrepare(slot);
  await save();
  const entry = app.psd.licenses().exports.find((e) => e.preparing && e.slot === slot);
  if (!entry) throw new Error(`the PSD lists no export being prepared for slot ${slot}`);
  const fileName = `license-${entry.license}-${id}-e${entry.epoch}.psdset`;
  progress(`1/3 the PSD froze slot ${slot} (license ${entry.license}) and sealed it: ${blob.length} bytes, DR ${entry.dr}`);
  const kept = loadJson(exportsKey(id), []).filter((e) => e.fileName !== fileName);
  kept.push({ fileName, blob: bytesToHex(blob), license: entry.license, epoch: entry.epoch, dr: entry.dr });
  saveJson(exportsKey(id), kept);
  download(blob, fileName);
  progress(`2/3 saved as ${fileName} (a copy stays in this browser until it is imported)`);
  const epoch = app.psd.exportCommit(slot, blob);
  await save();
  progress(`3/3 the PSD freed slot ${slot}: export ${epoch} is outstanding until the file comes back`);
  notice(`License ${entry.license} exported to ${fileName} (DR ${entry.dr}). This file is the money: keep it. Only this PSD can import it, once.`, '', 'ok');
}

async function doImport(file) {
  const id = app.meta.deviceId;
  const bytes = new Uint8Array(await file.arrayBuffer());
  const slot = app.psd.importSet(bytes);
  await save();
  const hex = bytesToHex(bytes);
  saveJson(exportsKey(id), loadJson(exportsKey(id), []).filter((e) => e.blob !== hex));
  $('import-file').value = '';
  const r = app.psd.registers(slot);
  notice(`License ${r.license} is back in slot ${slot} (DR ${r.dr}). ${file.name} is spent now: it can never be imported again.`, '', 'ok');
}

// ---------------------------------------------------------------- start over

// The sealed record `name` as stored (ciphertext and IV, base64), read from the storage
// module's IndexedDB without opening it; null when there is none.
async function rawSealed(name) {
  const p = (req) => new Promise((res, rej) => { req.onsuccess = () => res(req.result); req.onerror = () => rej(req.error); });
  const db = await p(indexedDB.open('openpsd'));
  try {
    for (const storeName of db.objectStoreNames) {
      const rec = await p(db.transaction(storeName, 'readonly').objectStore(storeName).get(name));
      if (rec && rec.ct && rec.iv) {
        const b64 = (u8) => btoa(String.fromCharCode(...u8));
        return { store: storeName, version: rec.v, iv: b64(new Uint8Array(rec.iv)), ct: b64(new Uint8Array(rec.ct)) };
      }
    }
    return null;
  } finally {
    db.close();
  }
}

// Step 1: everything this page holds for the device, as one JSON file.
async function downloadBackup() {
  await app.saving;
  const id = app.meta.deviceId;
  const r = app.psd.registers(SET);
  const backup = {
    kind: 'openpsd web demo backup',
    version: 1,
    made_at: new Date().toISOString(),
    device: { id, account: app.meta.accountId, key_id: app.info.keyId, public_key: app.info.publicKey },
    registers: { currency: CURRENCY, dr: r.dr, ar: r.ar, control_sum: r.controlSum, pieces: r.pieces, refills: r.refills, license: r.license, origin: r.origin },
    licenses: app.psd.licenses(),
    purse: app.purse ? app.purse.info() : null,
    history: loadJson(historyKey(id), []),
    transfers: loadJson(transfersKey(id), []),
    license_files: loadJson(exportsKey(id), []),
    pending: { refill: loadJson(pendingRefillKey(id), null), license: loadJson(pendingLicenseKey(id), null) },
    sealed: { psd: await rawSealed(STATE_NAME), purse: await rawSealed(PURSE_STATE_NAME) },
  };
  const name = `openpsd-backup-${id}-${today()}.json`;
  download(new TextEncoder().encode(JSON.stringify(backup, null, 2) + '\n'), name);
  $('reset-backup-done').textContent = `Saved as ${name}.`;
  $('reset-start').disabled = false;
}

// Step 2: what will be lost, said before it is.
function askStartOver() {
  const r = app.psd.registers(SET);
  const purse = app.purse ? ` The purse card ${app.purse.info().cardId} (balance ${CURRENCY} ${app.purse.info().balance}) is deleted with it.` : '';
  const pending = loadJson(pendingRefillKey(app.meta.deviceId), null);
  const unfinished = pending ? ` An interrupted refill of ${CURRENCY} ${amountText(pending.amount)} (transaction ${pending.txn}) is not finished: Refill first to finish it.` : '';
  $('reset-confirm-text').textContent = `Delete meter ${app.meta.deviceId} from this browser? It still holds ${CURRENCY} ${r.dr} of postage, which is lost unless the back office refunds it.${purse}${unfinished} This cannot be undone.`;
  $('reset-confirm').hidden = false;
  $('reset-start').hidden = true;
  $('reset-no').focus();
}

function cancelStartOver() {
  $('reset-confirm').hidden = true;
  $('reset-start').hidden = false;
  actionAt = $('reset-start').parentElement;
  notice('Cancelled: nothing was deleted.', '', 'ok');
}

// Step 3: the sealed records and this device's page records gone; the page reloads to a
// clean start (the create form).
async function startOver() {
  await app.saving;
  const id = app.meta.deviceId;
  await app.store.remove(STATE_NAME);
  await app.store.remove(PURSE_STATE_NAME);
  for (const k of [historyKey(id), pendingRefillKey(id), pendingLicenseKey(id), exportsKey(id), transfersKey(id), senderKey(id),
    `openpsd.ca.${id}`, `openpsd.postmark.pending.${id}`, `openpsd.cert.tables.${id}`]) {
    localStorage.removeItem(k);
  }
  saveJson(metaKey, null);
  location.reload();
}

// ---------------------------------------------------------------- start-up

function showDevice() {
  $('create').hidden = true;
  show('device', 'refill', 'frank', 'purse', 'licenses', 'certificates', 'reset');
  const sender = loadJson(senderKey(app.meta.deviceId), null);
  if (sender && !$('frank-from').value) $('frank-from').value = sender.join('\n');
  fillRates();
}

function fatal(text, err) {
  $('fatal-text').textContent = text;
  show('fatal');
  status('The stored device cannot be opened.', 'fatal');
  if (err) console.error(err);
}

async function start() {
  $('frank-date').value = today();
  fillRates();
  initLabelTools();
  try {
    app.wasm = await import('/pkg/openpsd.js');
    // The module's wide-arithmetic build where the browser has those instructions
    // (wasm/API.md § Wide arithmetic); the plain one elsewhere, and whenever the wide one
    // cannot be had (a package built without it, a failed fetch or compile).
    try {
      const { moduleUrl } = await import('/pkg/wide.js');
      await app.wasm.default({ module_or_path: moduleUrl() });
    } catch (e) {
      console.warn('wide-arithmetic module not loaded; using the plain one', e);
      await app.wasm.default();
    }
  } catch (e) {
    status('The PSD module (wasm package) did not load: build it with `bash scripts/demo.sh`.', 'error');
    notice('The wasm package is missing or failed to load.', String(e));
    return;
  }
  try {
    const storage = await import('/pkg/storage.js');
    app.store = await storage.openStorage('openpsd');
  } catch (e) {
    status('IndexedDB storage is not available in this browser profile.', 'error');
    notice('Cannot open the sealed storage (IndexedDB / WebCrypto).', String(e));
    return;
  }

  let saved;
  try {
    saved = await app.store.loadSealed(STATE_NAME);
  } catch (e) {
    fatal(`The sealed device record in this browser was changed or damaged and does not open (${e.name}: ${e.message}). It was not modified.`, e);
    return;
  }
  if (saved) {
    try {
      app.psd = app.wasm.Psd.restore(saved, randomBytes(32), today());
    } catch (e) {
      fatal(`The sealed device record opens but is not a PSD state (${e.name}: ${e.message}). It was not modified.`, e);
      return;
    }
    app.info = app.psd.info();
    try {
      const purseState = await app.store.loadSealed(PURSE_STATE_NAME);
      if (purseState) app.purse = app.wasm.Purse.restore(purseState, randomBytes(32), today());
    } catch (e) {
      notice(`The sealed purse record does not open (${e.name}: ${e.message}); it was not modified.`, e.name);
    }
    const meta = loadJson(metaKey, null);
    app.meta = meta && meta.deviceId === app.info.deviceId
      ? meta
      : { deviceId: app.info.deviceId, accountId: null, registered: false };
    showDevice();
    if (!app.meta.registered) {
      try {
        await register();
      } catch (e) {
        refusal(e);
      }
    }
    await render();
    status(`Device ${app.info.deviceId} restored from sealed storage.`, 'ready');
    if (app.meta.legacyRefill) offerStartOver();
  } else {
    show('create');
    status('No device in this browser yet: create one.', 'ready');
  }
}

// ---------------------------------------------------------------- the post office

const VERDICT_TEXT = {
  accepted: 'Accepted: the signature is the device\'s and this piece was not seen before.',
  duplicate: 'Duplicate: this label was scanned before — the same piece of postage used twice.',
  conflict: 'Conflict: another label with this piece number was seen — the meter was copied or restored.',
  anomaly: 'Accepted with an anomaly: the registers do not follow from the device\'s other pieces or its payments.',
  invalid: 'Invalid: not a genuine indicium.',
  unreadable: 'Unreadable: no label code could be read in this image.',
};

// The demo's web listener takes request bodies up to 64 KiB and the image travels in hex:
// a larger file would get a bare 413, so the page says it in words first.
const MAX_SCAN_FILE = 32_000;

async function doVerifyLabel(file) {
  if (file.size > MAX_SCAN_FILE) {
    throw new Error(`This image is ${Math.ceil(file.size / 1000)} KB; the demo's post office takes images up to ${MAX_SCAN_FILE / 1000} KB. Crop it to the label's code, or save it in grey or at a lower resolution.`);
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  const v = await call('POST', '/demo/v1/labels', { image: bytesToHex(bytes) });
  const what = VERDICT_TEXT[v.verdict] || v.verdict;
  const piece = v.device_id
    ? ` PSD ${v.device_id}, piece ${v.piece}, postage ${amountText(v.postage)}.`
    : '';
  const reason = v.reason && v.verdict !== 'accepted' ? ` (${v.reason})` : '';
  const out = $('verify-result');
  out.textContent = `${what}${piece}${reason}`;
  out.dataset.verdict = v.verdict;
}

// ---------------------------------------------------------------- wiring

$('create-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy('Creating the device…', () => createDevice($('create-origin').value.trim()));
});
$('refill-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy('Refilling through the meter server…', () => doRefill($('refill-amount').value));
});
$('inspect-button').addEventListener('click', () => busy('Inspection…', doInspect));
$('frank-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy('Issuing the indicium…', doFrank);
});
$('frank-rate').addEventListener('change', fillRates);
$('frank-weight').addEventListener('input', fillRates);
for (const id of ['history-q', 'history-from', 'history-to', 'history-min', 'history-max']) {
  $(id).addEventListener('input', () => { if (app.psd) renderHistory(); });
}
$('history-search').addEventListener('submit', (ev) => ev.preventDefault());
$('history-search').addEventListener('reset', () => setTimeout(() => { if (app.psd) renderHistory(); }));
$('history-csv').addEventListener('click', downloadHistoryCsv);
$('reset-backup').addEventListener('click', () => downloadBackup().catch(refusal));
$('reset-start').addEventListener('click', askStartOver);
$('reset-no').addEventListener('click', cancelStartOver);
$('reset-yes').addEventListener('click', () => busy('Deleting this meter…', startOver));
$('verify-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const file = $('verify-file').files[0];
  if (file) busy('Verifying the label…', () => doVerifyLabel(file));
});
$('fatal-delete').addEventListener('click', async () => {
  if (!confirm('Delete the stored device? Its registers and any value in it are lost.')) return;
  await app.store.remove(STATE_NAME);
  saveJson(metaKey, null);
  location.reload();
});
$('purse-create-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy('Creating the purse card…', () => createPurse($('purse-new-pin').value));
});
$('purse-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy('Moving value to the purse…', doTransfer);
});

$('license-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy('Requesting a license…', () => doLicenseRequest($('license-origin').value));
});
$('import-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const file = $('import-file').files[0];
  if (file) busy('Importing the register set…', () => doImport(file));
});

start().catch((e) => {
  status(`Start-up failed: ${e.message}`, 'error');
  refusal(e);
});

certs = initCertificates({ app, busy, notice, save });
initOnline({ app });
