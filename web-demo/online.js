// The "online meter" tab (seed 001, issue 16 item 6): a meter kept by the data center, with
// nothing installed in this browser. Sign up or log in (the session is an HttpOnly cookie the
// demo server sets: no script here sees the token), pay into the deposit (the demo's payments
// desk), add funds from it to the meter, print labels, read the history the box signed, log
// out. Every call goes to this origin: /dc/v1/... (the data center) and
// /dc/demo/deposits (the payments desk).

import { call } from './meter.js';
import { describe } from './messages.js';
import { bytesToHex, hexToBytes, randomBytes, minorUnits, amountText } from './util.js';
import { fillLabel } from './label.js';
import { boxKey, openTransaction, openLogin } from './boxrecords.js';

const $ = (id) => document.getElementById(id);
/** A print whose answer was not shown yet: its transaction ID is reused by the retry. */
const PENDING = 'openpsd.online.pending';
/** The same for a refill. */
const PENDING_REFILL = 'openpsd.online.pending-refill';
/** The same for a batch: its orders, each with its own transaction ID. */
const PENDING_BATCH = 'openpsd.online.pending-batch';
/** The most pieces the data center makes in one box command (`POST /v1/indicia/batch`). */
const MAX_COPIES = 16;

function say(text, kind = 'info') {
  const out = $('online-result');
  out.textContent = text;
  out.dataset.kind = kind;
}

function refused(e) {
  const d = describe(e);
  say(`${d.text} — ${d.code}`, 'error');
}

export function initOnline(ctx) {
  const { app } = ctx;
  let meter = null;

  function txnId() {
    return bytesToHex(randomBytes(8));
  }

  async function refresh() {
    meter = await call('GET', '/dc/v1/meter');
    const dep = await call('GET', '/dc/v1/deposit');
    $('online-meter-id').textContent = meter.meter_id;
    $('online-balance').textContent = amountText(meter.balance);
    $('online-used').textContent = amountText(meter.used);
    $('online-pieces').textContent = String(meter.pieces);
    $('online-deposit').textContent = amountText(dep.available);
    const hist = await call('GET', '/dc/v1/history');
    // Every record is checked here under the box's key (boxrecords.js), and shown as the
    // record says, not as the data center's row says: a row whose record does not verify,
    // or says something else, is marked as not the box's.
    const key = await boxKey(hist.box_key);
    const rows = $('online-history');
    rows.textContent = '';
    let unverified = 0;
    for (const e of hist.entries.slice().reverse()) {
      const r = await openTransaction(key, e.record);
      const ok = r !== null && r.meterId === meter.meter_id.toLowerCase() && r.sequence === e.sequence
        && r.kind === e.kind && r.amount === e.amount && r.balance === e.balance && r.pieces === e.pieces;
      if (!ok) unverified++;
      const shown = ok ? r : e;
      const tr = document.createElement('tr');
      tr.dataset.verified = String(ok);
      const cells = [String(shown.sequence), shown.kind, amountText(shown.amount), amountText(shown.balance), String(shown.pieces),
        ok ? '✓ the box' : '✗ not the box\'s record'];
      for (const v of cells) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.appendChild(td);
      }
      if (!ok) tr.className = 'bad';
      rows.appendChild(tr);
    }
    // The log-ins the box counted and signed (seed 001's transaction box 42), newest first,
    // each checked the same way; all must name one mailer (this one: the data center picks
    // them by the session).
    const logins = [];
    let mailer = null;
    for (const l of (hist.logins || []).slice().reverse()) {
      const r = await openLogin(key, l.record);
      const ok = r !== null && r.sequence === l.sequence && r.at === l.at && (mailer === null || r.mailerId === mailer);
      if (ok) mailer = r.mailerId;
      else unverified++;
      let when;
      try {
        when = new Date((ok ? r.at : l.at) * 1000).toISOString().slice(0, 16).replace('T', ' ');
      } catch {
        when = `time ${ok ? r.at : l.at}`; // beyond the dates JavaScript can show
      }
      logins.push(`#${ok ? r.sequence : l.sequence} at ${when} UTC${ok ? '' : ' (NOT the box\'s record)'}`);
    }
    $('online-logins').textContent = logins.length
      ? `Your last log-ins, each signed by the box: ${logins.join('; ')}.`
      : 'No log-in signed by the box yet.';
    const check = $('online-verified');
    check.textContent = unverified === 0
      ? `Every record above verifies under the box's key (transactions: ${hist.entries.length}, log-ins: ${logins.length}).`
      : `${unverified} record(s) do NOT verify under the box's key: changed after the box signed them. Do not rely on them.`;
    check.className = unverified === 0 ? 'hint ok' : 'bad';
    $('online-login').hidden = true;
    $('online-meter').hidden = false;
  }

  function showLabel(indiciumHex) {
    const v = fillLabel(app.wasm, hexToBytes(indiciumHex), meter.public_key, "the online meter's key");
    if (!v) {
      say('The data center answered something that is not an indicium.', 'error');
      return;
    }
    $('label').dataset.barcode = indiciumHex;
  }

  async function session(path) {
    const username = $('online-user').value.trim();
    const password = $('online-pass').value;
    await call('POST', path, { username, password });
    $('online-pass').value = '';
    await refresh();
    say(path.endsWith('mailers') ? `Signed up as ${username}: your meter is ready.` : `Logged in as ${username}.`);
  }

  async function payIn() {
    const amount = minorUnits($('online-pay').value);
    if (amount === null) throw new Error('Enter an amount such as 50.00.');
    const d = await call('POST', '/dc/demo/deposits', { amount });
    await refresh();
    say(`Paid ${amountText(amount)} into the deposit: ${amountText(d.available)} available.`);
  }

  async function addFunds() {
    const amount = minorUnits($('online-refill').value);
    if (amount === null) throw new Error('Enter an amount such as 20.00.');
    // As for printing: the same amount again after an answer that did not come is the
    // same refill (its transaction ID kept until the answer is shown), credited once.
    let pending = null;
    try { pending = JSON.parse(localStorage.getItem(PENDING_REFILL)); } catch { pending = null; }
    const order = pending && pending.amount === amount ? pending : { client_txn_id: txnId(), amount };
    localStorage.setItem(PENDING_REFILL, JSON.stringify(order));
    let r;
    try {
      r = await call('POST', '/dc/v1/refills', order);
    } catch (e) {
      // A refusal is final for this ID: the next click is a new refill.
      if (e.name === 'BackOfficeError') localStorage.removeItem(PENDING_REFILL);
      throw e;
    }
    localStorage.removeItem(PENDING_REFILL);
    await refresh();
    say(`Added ${amountText(r.amount)} to the meter: balance ${amountText(r.balance)}.`);
  }

  async function print() {
    const postage = minorUnits($('online-postage').value);
    if (postage === null) throw new Error('Enter the postage, such as 1.45.');
    const destination = $('online-dest').value.trim();
    const copies = Number($('online-copies').value);
    if (!Number.isInteger(copies) || copies < 1 || copies > MAX_COPIES) {
      throw new Error(`Enter 1 to ${MAX_COPIES} copies.`);
    }
    if (copies > 1) return printBatch(postage, destination, copies);
    let pending = null;
    try { pending = JSON.parse(localStorage.getItem(PENDING)); } catch { pending = null; }
    // The same order as one not shown yet: the same transaction ID, so a retry (or a
    // double click) is answered with the same indicium, charged once.
    const same = pending && pending.postage === postage && pending.destination === destination;
    const order = same ? pending : { client_txn_id: txnId(), postage, rate: 1, destination };
    localStorage.setItem(PENDING, JSON.stringify(order));
    const r = await call('POST', '/dc/v1/indicia', order);
    showLabel(r.indicium);
    localStorage.removeItem(PENDING);
    await refresh();
    say(r.reprint
      ? `The same label again (transaction ${r.client_txn_id}): not charged twice.`
      : `Printed ${amountText(r.postage)}: balance ${amountText(r.balance)}.`);
  }

  // Several labels of one postage and destination in one request: the data center makes
  // them in one box command. Each order has its own transaction ID, kept until the labels
  // are shown, so a retry after a lost answer (or a 503 while the box restarts) is answered
  // with the same indicia, charged once; a refusal (4xx) is final and the next click is a
  // new batch.
  async function printBatch(postage, destination, copies) {
    let pending = null;
    try { pending = JSON.parse(localStorage.getItem(PENDING_BATCH)); } catch { pending = null; }
    const same = pending && pending.postage === postage && pending.destination === destination
      && Array.isArray(pending.orders) && pending.orders.length === copies;
    const orders = same ? pending.orders
      : Array.from({ length: copies }, () => ({ client_txn_id: txnId(), postage, rate: 1, destination }));
    localStorage.setItem(PENDING_BATCH, JSON.stringify({ postage, destination, orders }));
    let r;
    try {
      r = await call('POST', '/dc/v1/indicia/batch', { orders });
    } catch (e) {
      if (e.name === 'BackOfficeError' && e.status >= 400 && e.status < 500) localStorage.removeItem(PENDING_BATCH);
      throw e;
    }
    showBatch(r.indicia);
    localStorage.removeItem(PENDING_BATCH);
    await refresh();
    const reprints = r.indicia.filter((i) => i.reprint).length;
    const charged = r.indicia.filter((i) => !i.reprint).reduce((t, i) => t + i.postage, 0);
    const last = r.indicia[r.indicia.length - 1];
    say(reprints === r.indicia.length
      ? `The same ${r.indicia.length} labels again: not charged twice.`
      : `Printed ${r.indicia.length} labels, ${amountText(charged)} charged`
        + `${reprints ? ` (${reprints} of them printed before, not charged again)` : ''}: balance ${amountText(last.balance)}.`);
  }

  // The batch's labels, each verified under the meter's key, in a list; the first one in
  // the label area (and any other on a click).
  function showBatch(indicia) {
    const list = $('online-batch-list');
    list.textContent = '';
    for (const i of indicia) {
      const bytes = hexToBytes(i.indicium);
      const v = app.wasm.verifyIndicium(bytes, meter.public_key);
      const li = document.createElement('li');
      li.dataset.barcode = i.indicium;
      li.dataset.valid = String(Boolean(v.valid));
      li.tabIndex = 0;
      const code = document.createElement('span');
      code.className = 'code';
      code.innerHTML = app.wasm.dataMatrixSvg(bytes, 2);
      const text = document.createElement('span');
      text.textContent = v.fields
        ? `piece ${v.fields.pieces}, ${v.fields.postage} to ${v.fields.destination}: ${v.valid ? 'signature verified' : `NOT valid: ${v.error}`}`
        : 'not an indicium';
      li.append(code, text);
      const open = () => showLabel(i.indicium);
      li.addEventListener('click', open);
      li.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') open(); });
      list.appendChild(li);
    }
    $('online-batch').hidden = indicia.length === 0;
    if (indicia.length) showLabel(indicia[0].indicium);
  }

  async function logOut() {
    // 204 and no body: not `call`, which reads JSON.
    const r = await fetch('/dc/v1/sessions/current', { method: 'DELETE', headers: { 'content-type': 'application/json' } });
    if (!r.ok && r.status !== 401) throw new Error(`log-out answered HTTP ${r.status}`);
    meter = null;
    $('online-batch').hidden = true;
    $('online-batch-list').textContent = '';
    $('online-meter').hidden = true;
    $('online-login').hidden = false;
    say('Logged out.');
  }

  const guard = (what, fn) => async (ev) => {
    if (ev) ev.preventDefault();
    if (ctx.onlineBusy) return;
    ctx.onlineBusy = true;
    say(what);
    try {
      await fn(ev);
    } catch (e) {
      refused(e);
    } finally {
      ctx.onlineBusy = false;
    }
  };

  $('online-signup').addEventListener('click', guard('Signing up…', () => session('/dc/v1/mailers')));
  $('online-login-form').addEventListener('submit', guard('Logging in…', () => session('/dc/v1/sessions')));
  $('online-pay-form').addEventListener('submit', guard('Paying in…', payIn));
  $('online-refill-form').addEventListener('submit', guard('Adding funds…', addFunds));
  $('online-print-form').addEventListener('submit', guard('Printing…', print));
  $('online-logout').addEventListener('click', guard('Logging out…', logOut));

  // Logged in already (the cookie lives 8 hours)?
  refresh().catch(() => {
    $('online-login').hidden = false;
    $('online-meter').hidden = true;
  });
}
