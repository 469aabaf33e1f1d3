// Types of webcrypto.js ("openpsd/webcrypto/signer"): the indicium key as a non-extractable
// WebCrypto CryptoKey in IndexedDB (wasm/API.md § WebCrypto signer).
import type { IndiciumRequest, IssuedIndicium, OutsideIssued } from './openpsd.js';

/** Where the key pair and the request being issued are kept, per name. */
export interface SignerStore {
  getKey(name: string): Promise<CryptoKeyPair | undefined>;
  addKey(name: string, pair: CryptoKeyPair): Promise<unknown>;
  getPending(name: string): Promise<IndiciumRequest | undefined>;
  putPending(name: string, req: IndiciumRequest): Promise<unknown>;
  deletePending(name: string): Promise<unknown>;
  close(): void;
}

/** The signer key: the private key cannot be exported; publicKeyRaw is SEC1 (65 bytes). */
export interface SignerKey {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicKeyRaw: Uint8Array;
}

/** The store in IndexedDB (browsers). */
export function openSignerStore(dbName?: string): Promise<SignerStore>;
/** The store in memory (Node, tests). */
export function memorySignerStore(): SignerStore;
/** The key under `name`, generated (non-extractable) on first use. */
export function signerKey(store: SignerStore, name: string, subtle?: SubtleCrypto): Promise<SignerKey>;

/** The PSD methods WebCryptoPsd calls (a Psd of the "openpsd/webcrypto" module). */
export interface OutsidePsd {
  issueUnsigned(request: IndiciumRequest, signerPublicKey: Uint8Array): OutsideIssued;
  storeSignature(set: number | undefined, transactionId: string, signature: Uint8Array, signerPublicKey: Uint8Array): IssuedIndicium;
  saveState(): Uint8Array;
}

export class WebCryptoPsd {
  constructor(o: {
    psd: OutsidePsd;
    key: SignerKey;
    store: SignerStore;
    name: string;
    save?: (state: Uint8Array) => Promise<void>;
    subtle?: SubtleCrypto;
  });
  readonly psd: OutsidePsd;
  readonly key: SignerKey;
  /** Debit committed in the PSD, signed by the CryptoKey, signature kept by the PSD. */
  issueIndicium(request: IndiciumRequest): Promise<IssuedIndicium>;
  /** The request a dead page left, completed; null when there is none. */
  resumePending(): Promise<IssuedIndicium | null>;
}
