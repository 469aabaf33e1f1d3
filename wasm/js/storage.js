// storage.js - the PSD's saved state at rest in a browser: saveState() bytes sealed with
// AES-256-GCM under a non-extractable WebCrypto key that lives in the same IndexedDB
// database (IndexedDB stores CryptoKey objects by structured clone; script can use the key
// but never read it). A record that does not open is an error, never "nothing saved".
// See wasm/API.md, "State at rest", for what this protects and what it cannot (rollback).

const VERSION = 1;
const KEYS = 'keys';
const STATES = 'states';
const KEY_NAME = 'state-key';
const AAD_PREFIX = 'openpsd-state-v1:';

function stateError(message, cause) {
  const e = new Error(message, cause ? { cause } : undefined);
  e.name = 'StateError';
  return e;
}

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function openDb(name) {
  const r = indexedDB.open(name, 1);
  r.onupgradeneeded = () => {
    const db = r.result;
    if (!db.objectStoreNames.contains(KEYS)) db.createObjectStore(KEYS);
    if (!db.objectStoreNames.contains(STATES)) db.createObjectStore(STATES);
  };
  return request(r);
}

function tx(db, store, mode, fn) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    let result;
    Promise.resolve(fn(t.objectStore(store))).then((v) => { result = v; }, reject);
    t.oncomplete = () => resolve(result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error('IndexedDB transaction aborted'));
  });
}

async function stateKey(db) {
  const existing = await tx(db, KEYS, 'readonly', (s) => request(s.get(KEY_NAME)));
  if (existing) return existing;
  const key = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, [
    'encrypt',
    'decrypt',
  ]);
  try {
    // add() fails if another tab stored a key meanwhile: then use that one.
    await tx(db, KEYS, 'readwrite', (s) => request(s.add(key, KEY_NAME)));
    return key;
  } catch (_) {
    const other = await tx(db, KEYS, 'readonly', (s) => request(s.get(KEY_NAME)));
    if (!other) throw stateError('cannot store the state key in IndexedDB');
    return other;
  }
}

function aad(name) {
  return new TextEncoder().encode(AAD_PREFIX + name);
}

function checkName(name) {
  if (typeof name !== 'string' || name.length === 0) {
    const e = new Error('name: a non-empty string');
    e.name = 'InputError';
    throw e;
  }
}

/**
 * Opens (creating on first use) the sealed store in IndexedDB database `dbName`.
 * @param {string} [dbName]
 */
export async function openStorage(dbName = 'openpsd') {
  const db = await openDb(dbName);
  const key = await stateKey(db);
  return {
    /** Seals `state` (Uint8Array) and stores it under `name`, replacing what was there. */
    async saveSealed(name, state) {
      checkName(name);
      if (!(state instanceof Uint8Array)) {
        const e = new Error('state: a Uint8Array (psd.saveState())');
        e.name = 'InputError';
        throw e;
      }
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const ct = await crypto.subtle.encrypt(
        { name: 'AES-GCM', iv, additionalData: aad(name) },
        key,
        state,
      );
      await tx(db, STATES, 'readwrite', (s) => request(s.put({ v: VERSION, iv, ct }, name)));
    },

    /**
     * The state stored under `name`, or null when nothing was ever saved under it. A record
     * that is there but does not open (changed, moved from another name, other key) throws
     * a StateError: never null.
     */
    async loadSealed(name) {
      checkName(name);
      const rec = await tx(db, STATES, 'readonly', (s) => request(s.get(name)));
      if (rec === undefined) return null;
      if (
        rec === null || typeof rec !== 'object' || rec.v !== VERSION ||
        !(rec.iv instanceof Uint8Array) || rec.iv.length !== 12 ||
        !(rec.ct instanceof ArrayBuffer)
      ) {
        throw stateError(`sealed state "${name}" is malformed: refusing it`);
      }
      try {
        const plain = await crypto.subtle.decrypt(
          { name: 'AES-GCM', iv: rec.iv, additionalData: aad(name) },
          key,
          rec.ct,
        );
        return new Uint8Array(plain);
      } catch (e) {
        throw stateError(
          `sealed state "${name}" does not open: changed, or sealed under another key`,
          e,
        );
      }
    },

    /** Deletes the record under `name` (the device in it is gone). */
    async remove(name) {
      checkName(name);
      await tx(db, STATES, 'readwrite', (s) => request(s.delete(name)));
    },

    /** Closes the database connection. */
    close() {
      db.close();
    },
  };
}
