//! A simulated card: the PSD or the purse applet on a persistent store, with its ATR and
//! power states, as the transports (vpcd, TCP, scripts) drive it.
//!
//! Which applet a card runs follows from what its store holds ([`load_card`]): a
//! personalized PSD runs the PSD applet, a personalized purse the purse applet, and a blank
//! card both (personalizing one of them decides what the card is from its next power-up:
//! power off, power on or reset, a new TCP client, a new vpcd connection).
//!
//! A card kept in a directory has its records sealed (`SealedStore`) under a storage key
//! kept beside the directory, in `<dir>.storage-key` (mode 0600): the state file never
//! holds the card's secrets (K1, the indicium key) in clear.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use openpsd_core::client::{Link, LinkError};
use openpsd_core::platform::Platform;
use openpsd_core::psd::{PsdApplet, PSD_AID};
use openpsd_core::purse::{PurseApplet, PURSE_AID};
use openpsd_core::store::{MemStore, SealedStore, StorageKey, Store, StoreError, STORAGE_KEY_LEN};
use openpsd_core::vbox::{VboxApplet, VBOX_AID};
use openpsd_core::Card;

use crate::file_store::FileStore;
use crate::os_platform::{Clock, OsPlatform};

/// The ATR: direct convention (`3B`), T0 = `8n` (TD1 follows, n historical bytes), TD1 =
/// `80` (TD2 follows, T=0), TD2 = `01` (T=1), historical bytes "openpsd1", TCK. It offers
/// T=1, which vpcd always reports, so long responses travel whole.
pub const ATR: [u8; 13] = {
    let hist = *b"openpsd1";
    let mut atr = [0x3B, 0x88, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut i = 0;
    while i < 8 {
        atr[4 + i] = hist[i];
        i += 1;
    }
    // TCK: XOR of every byte from T0 to the last historical byte.
    let mut tck = 0u8;
    let mut j = 1;
    while j < 12 {
        tck ^= atr[j];
        j += 1;
    }
    atr[12] = tck;
    atr
};

/// The card's side of a transport: what vpcd and the TCP server serve (ATR, power, one
/// APDU in, one response out). The host's side — sending a command to a card — is core's
/// [`Link`], which every card here implements as well.
pub trait SimulatedCard {
    /// Answer to reset.
    fn atr(&self) -> &[u8];
    /// Power off, power on or reset: volatile state is lost.
    fn reset(&mut self);
    /// One command APDU in, one response APDU out (core's `Card::handle`).
    fn handle(&mut self, apdu: &[u8], reply: &mut Vec<u8>);
    /// Work the card does while no command is pending (core's `Card::idle`: the PSD fills
    /// its nonce pool one batch at a time). Returns whether there was any to do.
    fn idle(&mut self) -> bool {
        false
    }
    /// Whether the card's memory failed (a write whose outcome is unknown, `6581`): it
    /// refuses every commit until powered up again ([`SimulatedCard::reset`]) re-reads it.
    fn memory_failed(&mut self) -> bool {
        false
    }
}

/// What a card's store makes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardKind {
    /// Not personalized: every applet answers (PSD, purse, box).
    Blank,
    /// A personalized PSD.
    Psd,
    /// A personalized purse.
    Purse,
    /// Both applets personalized on one card (made by hand with APDUs).
    Both,
    /// A personalized virtual meter box (seed 001, `docs/virtual-meter.md`).
    Vbox,
    /// A box and a PSD or purse personalized on one card (made by hand with APDUs).
    Mixed,
}

impl std::fmt::Display for CardKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CardKind::Blank => "blank card",
            CardKind::Psd => "PSD",
            CardKind::Purse => "purse",
            CardKind::Both => "PSD and purse",
            CardKind::Vbox => "virtual meter box",
            CardKind::Mixed => "virtual meter box with a PSD or purse",
        })
    }
}

/// The card on `store`, with the applets its records call for: the PSD applet for PSD
/// records, the purse applet for purse records, the box applet for box records, all three
/// on a blank store. Records that do not decode are an error, as for each applet alone.
pub fn load_card<S: Store, P: Platform>(
    store: S,
    platform: P,
) -> Result<(Card<S, P>, CardKind), StoreError> {
    let psd = PsdApplet::load(&store)?;
    let purse = PurseApplet::load(&store)?;
    let vbox = VboxApplet::load(&store)?;
    let made = Made::of(&psd, &purse, &vbox);
    let mut card = Card::new(store, platform);
    if made.wants_psd() {
        card.install(Box::new(psd));
    }
    if made.wants_purse() {
        card.install(Box::new(purse));
    }
    if made.wants_vbox() {
        card.install(Box::new(vbox));
    }
    Ok((card, made.kind()))
}

/// Which applets a store's records personalized.
#[derive(Clone, Copy)]
struct Made {
    psd: bool,
    purse: bool,
    vbox: bool,
}

impl Made {
    fn of(psd: &PsdApplet, purse: &PurseApplet, vbox: &VboxApplet) -> Self {
        Self {
            psd: psd.is_personalized(),
            purse: purse.balance().is_some(),
            vbox: vbox.is_personalized(),
        }
    }
    fn blank(self) -> bool {
        !(self.psd || self.purse || self.vbox)
    }
    fn wants_psd(self) -> bool {
        self.psd || self.blank()
    }
    fn wants_purse(self) -> bool {
        self.purse || self.blank()
    }
    fn wants_vbox(self) -> bool {
        self.vbox || self.blank()
    }
    fn kind(self) -> CardKind {
        match (self.psd, self.purse, self.vbox) {
            (false, false, false) => CardKind::Blank,
            (true, false, false) => CardKind::Psd,
            (false, true, false) => CardKind::Purse,
            (true, true, false) => CardKind::Both,
            (false, false, true) => CardKind::Vbox,
            (_, _, true) => CardKind::Mixed,
        }
    }
}

fn made_of<S: Store>(store: &S) -> Result<Made, StoreError> {
    Ok(Made::of(
        &PsdApplet::load(store)?,
        &PurseApplet::load(store)?,
        &VboxApplet::load(store)?,
    ))
}

/// What the records of `store` make of a card (as [`load_card`] decides).
pub fn store_kind<S: Store>(store: &S) -> Result<CardKind, StoreError> {
    Ok(made_of(store)?.kind())
}

/// A card (PSD, purse, or blank with both applets) on any store.
pub struct SimCard<S: Store, P: Platform> {
    card: Card<S, P>,
    kind: CardKind,
}

impl<S: Store, P: Platform> SimCard<S, P> {
    /// Loads the card from `store`; [`load_card`] chooses its applets.
    pub fn new(store: S, platform: P) -> Result<Self, StoreError> {
        let (card, kind) = load_card(store, platform)?;
        Ok(Self { card, kind })
    }

    /// What the card was when it was loaded.
    pub fn kind(&self) -> CardKind {
        self.kind
    }

    /// The card itself.
    pub fn card(&mut self) -> &mut Card<S, P> {
        &mut self.card
    }
}

impl<S: Store, P: Platform> Link for SimCard<S, P> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut reply = Vec::new();
        SimulatedCard::handle(self, apdu, &mut reply);
        Ok(reply)
    }
}

impl<S: Store, P: Platform> SimulatedCard for SimCard<S, P> {
    fn atr(&self) -> &[u8] {
        &ATR
    }
    /// A blank card personalized (by APDUs) since it was loaded becomes what it was
    /// personalized as from this power-up on, as [`load_card`] would load it: the applet
    /// it no longer needs is removed (`6A82` to its SELECT).
    fn reset(&mut self) {
        self.card.reset();
        if self.kind != CardKind::Blank {
            return;
        }
        let made = match made_of(self.card.store()) {
            Ok(m) => m,
            Err(e) => {
                // The applets read their records themselves and answer the error; the
                // card stays as it was.
                tracing::warn!(error = %e, "card kind not re-read at power-up");
                return;
            }
        };
        if made.blank() {
            return;
        }
        for (wanted, aid) in [
            (made.wants_psd(), PSD_AID),
            (made.wants_purse(), PURSE_AID),
            (made.wants_vbox(), VBOX_AID),
        ] {
            if !wanted {
                self.card.uninstall(aid);
            }
        }
        let now = made.kind();
        if now != self.kind {
            tracing::info!(kind = %now, "personalized: the card is now a {now}");
            self.kind = now;
        }
    }
    fn handle(&mut self, apdu: &[u8], reply: &mut Vec<u8>) {
        self.card.handle(apdu, reply);
    }
    fn idle(&mut self) -> bool {
        self.card.idle()
    }
}

/// A card in memory only (scripts, tests).
pub type MemCard = SimCard<MemStore, OsPlatform>;

/// A blank card in memory.
pub fn mem_card(clock: Clock) -> Result<MemCard, StoreError> {
    SimCard::new(MemStore::new(), OsPlatform::new(clock))
}

/// A card whose memory is a state directory, sealed under its storage key.
pub struct FileCard {
    /// `None` only after a failed write could not be recovered by re-opening.
    card: Option<SimCard<SealedStore<FileStore>, OsPlatform>>,
    dir: PathBuf,
    clock: Clock,
}

/// Where the storage key of the card in `dir` is kept: `<dir>.storage-key`.
pub fn storage_key_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.storage-key"))
}

fn read_storage_key(dir: &Path) -> Result<StorageKey, StoreError> {
    read_storage_key_at(&storage_key_path(dir))
}

/// The storage key in the file `path` (64 hex digits).
pub fn read_storage_key_at(path: &Path) -> Result<StorageKey, StoreError> {
    let text = zeroize::Zeroizing::new(
        fs::read_to_string(path)
            .map_err(|e| StoreError::Io(format!("storage key {}: {e}", path.display())))?,
    );
    let decoded = zeroize::Zeroizing::new(hex::decode(text.trim()).unwrap_or_default());
    let mut bytes: [u8; STORAGE_KEY_LEN] = decoded
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt("storage key file is not 32 hex bytes"))?;
    let key = StorageKey::new(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    Ok(key)
}

fn make_storage_key(dir: &Path) -> Result<StorageKey, StoreError> {
    make_storage_key_at(&storage_key_path(dir))
}

/// A new random storage key, written durably to the new file `path` (mode 0600; an error
/// if it exists).
pub fn make_storage_key_at(path: &Path) -> Result<StorageKey, StoreError> {
    let mut key = [0u8; STORAGE_KEY_LEN];
    OsPlatform::default().fill_random(&mut key);
    let text = zeroize::Zeroizing::new(hex::encode(key));
    write_new_durably(path, text.as_bytes())
        .map_err(|e| StoreError::Io(format!("creating storage key {}: {e}", path.display())))?;
    let k = StorageKey::new(key);
    zeroize::Zeroize::zeroize(&mut key);
    Ok(k)
}

/// Creates `path` (mode 0600; an error if it exists) holding `bytes`, durably: written to
/// `<path>.new` and fsynced, then hard-linked under `path` and the directory fsynced. A
/// power cut leaves a stray `.new` file (removed on the next try), never a key file that
/// exists empty or half-written: without its key the card's state cannot be read.
/// (FileStore::create syncs this directory only when it makes the card's directory.)
fn write_new_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(parent)?.sync_all()
}

fn load(
    dir: &Path,
    clock: Clock,
) -> Result<SimCard<SealedStore<FileStore>, OsPlatform>, StoreError> {
    // The state first: a missing card should say so, not complain about its key.
    let store = FileStore::open(dir)?;
    let key = read_storage_key(dir)?;
    SimCard::new(SealedStore::new(store, key), OsPlatform::new(clock))
}

impl FileCard {
    /// What the card was when it was (re-)loaded; `None` if its memory cannot be read.
    pub fn kind(&self) -> Option<CardKind> {
        self.card.as_ref().map(SimCard::kind)
    }

    /// Opens the card kept in `dir`; a missing or unreadable state (or key) is an error.
    pub fn open(dir: &Path, clock: Clock) -> Result<Self, StoreError> {
        Ok(Self {
            card: Some(load(dir, clock)?),
            dir: dir.to_path_buf(),
            clock,
        })
    }

    /// Creates a blank card (not yet personalized) in `dir`, with a new storage key.
    pub fn create(dir: &Path, clock: Clock) -> Result<Self, StoreError> {
        if dir.join("state.log").exists() {
            return Err(StoreError::Io(format!(
                "a card exists already in {}",
                dir.display()
            )));
        }
        // The key lives beside the card's directory: its parent must exist first.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .map_err(|e| StoreError::Io(format!("creating {}: {e}", parent.display())))?;
        }
        let key = make_storage_key(dir)?;
        let store = match FileStore::create(dir) {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_file(storage_key_path(dir));
                return Err(e);
            }
        };
        let card = SimCard::new(SealedStore::new(store, key), OsPlatform::new(clock))?;
        Ok(Self {
            card: Some(card),
            dir: dir.to_path_buf(),
            clock,
        })
    }
}

/// A card run in this process as core's [`Link`]: what the `openpsd` CLI (`state:DIR`),
/// the back-office demo and the tests drive with core's client layer.
impl Link for FileCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut reply = Vec::new();
        SimulatedCard::handle(self, apdu, &mut reply);
        Ok(reply)
    }
}

impl SimulatedCard for FileCard {
    fn atr(&self) -> &[u8] {
        &ATR
    }

    /// A power cycle also brings back a store whose write failed (the `6581` case): the
    /// card re-reads its memory, as a real card does at power-up, instead of answering
    /// from RAM that may lag the disk.
    fn reset(&mut self) {
        let failed = match self.card.as_mut() {
            Some(c) => c.card().store().inner().has_failed(),
            None => true,
        };
        if failed {
            // Drop the old store first: it holds the lock the new one takes.
            self.card = None;
            match load(&self.dir, self.clock) {
                Ok(c) => {
                    tracing::info!(dir = %self.dir.display(), "card memory re-read after a failed write");
                    self.card = Some(c);
                }
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "card memory cannot be re-read")
                }
            }
        }
        if let Some(c) = self.card.as_mut() {
            c.reset();
        }
    }

    fn memory_failed(&mut self) -> bool {
        self.card
            .as_mut()
            .is_none_or(|c| c.card().store().inner().has_failed())
    }

    fn handle(&mut self, apdu: &[u8], reply: &mut Vec<u8>) {
        match self.card.as_mut() {
            Some(c) => SimulatedCard::handle(c, apdu, reply),
            None => {
                reply.clear();
                reply.extend_from_slice(&openpsd_core::Status::MemoryFailure.sw().to_be_bytes());
            }
        }
    }

    fn idle(&mut self) -> bool {
        self.card.as_mut().is_some_and(SimulatedCard::idle)
    }
}

/// Opens the card kept in `dir`; a missing or unreadable state is an error.
pub fn open_file_card(dir: &Path, clock: Clock) -> Result<FileCard, StoreError> {
    FileCard::open(dir, clock)
}

/// Creates a blank card (not yet personalized) in `dir`.
pub fn create_file_card(dir: &Path, clock: Clock) -> Result<FileCard, StoreError> {
    FileCard::create(dir, clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atr_offers_t1_and_has_a_valid_check_byte() {
        assert_eq!(&ATR[..4], &[0x3B, 0x88, 0x80, 0x01]);
        assert_eq!(ATR[1..].iter().fold(0, |a, b| a ^ b), 0, "XOR T0..TCK is 0");
    }
}
