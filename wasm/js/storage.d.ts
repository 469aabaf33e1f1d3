/** The PSD's saved state at rest: AES-256-GCM under a non-extractable key in IndexedDB. */
export interface SealedStorage {
  /** Seals `state` (psd.saveState()) and stores it under `name`. */
  saveSealed(name: string, state: Uint8Array): Promise<void>;
  /** The state under `name`; null only when nothing was saved. Throws a StateError for a
   *  record that does not open (tampered, moved from another name, other key). */
  loadSealed(name: string): Promise<Uint8Array | null>;
  /** Deletes the record under `name`. */
  remove(name: string): Promise<void>;
  /** Closes the database connection. */
  close(): void;
}
/** Opens (creating on first use) the sealed store in IndexedDB database `dbName` (default "openpsd"). */
export function openStorage(dbName?: string): Promise<SealedStorage>;
