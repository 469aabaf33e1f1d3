// The Certificates tab (seed 004, the certificate meter; docs/certmeter.md § The browser):
// rate tables, a postmark key certified by the back office's CA, postmarks of files hashed in
// this page (never uploaded) as RFC 3161 tokens, their verification, revocation.
//
// The certificate meter's commands live in a second wasm module (target/wasm-pkg/cert/web,
// served at /pkg/cert/), loaded only when the tab is opened, so the main module keeps its
// size budget (wasm/API.md). It is the same PSD: each operation restores the page's PSD state
// into the second module's Psd, runs there, and the page's PSD is restored from the state
// it leaves, which is sealed before any output is shown (the money rule: a charge is stored
// before its output is handed out).
//
// The same steps as the CLI (host/src/cert_commands.rs, revoke_commands.rs) and the same
// meter routes, through the web listener's proxy:
//   GET  /v1/devices/{id}/updates          rate tables + trust anchors -> LOAD RATE TABLE / LOAD TRUST ANCHOR
//   GENERATE KEY; POST /v1/certificates    -> certificate, CA certificate; INSTALL KEY CERTIFICATE
//   ISSUE POSTMARK (the file's SHA-256)    -> compact postmark, expanded in the module to the .tst
//   REVOCATION REQUEST; POST /v1/revocations -> order; REVOKE KEY; POST /v1/revocations/confirmations
//   GET  /v1/devices/{id}/revocations      orders the CA forced (an operator revoked a
//                                          certificate) -> REVOKE KEY; POST .../confirmations,
//                                          before every refill and inspection and when the
//                                          tab opens (host/src/refill.rs `apply_revocations`)
//
// A postmark's transaction ID is the page's (crypto.getRandomValues), kept in localStorage
// with the document's SHA-256 before ISSUE POSTMARK and dropped only once the output is
// shown: a postmark charged whose output was lost (an expansion or a read failing after the
// PSD committed, the page closed or reloaded) is finished by re-issuing it with the same ID,
// which the PSD answers with the same bytes, charged once. The PSD keeps only its last
// paid service for such a retry, so an unfinished postmark is finished before anything else
// this tab asks of the PSD.

import { call } from './meter.js';
import { describe } from './messages.js';
import { bytesToHex, hexToBytes, randomBytes, today } from './util.js';

const $ = (id) => document.getElementById(id);
const caKey = (id) => `openpsd.ca.${id}`;
const pendingPostmarkKey = (id) => `openpsd.postmark.pending.${id}`;
const CERT_MODULE = '/pkg/cert/openpsd.js';

/** PEM of DER bytes. */
function pem(label, der) {
  let bin = '';
  for (const b of der) bin += String.fromCharCode(b);
  const b64 = btoa(bin).replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function fileLink(a, bytes, name, type) {
  if (a.href) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(new Blob([bytes], { type }));
  a.download = name;
}

function loadPending(id) {
  try {
    return JSON.parse(localStorage.getItem(pendingPostmarkKey(id)) || 'null');
  } catch {
    return null;
  }
}

function savePending(id, pending) {
  if (pending) localStorage.setItem(pendingPostmarkKey(id), JSON.stringify(pending));
  else localStorage.removeItem(pendingPostmarkKey(id));
}

const REASONS = {
  unspecified: 'no reason given', keyCompromise: 'the key may be compromised', cACompromise: 'the CA was compromised',
  affiliationChanged: 'the account changed', superseded: 'replaced by a newer certificate',
  cessationOfOperation: 'the device was taken out of service', privilegeWithdrawn: 'the right to postmark was withdrawn',
};

async function sha256(file) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', await file.arrayBuffer()));
}

/**
 * Wires the tab. ctx: {app, busy(what, fn), notice(text, code, kind), save(), render()}.
 * app.psd is the page's PSD (main module), app.wasm the main module's exports.
 */
export function initCertificates(ctx) {
  const { app, busy, notice, save } = ctx;
  const tab = { cert: null, info: null, loadMs: 0, bytes: 0 };

  const steps = (text, state = 'done') => {
    const li = document.createElement('li');
    li.textContent = text;
    li.dataset.state = state;
    $('cert-steps').append(li);
  };

  // One operation on the certificate meter: the page's PSD state into the second module,
  // `fn(psd)` there, then its state sealed and the page's PSD restored from it (also after a
  // refusal or a lost connection: a pending key generated before it is kept).
  async function withCertPsd(fn) {
    const psd = tab.cert.Psd.restore(app.psd.saveState(), randomBytes(32), today());
    try {
      psd.setNow(Math.floor(Date.now() / 1000));
      return await fn(psd);
    } finally {
      const state = psd.saveState();
      psd.free();
      const main = app.wasm.Psd.restore(state, randomBytes(32), today());
      app.psd.free();
      app.psd = main;
      await save();
    }
  }

  function fee(service) {
    const t = tab.info && tab.info.tables.find((x) => x.inEffect);
    const f = t && t.fees.find((x) => x.service === service);
    return f ? f.fee : null;
  }

  function render() {
    const info = tab.info;
    const rows = $('cert-rates');
    rows.replaceChildren();
    for (const t of info.tables) {
      const tr = document.createElement('tr');
      tr.dataset.version = t.version;
      tr.dataset.inEffect = t.inEffect;
      for (const c of [t.inEffect ? '✓' : '', t.version, t.effective,
        t.fees.map((f) => `${f.service.replace('_', ' ')} ${f.fee}`).join(', ')]) {
        const td = document.createElement('td');
        td.textContent = c;
        tr.append(td);
      }
      rows.append(tr);
    }
    if (info.tables.length === 0) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 4;
      td.textContent = 'No rate table yet: the meter server hands them out (refill, inspection, or this tab).';
      tr.append(td);
      rows.append(tr);
    }
    $('cert-fees-due').textContent = info.feesDue !== '0.00'
      ? `Fees due: ${info.feesDue} (paid services wait until the next refill settles them).`
      : `Postmarks issued by this PSD: ${info.postmarks}.`;
    const slots = $('cert-slots');
    slots.replaceChildren();
    for (const s of info.slots) {
      const tr = document.createElement('tr');
      tr.dataset.slot = s.slot;
      tr.dataset.state = s.state;
      for (const c of [s.slot, s.purpose, s.state, s.keyId, s.feePaid]) {
        const td = document.createElement('td');
        td.textContent = c;
        tr.append(td);
      }
      const td = document.createElement('td');
      if (s.state === 'active') {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'secondary';
        b.textContent = 'Revoke…';
        b.dataset.slot = s.slot;
        b.addEventListener('click', () => revoke(s));
        td.append(b);
      }
      tr.append(td);
      slots.append(tr);
    }
  }

  function refresh(psd) {
    tab.info = psd.certInfo();
    render();
  }

  /** Shows the fee and waits for the mailer's answer (before anything is asked of the PSD). */
  function confirmFee(text) {
    return new Promise((resolve) => {
      $('cert-confirm-text').textContent = text;
      $('cert-confirm').hidden = false;
      const done = (yes) => {
        $('cert-confirm').hidden = true;
        $('cert-confirm-yes').onclick = null;
        $('cert-confirm-no').onclick = null;
        resolve(yes);
      };
      $('cert-confirm-yes').onclick = () => done(true);
      $('cert-confirm-no').onclick = () => done(false);
    });
  }

  /** The second module, loaded once (also by a refill that has revocation orders to apply). */
  async function loadModule() {
    if (!tab.cert) {
      const t0 = performance.now();
      const mod = await import(CERT_MODULE);
      const url = new URL('openpsd_bg.wasm', new URL(CERT_MODULE, location.href));
      const resp = await fetch(url);
      const bytes = await resp.arrayBuffer();
      await mod.default({ module_or_path: bytes });
      tab.cert = mod;
      tab.bytes = bytes.byteLength;
      tab.loadMs = performance.now() - t0;
      $('cert-module').textContent = `certificate meter module loaded (${(tab.bytes / 1024).toFixed(0)} KB, ${tab.loadMs.toFixed(0)} ms)`;
    }
  }

  async function open() {
    await loadModule();
    $('cert-steps').replaceChildren();
    await withCertPsd(async (psd) => {
      // The meter server's rate tables and trust anchors (what a refill or inspection
      // hands the CLI), loaded; what the PSD holds is skipped.
      const u = await call('GET', `/v1/devices/${app.meta.deviceId}/updates`);
      const [tables, anchors] = psd.loadUpdates(u.rate_tables || [], u.anchors || []);
      if (tables || anchors) steps(`loaded ${tables} rate table(s) and ${anchors} trust anchor(s) from the meter server`);
      refresh(psd);
    });
    if (tab.info.tables.length) localStorage.setItem(tablesKey(app.meta.deviceId), '1');
    $('cert-body').hidden = false;
    $('cert-open').textContent = 'Reload from the meter server';
    showPending();
    await finishPendingPostmark();
    const r = await applyRevocationOrders(steps);
    if (r.applied) notice(revokedText(r.applied), '', 'ok');
  }

  // ---------------------------------------------------------------- rate tables at contact

  /** Set once the PSD holds a rate table (the main module cannot read them). */
  const tablesKey = (id) => `openpsd.cert.tables.${id}`;

  /**
   * Before a refill's or an inspection's audit: a PSD that holds a rate table gets the
   * meter server's newer ones first, since the meter refuses the audit of a PSD holding an
   * older table than the one in effect (`409 rate_table_stale`, docs/rates.md), as
   * `openpsd refill` does. A PSD that never held one is not asked (it sells no paid service).
   */
  async function loadTablesBeforeContact(say) {
    const id = app.meta && app.meta.deviceId;
    if (!id || localStorage.getItem(tablesKey(id)) !== '1') return;
    const u = await call('GET', `/v1/devices/${id}/updates`);
    await loadModule();
    const [tables, anchors] = await withCertPsd(async (psd) => {
      const n = psd.loadUpdates(u.rate_tables || [], u.anchors || []);
      refresh(psd);
      return n;
    });
    if (tables || anchors) say(`The meter server's newer fees reached the PSD: ${tables} rate table(s) and ${anchors} trust anchor(s) loaded.`);
  }

  // ---------------------------------------------------------------- forced revocation

  const revokedText = (n) => `The back office revoked ${n === 1 ? 'a certificate' : `${n} certificates`} of this PSD: `
    + `the key${n === 1 ? ' was' : 's were'} erased from the PSD and the certificate authority told (see the steps).`;

  /**
   * The device's pending revocation orders (`GET /v1/devices/{id}/revocations`), each
   * applied on the PSD (REVOKE KEY, its fee paid from `set` or owed) and its confirmation
   * posted, by rising counter, as the host library's `apply_revocations`. `say(text, state)`
   * tells the customer what happened, in plain words. One pass: an order the PSD refuses
   * (9A44, an older counter than one applied, a bad signature: nothing changes on the PSD)
   * is shown and skipped; the meter decides whether a refill goes on. The same order
   * applied again answers the same confirmation, so an interrupted pass is finished by the
   * next. Only the order's existing fields are read (`counter`, `serial`, `slot`, `reason`,
   * `order`); others are ignored. Returns {applied, refused}.
   */
  async function applyRevocationOrders(say, set = 0) {
    const id = app.meta && app.meta.deviceId;
    if (!id) return { applied: 0, refused: 0 };
    const p = await call('GET', `/v1/devices/${id}/revocations`);
    const orders = (Array.isArray(p.orders) ? p.orders : [])
      .filter((o) => o && typeof o.order === 'string' && Number.isSafeInteger(o.counter))
      .sort((a, b) => a.counter - b.counter);
    if (orders.length === 0) return { applied: 0, refused: 0 };
    await loadModule();
    // A pending postmark first (it is shown before anything else changes in the PSD). If it
    // cannot be finished now, the orders are applied all the same: REVOKE KEY keeps the
    // PSD's last postmark for its retry and the retired slot's certificate its expansion needs.
    try {
      await finishPendingPostmark();
    } catch (e) {
      say(`The interrupted postmark could not be finished now (${describe(e).text}); it stays kept for later.`, 'failed');
    }
    say(`The back office has revoked ${orders.length === 1 ? 'a certificate' : `${orders.length} certificates`} of this PSD: applying the order${orders.length === 1 ? '' : 's'} now.`);
    let applied = 0;
    let refused = 0;
    for (const o of orders) {
      const what = `certificate ${o.serial} (key slot ${o.slot}; ${REASONS[o.reason] || o.reason})`;
      let r;
      try {
        r = await withCertPsd(async (psd) => {
          const out = psd.revokeKey(o.order, set);
          refresh(psd);
          return out;
        });
      } catch (e) {
        if (e && e.name === 'CardError') {
          refused += 1;
          say(`Revocation order ${o.counter} for ${what} could not be applied: the PSD refused it (${e.swHex}: ${describe(e).text}). `
            + 'Nothing changed on the PSD; the order stays open at the back office (ask the operator to close it).', 'failed');
          continue;
        }
        throw e;
      }
      // Applied and sealed; the confirmation goes to the CA through the meter (sent again
      // by the next pass if it is lost: the PSD answers the same confirmation).
      await call('POST', '/v1/revocations/confirmations', { device_id: id, confirmation: r.confirmation });
      applied += 1;
      say(`Revocation order ${o.counter} applied: the back office revoked ${what}; the PSD erased that key `
        + `(fee ${r.fee} ${r.outcome === 'paid' ? 'paid' : 'owed until the next refill'}), and the certificate authority has the PSD's confirmation.`);
    }
    return { applied, refused };
  }

  // ---------------------------------------------------------------- postmarks

  /** Shows a postmark's output (after its charge is sealed), then drops the pending record. */
  function showPostmark(out, base, ms) {
    const ca = localStorage.getItem(caKey(app.meta.deviceId));
    fileLink($('postmark-tst'), out.token, `${base}.tst`, 'application/timestamp-reply');
    fileLink($('postmark-cert'), pem('CERTIFICATE', out.certificate), `${base}.postmark.pem`, 'application/x-pem-file');
    if (ca) fileLink($('postmark-ca'), pem('CERTIFICATE', hexToBytes(ca)), 'ca.pem', 'application/x-pem-file');
    $('postmark-ca').hidden = !ca;
    $('postmark-openssl').textContent = `openssl ts -verify -data ${base} -in ${base}.tst -token_in -CAfile ca.pem -untrusted ${base}.postmark.pem`;
    const when = new Date(out.fields.genTime * 1000).toISOString().replace('.000Z', 'Z');
    $('postmark-text').textContent = `Postmark ${out.fields.serial} of device ${out.fields.deviceId} at ${when}; fee ${out.fields.fee} `
      + `(rate table ${out.fields.tableVersion}); descending register ${out.registers.dr}. Token ${out.token.length} bytes, compact ${out.compact.length} bytes.`;
    $('postmark-result').dataset.ms = ms.toFixed(2);
    $('postmark-result').dataset.serial = out.fields.serial;
    $('postmark-result').dataset.transaction = out.transactionId;
    $('postmark-code').innerHTML = app.wasm.dataMatrixSvg(out.compact, 3);
    $('postmark-serial').textContent = out.fields.serial;
    $('postmark-time').textContent = when;
    $('postmark-device').textContent = out.fields.deviceId;
    $('postmark-digest').textContent = out.fields.digest;
    $('postmark-result').hidden = false;
    savePending(app.meta.deviceId, null);
    showPending();
  }

  function showPending() {
    const p = app.meta && loadPending(app.meta.deviceId);
    $('postmark-pending').hidden = !p;
    $('postmark-pending-text').textContent = p
      ? `The postmark of "${p.name}" (transaction ${p.txn}) was charged but its token was not shown yet. `
        + 'Finish it: the PSD gives the same postmark again, without charging again.'
      : '';
  }

  /**
   * ISSUE POSTMARK with the pending record's transaction ID, sealed, then shown. Throws on
   * failure with the record kept when the PSD committed (its postmark counter rose past the
   * one before), dropped when it did not (nothing was charged).
   */
  async function issueAndShow(pending) {
    let out;
    let ms = 0;
    let charged = false;
    try {
      await withCertPsd(async (psd) => {
        const t0 = performance.now();
        try {
          out = psd.issuePostmark(hexToBytes(pending.digest), pending.txn, pending.set);
        } finally {
          ms = performance.now() - t0;
          refresh(psd);
          charged = tab.info.postmarks > pending.postmarksBefore;
        }
      });
    } catch (e) {
      if (!charged) savePending(app.meta.deviceId, null);
      else keptHint(e, pending);
      showPending();
      throw e;
    }
    // Sealed (withCertPsd) before the output is offered.
    try {
      showPostmark(out, pending.name, ms);
    } catch (e) {
      keptHint(e, pending);
      showPending();
      throw e;
    }
    return { out, ms };
  }

  function keptHint(e, pending) {
    if (e && typeof e === 'object') {
      e.hint = `Postmark ${pending.postmarksBefore + 1} of "${pending.name}" is paid but its token was not shown: `
        + '"Finish the postmark" (or opening this tab again) makes it again with the same transaction ID, not charged again.';
    }
  }

  /** A postmark charged and not shown (output lost, page reloaded) is finished first. */
  async function finishPendingPostmark() {
    const pending = app.meta && loadPending(app.meta.deviceId);
    if (!pending) return false;
    await loadModule();
    const info = await withCertPsd(async (psd) => psd.certInfo());
    if (!(info.postmarks > pending.postmarksBefore)) {
      // The page stopped before the PSD's charge was sealed: nothing was charged.
      savePending(app.meta.deviceId, null);
      showPending();
      steps(`the interrupted postmark of "${pending.name}" was never charged: postmark the file again if you still want it`);
      return false;
    }
    steps(`finishing the postmark of "${pending.name}" (transaction ${pending.txn}): the PSD answers the same postmark, not charged again`);
    const { out } = await issueAndShow(pending);
    notice(`Postmark ${out.fields.serial} of "${pending.name}" finished: the same postmark as charged (${out.fields.fee}, once). Download the .tst below.`, '', 'ok');
    return true;
  }

  /** An unfinished postmark is finished before anything else is asked of the PSD here. */
  async function pendingFirst() {
    if (!loadPending(app.meta.deviceId)) return false;
    await busy('Finishing the interrupted postmark…', async () => {
      $('cert-steps').replaceChildren();
      await finishPendingPostmark();
    });
    return true;
  }

  async function requestCertificate() {
    if (await pendingFirst()) return;
    const f = fee('certificate');
    const regs = app.psd.registers(0);
    const active = tab.info.slots.find((s) => s.purpose === 'postmark' && s.state === 'active');
    const ok = await confirmFee(`${active ? 'Replace the active postmark key with a new one: ' : ''}`
      + `a postmark key is generated inside the PSD and certified by the back office's CA in your account's name. `
      + `Fee at install: ${f === null ? 'none listed (the PSD refuses: 9A40)' : f} from set 0 (descending register ${regs.dr}).`);
    if (!ok) return;
    await busy('Requesting a postmark certificate…', () => withCertPsd(async (psd) => {
      $('cert-steps').replaceChildren();
      steps('1/3 GENERATE KEY: the key is made inside the PSD and attested with the device key');
      // A pending key of an interrupted request is attested again (no second key); with
      // none pending a new key is made (an active one is retired when the new one installs).
      const g = psd.generateKey('postmark', false);
      refresh(psd);
      steps(`2/3 the CA certifies slot ${g.slot}'s key (generation ${g.generation}); the subject comes from your account`);
      const answer = await call('POST', '/v1/certificates', { device_id: app.meta.deviceId, attestation: g.attestation });
      localStorage.setItem(caKey(app.meta.deviceId), answer.ca_certificate);
      steps('3/3 INSTALL KEY CERTIFICATE: checked by the PSD against the CA it trusts, fee paid, key active');
      const inst = psd.installKeyCertificate(g.slot, hexToBytes(answer.certificate), 0);
      refresh(psd);
      steps(`certificate ${answer.serial} installed on slot ${g.slot}; fee ${inst.fee}; descending register ${inst.registers.dr}`);
      notice(`Postmark certificate ${answer.serial} installed (fee ${inst.fee}).`, '', 'ok');
    }));
  }

  async function postmark(file) {
    // An unfinished postmark first (the PSD keeps only the last one for a retry).
    if (await pendingFirst()) return;
    const digest = await sha256(file);
    const f = fee('postmark');
    const regs = app.psd.registers(0);
    const ok = await confirmFee(`Postmark "${file.name}" (SHA-256 ${bytesToHex(digest).slice(0, 16)}…; the file stays in this page). `
      + `Fee: ${f === null ? 'none listed (the PSD refuses: 9A40)' : f} from set 0 (descending register ${regs.dr}).`);
    if (!ok) return;
    await busy('Postmarking…', async () => {
      // The page's transaction ID, kept with the digest before the PSD is asked: a postmark
      // charged whose output is lost is made again with it, charged once.
      const pending = {
        txn: bytesToHex(randomBytes(8)), digest: bytesToHex(digest), name: file.name, set: 0,
        postmarksBefore: tab.info.postmarks,
      };
      savePending(app.meta.deviceId, pending);
      const { out, ms } = await issueAndShow(pending);
      notice(`Postmark ${out.fields.serial} issued for ${out.fields.fee} (${ms.toFixed(1)} ms in the page). Download the .tst below.`, '', 'ok');
    });
  }

  async function verify(file, tokenFile) {
    await busy('Verifying the postmark…', async () => {
      const ca = localStorage.getItem(caKey(app.meta.deviceId));
      if (!ca) throw new Error('No CA certificate in this browser yet: request a postmark certificate first (the CA sends its certificate with it).');
      const digest = await sha256(file);
      const token = new Uint8Array(await tokenFile.arrayBuffer());
      const v = tab.cert.verifyPostmark(token, digest, hexToBytes(ca));
      const out = $('pmverify-result');
      out.dataset.valid = v.valid;
      out.textContent = v.valid
        ? `Valid: postmark ${v.fields.serial} of device ${v.fields.deviceId} at ${new Date(v.fields.genTime * 1000).toISOString()}, `
          + `for "${file.name}" (signature, certificate under the CA, timeStamping use; revocation not checked here).`
        : `NOT valid for "${file.name}": ${v.error}`;
    });
  }

  async function revoke(slot) {
    if (await pendingFirst()) return;
    const f = fee('revocation');
    const ok = await confirmFee(`Revoke the ${slot.purpose} key of slot ${slot.slot} (key ${slot.keyId}): the CA revokes its certificate at once `
      + `(CRL and OCSP), the PSD erases the key. Fee: ${f === null ? 'none' : f}, paid from set 0 or owed until the next refill.`);
    if (!ok) return;
    await busy('Revoking…', async () => {
      $('cert-steps').replaceChildren();
      // Orders the CA forced on the device first (as `openpsd cert revoke`): they carry lower
      // counters than the one asked for now, and the PSD applies rising counters only.
      const forced = await applyRevocationOrders(steps);
      const now = tab.info.slots.find((s) => s.slot === slot.slot);
      if (forced.applied && !(now && now.state === 'active' && now.keyId === slot.keyId)) {
        notice(`Slot ${slot.slot}'s key was revoked by the back office already: the order is applied.`, '', 'ok');
        return;
      }
      await revokeOwn(slot);
    });
  }

  async function revokeOwn(slot) {
    await withCertPsd(async (psd) => {
      steps('1/4 REVOCATION REQUEST: the PSD signs the request with its device key');
      const request = psd.revocationRequest(slot.slot, 'superseded');
      steps('2/4 the CA checks it, revokes the certificate and signs the order');
      const order = await call('POST', '/v1/revocations', { device_id: app.meta.deviceId, request });
      steps('3/4 REVOKE KEY: the PSD retires the key, erases it and pays (or owes) the fee');
      const r = psd.revokeKey(order.order, 0);
      refresh(psd);
      steps('4/4 the confirmation is recorded at the CA');
      await call('POST', '/v1/revocations/confirmations', { device_id: app.meta.deviceId, confirmation: r.confirmation });
      steps(`certificate ${order.certificate.serial} revoked; fee ${r.fee} ${r.outcome}; fees due ${r.feesDue}`);
      notice(`Slot ${r.slot}'s certificate revoked (fee ${r.fee} ${r.outcome}).`, '', 'ok');
    });
  }

  $('cert-open').addEventListener('click', () => busy('Loading the certificate meter…', open));
  $('cert-request').addEventListener('click', () => requestCertificate().catch((e) => notice(describe(e).text, describe(e).code)));
  $('postmark-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const file = $('postmark-file').files[0];
    if (file) postmark(file).catch((e) => notice(describe(e).text, describe(e).code));
  });
  $('postmark-finish').addEventListener('click', () => busy('Finishing the interrupted postmark…', async () => {
    $('cert-steps').replaceChildren();
    await finishPendingPostmark();
  }));
  $('pmverify-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const [file, token] = [$('pmverify-file').files[0], $('pmverify-token').files[0]];
    if (file && token) verify(file, token);
  });

  return {
    /**
     * Before a refill or an inspection: the orders the CA forced on this PSD applied
     * (`say(text, state)` shows each step). Never throws: what could not be done is shown
     * and the refill goes on (the meter decides, as for the CLI).
     */
    async beforeContact(say, set) {
      try {
        await loadTablesBeforeContact(say);
      } catch (e) {
        say(`rate tables not loaded: ${describe(e).text}`, 'failed');
      }
      try {
        const r = await applyRevocationOrders(say, set);
        if (tab.info && !$('cert-body').hidden) render();
        return { ...r, text: r.applied ? revokedText(r.applied) : '' };
      } catch (e) {
        say(`pending revocation orders not applied: ${describe(e).text}`, 'failed');
        return { applied: 0, refused: 0, text: '', error: e };
      }
    },
  };
}
