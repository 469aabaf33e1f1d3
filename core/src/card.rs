//! The card: one entry point, [`Card::handle`], that turns a command APDU into a response
//! APDU written into a buffer the caller owns.
//!
//! The card checks the class byte, reassembles command chains, serves SELECT by AID and
//! GET RESPONSE itself, and hands every other command to the selected [`Applet`]. What it
//! remembers between commands (selection, a chain in progress, response bytes not yet
//! fetched) is volatile: [`Card::reset`] — a power cycle or a warm reset — clears it, while
//! applets' persistent state lives in the [`Store`] and survives.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::apdu::{self, Command, CHAIN_BIT};
use crate::platform::Platform;
use crate::status::{Status, SW1_BYTES_REMAINING, SW_OK};
use crate::store::Store;

/// What an applet may use while it runs a command.
pub struct Ctx<'a> {
    /// The card's persistent memory.
    pub store: &'a mut dyn Store,
    /// Randomness and time from the host.
    pub platform: &'a mut dyn Platform,
}

/// An application on the card, selected by its AID.
pub trait Applet {
    /// The application identifier it answers to.
    fn aid(&self) -> &'static [u8];

    /// Called when SELECT picks this applet. An error refuses the selection (the previous
    /// one stays).
    fn select(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Status>;

    /// Called when another applet is selected or the card is reset: volatile state
    /// (authentication, sessions) must be forgotten here.
    fn deselect(&mut self);

    /// Runs a command; response data goes into `reply` (empty on entry).
    fn call(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status>;

    /// One step of background work while the card is idle and this applet selected (the
    /// PSD fills its nonce pool one batch at a time). Returns whether it did any: a host
    /// with time to spare calls it until `false`. Nothing persistent may change here.
    fn idle(&mut self, _ctx: &mut Ctx<'_>) -> bool {
        false
    }
}

/// Longest command a chain may assemble (bytes of data).
pub const MAX_CHAINED_DATA: usize = 8192;

const INS_SELECT: u8 = 0xA4;
const INS_GET_RESPONSE: u8 = 0xC0;

struct Chain {
    header: [u8; 4],
    data: Vec<u8>,
}

#[derive(Default)]
struct Volatile {
    selected: Option<usize>,
    chain: Option<Chain>,
    pending: Vec<u8>,
}

/// A smart card: applets, their persistent store, and the host platform.
pub struct Card<S: Store, P: Platform> {
    store: S,
    platform: P,
    applets: Vec<Box<dyn Applet>>,
    volatile: Volatile,
}

impl<S: Store, P: Platform> Card<S, P> {
    /// A card with no applets yet.
    pub fn new(store: S, platform: P) -> Self {
        Self {
            store,
            platform,
            applets: Vec::new(),
            volatile: Volatile::default(),
        }
    }

    /// Installs an applet (selectable by its AID).
    pub fn install(&mut self, applet: Box<dyn Applet>) {
        self.applets.push(applet);
    }

    /// Removes the applet whose AID is `aid`, after a reset (no applet stays selected).
    /// Returns whether there was one. A simulator deciding at power-up which applets a card
    /// runs uses it; a card never does it by itself.
    pub fn uninstall(&mut self, aid: &[u8]) -> bool {
        self.reset();
        let before = self.applets.len();
        self.applets.retain(|a| a.aid() != aid);
        self.applets.len() != before
    }

    /// The persistent store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The persistent store, mutably (tests arm power cuts through it).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The platform, mutably (tests move the clock).
    pub fn platform_mut(&mut self) -> &mut P {
        &mut self.platform
    }

    /// Takes the card apart.
    pub fn into_parts(self) -> (S, P) {
        (self.store, self.platform)
    }

    /// Power-off/on or warm reset: volatile state is lost, persistent state stays.
    pub fn reset(&mut self) {
        if let Some(i) = self.volatile.selected {
            if let Some(a) = self.applets.get_mut(i) {
                a.deselect();
            }
        }
        self.volatile = Volatile::default();
    }

    /// Lets the selected applet work while no command is pending ([`Applet::idle`]: the
    /// PSD precomputes one batch of signature nonces). Returns whether it did any work; a
    /// host calls it between commands, or in a loop until `false` to fill up.
    pub fn idle(&mut self) -> bool {
        let Some(applet) = self.volatile.selected.and_then(|i| self.applets.get_mut(i)) else {
            return false;
        };
        let mut ctx = Ctx {
            store: &mut self.store,
            platform: &mut self.platform,
        };
        applet.idle(&mut ctx)
    }

    /// Processes one command APDU and writes the response APDU (data ‖ SW1 SW2) into
    /// `reply`, which is cleared first. Any byte string gets a status word; none panics.
    pub fn handle(&mut self, apdu: &[u8], reply: &mut Vec<u8>) {
        reply.clear();
        let sw = match self.process(apdu, reply) {
            Ok(sw) => sw,
            Err(status) => {
                reply.clear();
                status.sw()
            }
        };
        reply.extend_from_slice(&sw.to_be_bytes());
    }

    /// [`Card::handle`] into a fresh vector.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let mut reply = Vec::new();
        self.handle(apdu, &mut reply);
        reply
    }

    fn process(&mut self, raw: &[u8], reply: &mut Vec<u8>) -> Result<u16, Status> {
        // Response bytes not fetched are dropped by any command but GET RESPONSE, and a
        // chain by any command that does not continue it — malformed ones included.
        let pending = core::mem::take(&mut self.volatile.pending);
        let mut chain = self.volatile.chain.take();
        let view = apdu::parse(raw)?;
        let cla = view.class().into_inner();
        check_class(cla)?;
        let header = [cla, raw[1], raw[2], raw[3]];
        let chained = cla & CHAIN_BIT != 0;

        if let Some(c) = &chain {
            if c.header[1..] != header[1..] || (c.header[0] & !CHAIN_BIT) != (cla & !CHAIN_BIT) {
                return Err(Status::LastCommandOfChainExpected);
            }
        }
        if cla == 0x00 && header[1] == INS_GET_RESPONSE {
            return self.get_response(pending, header, view.expected(), reply);
        }
        if chained {
            let c = chain.get_or_insert_with(|| Chain {
                header,
                data: Vec::new(),
            });
            if c.data.len() + view.data().len() > MAX_CHAINED_DATA {
                return Err(Status::WrongLength);
            }
            c.data.extend_from_slice(view.data());
            self.volatile.chain = chain;
            return Ok(SW_OK);
        }
        let assembled;
        let data = match chain {
            Some(mut c) => {
                if c.data.len() + view.data().len() > MAX_CHAINED_DATA {
                    return Err(Status::WrongLength);
                }
                c.data.extend_from_slice(view.data());
                assembled = c.data;
                &assembled[..]
            }
            None => view.data(),
        };
        let cmd = Command::new(header, data, view.expected(), view.extended);

        if cmd.cla == 0x00 && cmd.ins == INS_SELECT {
            self.select(&cmd, reply)?;
        } else {
            let i = self
                .volatile
                .selected
                .ok_or(Status::ConditionsNotSatisfied)?;
            let applet = self.applets.get_mut(i).ok_or(Status::Internal)?;
            let mut ctx = Ctx {
                store: &mut self.store,
                platform: &mut self.platform,
            };
            applet.call(&mut ctx, &cmd, reply)?;
        }
        Ok(self.limit_to_ne(reply, cmd.ne))
    }

    /// Keeps at most Ne bytes in `reply` and the rest for GET RESPONSE (`61xx`). Without
    /// Le the whole response is returned: T=1 readers (vpcd among them) carry it.
    fn limit_to_ne(&mut self, reply: &mut Vec<u8>, ne: usize) -> u16 {
        if ne == 0 || reply.len() <= ne {
            return SW_OK;
        }
        self.volatile.pending = reply.split_off(ne);
        remaining_sw(self.volatile.pending.len())
    }

    fn get_response(
        &mut self,
        mut pending: Vec<u8>,
        header: [u8; 4],
        ne: usize,
        reply: &mut Vec<u8>,
    ) -> Result<u16, Status> {
        if header[2] != 0 || header[3] != 0 || pending.is_empty() {
            return Err(Status::WrongP1P2);
        }
        let take = if ne == 0 {
            pending.len()
        } else {
            ne.min(pending.len())
        };
        let rest = pending.split_off(take);
        reply.extend_from_slice(&pending);
        if rest.is_empty() {
            Ok(SW_OK)
        } else {
            let sw = remaining_sw(rest.len());
            self.volatile.pending = rest;
            Ok(sw)
        }
    }

    fn select(&mut self, cmd: &Command<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        match cmd.p1 {
            // By file identifier or path: this card has no file system.
            0x00..=0x03 | 0x08 | 0x09 => return Err(Status::NotFound),
            0x04 => {}
            _ => return Err(Status::IncorrectP1P2),
        }
        // P2: first/only occurrence, returning FCI (00), FCP (04) or nothing (0C).
        if !matches!(cmd.p2, 0x00 | 0x04 | 0x0C) {
            return Err(Status::IncorrectP1P2);
        }
        let aid = cmd.data;
        // Truncated AIDs (at least the 5-byte RID) select the applet whose AID they begin.
        let found = (aid.len() >= 5)
            .then(|| self.applets.iter().position(|a| a.aid().starts_with(aid)))
            .flatten();
        // Unknown AID: 6A82, and the current selection keeps its state.
        let i = found.ok_or(Status::NotFound)?;
        let mut ctx = Ctx {
            store: &mut self.store,
            platform: &mut self.platform,
        };
        let applet = self.applets.get_mut(i).ok_or(Status::Internal)?;
        if self.volatile.selected == Some(i) {
            // Selecting the selected applet again starts it afresh.
            applet.deselect();
            self.volatile.selected = None;
        }
        // A refused selection leaves the previous one (and its state) as it was.
        applet.select(&mut ctx)?;
        if let Some(prev) = self.volatile.selected.replace(i) {
            if let Some(a) = self.applets.get_mut(prev) {
                a.deselect();
            }
        }
        let full = self.applets.get(i).ok_or(Status::Internal)?.aid();
        if cmd.p2 != 0x0C {
            // FCI (P2 00) or FCP (P2 04) template with the DF name (the full AID).
            let template = if cmd.p2 == 0x04 { 0x62 } else { 0x6F };
            // why: an AID is 5 to 16 bytes (ISO 7816-4); the applets' are the 7-byte
            // constants PSD_AID and PURSE_AID, so both lengths fit a byte.
            #[allow(clippy::cast_possible_truncation)]
            let (template_len, aid_len) = ((full.len() + 2) as u8, full.len() as u8);
            reply.extend_from_slice(&[template, template_len, 0x84, aid_len]);
            reply.extend_from_slice(full);
        }
        Ok(())
    }
}

fn remaining_sw(n: usize) -> u16 {
    // More than 255 bytes left is announced as `61 00` (256 or more).
    u16::from_be_bytes([SW1_BYTES_REMAINING, u8::try_from(n).unwrap_or(0)])
}

/// The class checks of ISO 7816-4 5.1.1 for a card without logical channels or secure
/// messaging: `00`/`80` families, chaining allowed.
fn check_class(cla: u8) -> Result<(), Status> {
    match cla {
        0x00..=0x1F | 0x80..=0xFE => {
            if cla & 0x03 != 0 {
                Err(Status::LogicalChannelNotSupported)
            } else if cla & 0x0C != 0 {
                Err(Status::SecureMessagingNotSupported)
            } else if cla & 0x60 != 0 {
                // Proprietary classes other than 8x/9x are not ours.
                Err(Status::ClassNotSupported)
            } else {
                Ok(())
            }
        }
        0x40..=0x7F => Err(Status::LogicalChannelNotSupported),
        _ => Err(Status::ClassNotSupported),
    }
}
