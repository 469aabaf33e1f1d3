//! The vpcd framing, both ways: as pcscd's vpcd reader expects a virtual card (the card is
//! the TCP *client*), and as a TCP server for clients without pcscd.
//!
//! Every message is a 2-byte big-endian length and that many bytes. A 1-byte message is a
//! control code — `00` power off, `01` power on, `02` reset (none answered; each a power-up
//! of the card), `04` get ATR (answered with the ATR), any other ignored — anything longer
//! is a command APDU, answered with one frame of response data and status word. An empty
//! message is ignored and not answered. docs/card-sim.md § The framing is this contract
//! (checked against `card-sim serve --tcp` by card-sim/tests/doc.rs).
//!
//! The framing runs over a [`Wire`]: a plain TCP socket, or a TLS session over one
//! ([`crate::tls`], `serve --tcp --tls-cert …`): the frames are the same bytes inside it.
//!
//! The TCP server serves one client at a time ([`run_tcp_server`]), or, for the virtual
//! meter's box only, up to N at once ([`run_tcp_server_shared`], `serve --tcp --clients N`):
//! the data center's function servers each keep a connection to the one box. That is safe
//! for the box alone, whose only volatile state is its selection (every client selects the
//! same applet; no session, no challenge): a PSD's or a purse's sessions live in volatile
//! memory, which the clients would share. The card runtime's command chain and response
//! bytes kept for GET RESPONSE are shared too, and another client's APDU in between drops
//! them: shared, each command must travel and be answered whole (extended length, Le
//! `00 00`, as the data center sends them).
//!
//! Latency: Debian 12's vpcd writes the length and the body of a frame in two writes, so a
//! card with delayed ACKs holds the body ~40 ms. Setting `TCP_QUICKACK` before every read
//! (Linux clears it again after each ACK) and `TCP_NODELAY`, and writing each reply with
//! one `write_all`, takes that away.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use openpsd_core::client::{Link, LinkError};
use openpsd_core::Status;

use crate::sim::SimulatedCard;

/// Control codes of the vpcd protocol.
pub mod control {
    /// Power off.
    pub const POWER_OFF: u8 = 0x00;
    /// Power on.
    pub const POWER_ON: u8 = 0x01;
    /// Reset.
    pub const RESET: u8 = 0x02;
    /// Get ATR.
    pub const GET_ATR: u8 = 0x04;
}

/// Default address of vpcd's first reader ("Virtual PCD 00 00"); slot *n* is port + *n*.
pub const VPCD_DEFAULT: &str = "127.0.0.1:35963";

/// Counts of what a connection carried, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Command APDUs answered.
    pub apdus: u64,
    /// Power-off, power-on and reset events.
    pub power_events: u64,
    /// Units of idle work the card did between commands (a PSD's nonce batches).
    pub idle_units: u64,
}

/// A connection the framing runs over: a TCP socket, or a TLS session on one.
pub trait Wire: Read + Write {
    /// The TCP socket under it (timeouts, `TCP_QUICKACK`, waiting for input).
    fn socket(&self) -> &TcpStream;

    /// Whether bytes of the peer's already wait above the socket (decrypted TLS records):
    /// then input is there although the socket has nothing to read.
    fn pending(&mut self) -> bool {
        false
    }
}

impl Wire for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl<W: Wire + ?Sized> Wire for Box<W> {
    fn socket(&self) -> &TcpStream {
        (**self).socket()
    }

    fn pending(&mut self) -> bool {
        (**self).pending()
    }
}

fn read_frame(stream: &mut impl Wire, buf: &mut Vec<u8>) -> io::Result<bool> {
    quickack(stream.socket());
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    buf.resize(usize::from(u16::from_be_bytes(len)), 0);
    if !buf.is_empty() {
        quickack(stream.socket());
        stream.read_exact(buf)?;
    }
    Ok(true)
}

fn write_frame(stream: &mut impl Wire, out: &mut Vec<u8>, body: &[u8]) -> io::Result<()> {
    let len = u16::try_from(body.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "response longer than 65535 bytes",
        )
    })?;
    out.clear();
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    stream.write_all(out)?;
    // A TLS session may keep part of a record until flushed; a socket flushes nothing.
    stream.flush()
}

#[cfg(target_os = "linux")]
fn quickack(stream: &TcpStream) {
    use std::os::linux::net::TcpStreamExt;
    // Best effort: without it replies are merely slower.
    let _ = stream.set_quickack(true);
}

#[cfg(not(target_os = "linux"))]
fn quickack(_stream: &TcpStream) {}

/// Lets the card work ([`SimulatedCard::idle`]) while nothing is waiting on `stream`, one
/// unit at a time (a PSD's batch of 32 nonces, under a millisecond), so a command that
/// arrives meanwhile waits for one unit at most. Returns how many units it did.
fn idle_until_input(wire: &mut impl Wire, card: &mut dyn SimulatedCard) -> io::Result<u64> {
    if wire.pending() {
        return Ok(0);
    }
    let stream = wire.socket();
    let mut units = 0;
    let mut probe = [0u8; 1];
    stream.set_nonblocking(true)?;
    let result = loop {
        match stream.peek(&mut probe) {
            // Bytes are waiting, or the peer closed (0): back to reading.
            Ok(_) => break Ok(units),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !card.idle() {
                    break Ok(units);
                }
                units += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    result
}

/// Serves one connection until the peer closes it (card removed) or an I/O error. Between
/// commands the card works while it has work ([`idle_until_input`]).
pub fn serve_connection(stream: &mut impl Wire, card: &mut dyn SimulatedCard) -> io::Result<Stats> {
    stream.socket().set_nodelay(true)?;
    let mut stats = Stats::default();
    let (mut frame, mut reply, mut out) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        stats.idle_units += idle_until_input(stream, card)?;
        if !read_frame(stream, &mut frame)? {
            break;
        }
        match frame.as_slice() {
            [] => {}
            [code] => match *code {
                control::POWER_OFF | control::POWER_ON | control::RESET => {
                    tracing::debug!(code, "power event");
                    card.reset();
                    stats.power_events += 1;
                }
                control::GET_ATR => {
                    let atr = card.atr().to_vec();
                    write_frame(stream, &mut out, &atr)?;
                }
                other => tracing::warn!(code = other, "unknown vpcd control code ignored"),
            },
            apdu => {
                card.handle(apdu, &mut reply);
                // A card always answers at least a status word: no answer means the card
                // is gone from under this connection (a shared card powered up again).
                if reply.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the card was powered up again under this connection",
                    ));
                }
                tracing::debug!(apdu = %hex::encode_upper(apdu), response = %hex::encode_upper(&reply), "exchange");
                write_frame(stream, &mut out, &reply)?;
                stats.apdus += 1;
            }
        }
    }
    Ok(stats)
}

/// Connects the card to vpcd at `addr` and serves it for ever, reconnecting (every
/// `retry`) when pcscd is not there yet or goes away.
pub fn run_vpcd_client(
    addr: &str,
    card: &mut dyn SimulatedCard,
    retry: Duration,
) -> io::Result<()> {
    let mut waiting_logged = false;
    loop {
        let target = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address"))
        })?;
        match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
            Ok(mut stream) => {
                tracing::info!(%addr, "connected to vpcd: card inserted");
                waiting_logged = false;
                card.reset();
                match serve_connection(&mut stream, card) {
                    Ok(s) => {
                        tracing::info!(apdus = s.apdus, "vpcd closed the connection: card removed")
                    }
                    Err(e) => tracing::warn!(error = %e, "vpcd connection lost"),
                }
                card.reset();
            }
            Err(e) => {
                if !waiting_logged {
                    tracing::info!(%addr, error = %e, "vpcd not reachable; retrying");
                    waiting_logged = true;
                }
            }
        }
        std::thread::sleep(retry);
    }
}

/// How long a TCP client may stay silent before the card drops it: one client is served at
/// a time, so an idle one must not hold the card from the next.
pub const CLIENT_IDLE: Duration = Duration::from_secs(30);

/// Serves the card to TCP clients at `addr`, one connection at a time, for ever. Each
/// connection starts with a powered-on, freshly reset card; a client silent for
/// [`CLIENT_IDLE`] is disconnected.
pub fn run_tcp_server(listener: TcpListener, card: &mut dyn SimulatedCard) -> io::Result<()> {
    run_tcp_server_with(listener, card, CLIENT_IDLE)
}

/// [`run_tcp_server`] with another idle bound (tests).
pub fn run_tcp_server_with(
    listener: TcpListener,
    card: &mut dyn SimulatedCard,
    idle: Duration,
) -> io::Result<()> {
    serve_clients(listener, card, idle, Ok)
}

/// Accepts clients one at a time, for ever. `open` makes each accepted socket the wire the
/// framing runs over (the socket itself, or a TLS session once its handshake is done); a
/// client it refuses is logged and closed, and the card never hears of it: no reset, no
/// frame.
pub(crate) fn serve_clients<W: Wire>(
    listener: TcpListener,
    card: &mut dyn SimulatedCard,
    idle: Duration,
    mut open: impl FnMut(TcpStream) -> io::Result<W>,
) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept()?;
        let mut wire = match open(stream) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "client refused: the card saw nothing");
                continue;
            }
        };
        wire.socket().set_read_timeout(Some(idle))?;
        // A client that sends but never reads must not block the card on a full buffer.
        wire.socket().set_write_timeout(Some(idle))?;
        tracing::info!(%peer, "client connected");
        card.reset();
        match serve_connection(&mut wire, card) {
            Ok(s) => tracing::info!(%peer, apdus = s.apdus, "client disconnected"),
            Err(e) => tracing::warn!(%peer, error = %e, "client connection failed"),
        }
        card.reset();
    }
}

/// Serves the card to up to `max` TCP clients at once, for ever: the box's several
/// function servers (`serve --tcp ADDR --clients N`). Only for a card whose volatile state
/// is nothing but its selection (the virtual meter box, or a blank card its host
/// personalizes as one): every client's APDUs run on the one card, one whole APDU at a
/// time, and a PSD's or a purse's sessions would be shared by all.
///
/// A connection beyond `max` is closed at once (the card sees nothing; `max` 0 serves
/// nobody). The card is powered up (reset) when a connection arrives while no other is
/// served, and reset when the last one ends, so a single client still gets a fresh power-up
/// per connection; a client's own power events (`00`, `01`, `02`) are ignored, since it
/// must not power-cycle the card under the others. A client silent for [`CLIENT_IDLE`] is
/// dropped. The card stays on the calling thread and runs the clients' APDUs from a queue.
pub fn run_tcp_server_shared(
    listener: TcpListener,
    card: &mut dyn SimulatedCard,
    max: u16,
) -> io::Result<()> {
    run_tcp_server_shared_with(listener, card, max, CLIENT_IDLE)
}

/// [`run_tcp_server_shared`] with another idle bound (tests).
pub fn run_tcp_server_shared_with(
    listener: TcpListener,
    card: &mut dyn SimulatedCard,
    max: u16,
    idle: Duration,
) -> io::Result<()> {
    serve_clients_shared(listener, card, idle, max, Ok)
}

/// What a connection of [`serve_clients_shared`] asks of the card's thread.
enum ToCard {
    /// The connection is served from now on (past `open`): the card is powered up if no
    /// other connection is. Answered with the ATR, the number of connections served and
    /// the card's power-up the connection belongs to.
    Attach(SyncSender<(Vec<u8>, usize, u64)>),
    /// One command APDU of a connection of power-up `epoch`, run whole before any other:
    /// answered with its response, or `None` if the card was powered up again since (the
    /// connection's selection is gone with it: the connection must end).
    Apdu(Vec<u8>, u64, SyncSender<Option<Vec<u8>>>),
    /// A served connection ended: the card is reset if it was the last. Answered with the
    /// number of connections left.
    Detach(SyncSender<usize>),
    /// The accept loop failed: the server ends with its error.
    Stop(io::Error),
}

/// Serves one card to up to `max` clients at once, for ever. The card stays on the calling
/// thread (a card is not `Send`: its applets are plain trait objects) and runs one request
/// at a time from a queue, so every APDU runs whole, in the order the clients' frames
/// arrived. An accept thread takes the connections; each gets a thread of its own, where
/// `open` runs (a TLS handshake: a slow one holds that connection only) and
/// [`serve_connection`] serves it through a [`SharedCard`].
///
/// * A connection beyond `max` (counted from its accept, handshake included) is closed at
///   once, logged at `warn`; the card sees nothing. `max` 0 serves nobody.
/// * The card is powered up (reset) when a connection is served and no other is, and reset
///   again when the last one ends: one client alone has today's fresh power-up per
///   connection, and a card whose write failed re-reads its memory whenever it goes idle
///   ([`crate::sim::FileCard`]). A client's own power events are ignored ([`SharedCard`]).
/// * A card whose memory failed under a command (it answered `6581`, its store refuses
///   commits until re-read) is powered up again at once, re-reading its memory, instead of
///   refusing every client until all have left: every connection then served is closed at
///   its next command, unanswered (the card's power-up took its selection, and a command
///   sent to no applet would be refused, which a client would take for the card's word),
///   and its client reconnects, as after a power cut.
/// * A client silent for `idle`, or not reading a reply within it, is dropped.
pub(crate) fn serve_clients_shared<W, F>(
    listener: TcpListener,
    card: &mut dyn SimulatedCard,
    idle: Duration,
    max: u16,
    open: F,
) -> io::Result<()>
where
    W: Wire + 'static,
    F: Fn(TcpStream) -> io::Result<W> + Send + Sync + 'static,
{
    // The accept thread and the connections' threads hold the senders; the accept loop
    // ends by saying why (`Stop`), so the queue never runs dry unless it panicked.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("card-sim accept".into())
        .spawn(move || {
            let e = accept_shared(&listener, &tx, idle, max, Arc::new(open));
            let _ = tx.send(ToCard::Stop(e));
        })?;
    let mut active = 0usize;
    // The card's power-ups while connections are served: a connection of an older one is
    // closed at its next command.
    let mut epoch = 0u64;
    loop {
        let Ok(request) = rx.recv() else {
            return Err(io::Error::other("the accept loop ended"));
        };
        match request {
            ToCard::Attach(ack) => {
                if active == 0 {
                    card.reset();
                    epoch += 1;
                }
                active += 1;
                let _ = ack.send((card.atr().to_vec(), active, epoch));
            }
            ToCard::Apdu(_, from, ack) if from != epoch => {
                let _ = ack.send(None);
            }
            ToCard::Apdu(apdu, _, ack) => {
                let mut reply = Vec::new();
                card.handle(&apdu, &mut reply);
                let _ = ack.send(Some(reply));
                if card.memory_failed() {
                    tracing::warn!(
                        "the card's memory failed: powering it up again; its clients reconnect"
                    );
                    card.reset();
                    epoch += 1;
                }
            }
            ToCard::Detach(ack) => {
                active = active.saturating_sub(1);
                if active == 0 {
                    card.reset();
                }
                let _ = ack.send(active);
            }
            ToCard::Stop(e) => return Err(e),
        }
    }
}

/// The accept loop of [`serve_clients_shared`]: returns only with the error that ended it.
fn accept_shared<W, F>(
    listener: &TcpListener,
    tx: &Sender<ToCard>,
    idle: Duration,
    max: u16,
    open: Arc<F>,
) -> io::Error
where
    W: Wire + 'static,
    F: Fn(TcpStream) -> io::Result<W> + Send + Sync + 'static,
{
    let taken = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => return e,
        };
        // Only this loop adds to `taken`: what it reads cannot grow meanwhile.
        if taken.load(Ordering::SeqCst) >= usize::from(max) {
            tracing::warn!(%peer, max, "client refused: {max} clients connected already; the card saw nothing");
            drop(stream);
            continue;
        }
        let slot = Slot::take(&taken);
        let (tx, open) = (tx.clone(), Arc::clone(&open));
        let spawned = std::thread::Builder::new()
            .name(format!("card-sim client {peer}"))
            .spawn(move || {
                let _slot = slot;
                serve_shared(stream, peer, &tx, idle, &*open);
            });
        if let Err(e) = spawned {
            // The closure, its socket and its slot are dropped with the error.
            tracing::warn!(%peer, error = %e, "client refused: no thread to serve it");
        }
    }
}

/// One of the `max` places of [`serve_clients_shared`], held by a connection from its
/// accept to its end (given back when its thread ends, however it ends).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(taken: &Arc<AtomicUsize>) -> Self {
        taken.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(taken))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One connection of [`serve_clients_shared`], on its own thread.
fn serve_shared<W: Wire>(
    stream: TcpStream,
    peer: SocketAddr,
    tx: &Sender<ToCard>,
    idle: Duration,
    open: &dyn Fn(TcpStream) -> io::Result<W>,
) {
    let mut wire = match open(stream) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "client refused: the card saw nothing");
            return;
        }
    };
    let timeouts = (wire.socket().set_read_timeout(Some(idle)))
        // A client that sends but never reads must not keep its thread waiting.
        .and_then(|()| wire.socket().set_write_timeout(Some(idle)));
    if let Err(e) = timeouts {
        tracing::warn!(%peer, error = %e, "client connection failed");
        return;
    }
    let Some((mut card, active)) = SharedCard::attach(tx) else {
        tracing::warn!(%peer, "client dropped: the server is ending");
        return;
    };
    tracing::info!(%peer, active, "client connected");
    let served = serve_connection(&mut wire, &mut card);
    drop(wire);
    let active = card.detach().unwrap_or(0);
    match served {
        Ok(s) => tracing::info!(%peer, apdus = s.apdus, active, "client disconnected"),
        Err(e) => tracing::warn!(%peer, error = %e, active, "client connection failed"),
    }
}

/// The card as one connection of [`serve_clients_shared`] sees it: each APDU goes to the
/// card's thread and runs there whole; the ATR is this connection's copy. The client's
/// power events (`00`, `01`, `02`) are ignored, logged at `debug`: one client must not
/// power-cycle the card under the others (the card is reset when no client is served). No
/// idle work: the card's thread has other clients to answer.
struct SharedCard {
    tx: Sender<ToCard>,
    atr: Vec<u8>,
    attached: bool,
    /// The card's power-up this connection was served in.
    epoch: u64,
}

impl SharedCard {
    /// Counts this connection among those served (the card powered up if it is the first):
    /// the card and the number served, or `None` if the card's thread is gone.
    fn attach(tx: &Sender<ToCard>) -> Option<(Self, usize)> {
        let (ack, answer) = mpsc::sync_channel(1);
        tx.send(ToCard::Attach(ack)).ok()?;
        let (atr, active, epoch) = answer.recv().ok()?;
        let card = Self {
            tx: tx.clone(),
            atr,
            attached: true,
            epoch,
        };
        Some((card, active))
    }

    /// Ends this connection's service (the card reset if it was the last): the number
    /// still served, `None` if already detached or the card's thread is gone.
    fn detach(&mut self) -> Option<usize> {
        if !std::mem::replace(&mut self.attached, false) {
            return None;
        }
        let (ack, answer) = mpsc::sync_channel(1);
        self.tx.send(ToCard::Detach(ack)).ok()?;
        answer.recv().ok()
    }
}

/// A connection that ends by a panic still leaves: the last one out resets the card.
impl Drop for SharedCard {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

impl SimulatedCard for SharedCard {
    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn reset(&mut self) {
        tracing::debug!("a client's power event ignored: the card is shared");
    }

    fn handle(&mut self, apdu: &[u8], reply: &mut Vec<u8>) {
        let (ack, answer) = mpsc::sync_channel(1);
        let answered = self
            .tx
            .send(ToCard::Apdu(apdu.to_vec(), self.epoch, ack))
            .ok()
            .and_then(|()| answer.recv().ok());
        match answered {
            Some(Some(r)) => *reply = r,
            // The card was powered up again under this connection: no answer, which ends
            // the connection ([`serve_connection`]).
            Some(None) => reply.clear(),
            // The card's thread is gone (the server is ending): no card to answer.
            None => {
                reply.clear();
                reply.extend_from_slice(&Status::Internal.sw().to_be_bytes());
            }
        }
    }

    fn idle(&mut self) -> bool {
        false
    }
}

/// A client of the vpcd framing (used by the `openpsd` host tools and tests to talk to
/// `card-sim serve --tcp`), over plain TCP or TLS ([`TcpCardClient::connect_tls`]).
pub struct TcpCardClient {
    stream: Box<dyn Wire + Send>,
    out: Vec<u8>,
}

/// A `card-sim serve --tcp` card as core's [`Link`].
impl Link for TcpCardClient {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        TcpCardClient::transmit(self, apdu)
            .map_err(|e| LinkError(format!("card-sim connection: {e}")))
    }
}

impl TcpCardClient {
    /// Connects to a `card-sim serve --tcp` address.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self::on(Box::new(stream)))
    }

    /// The client of a wire already connected (and, for TLS, through its handshake).
    pub(crate) fn on(stream: Box<dyn Wire + Send>) -> Self {
        Self {
            stream,
            out: Vec::new(),
        }
    }

    /// Connects to `addr` within `timeout`, and bounds every later exchange by it too: a
    /// card that does not answer within `timeout` is an I/O error (`TimedOut` or
    /// `WouldBlock`), not a hang. For hosts that keep one connection for a long time (the
    /// data center's box link).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self::on(Box::new(stream)))
    }

    /// Whether the connection is known to be gone without waiting for anything: the card
    /// closed it (its process ended, or its idle bound dropped us), an error is pending,
    /// or bytes nobody asked for wait (the framing is out of step). `false` means only
    /// that nothing says it is gone yet.
    /// Over TLS, bytes waiting are a record nobody asked for: the card's close_notify alert
    /// (it dropped us) or a framing out of step; gone either way.
    pub fn is_closed(&self) -> bool {
        let socket = self.stream.socket();
        if socket.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let gone = match socket.peek(&mut b) {
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            Ok(_) => true,
        };
        socket.set_nonblocking(false).is_err() || gone
    }

    fn exchange(&mut self, body: &[u8], answered: bool) -> io::Result<Vec<u8>> {
        write_frame(&mut self.stream, &mut self.out, body)?;
        if !answered {
            return Ok(Vec::new());
        }
        let mut frame = Vec::new();
        if !read_frame(&mut self.stream, &mut frame)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "card-sim closed the connection",
            ));
        }
        Ok(frame)
    }

    /// Sends a command APDU, returns the response APDU.
    pub fn transmit(&mut self, apdu: &[u8]) -> io::Result<Vec<u8>> {
        if apdu.len() < 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a 0- or 1-byte APDU would be read as a vpcd control code",
            ));
        }
        self.exchange(apdu, true)
    }

    /// The card's ATR.
    pub fn atr(&mut self) -> io::Result<Vec<u8>> {
        self.exchange(&[control::GET_ATR], true)
    }

    /// Resets the card (volatile state lost).
    pub fn reset(&mut self) -> io::Result<()> {
        self.exchange(&[control::RESET], false).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Instant;

    /// A card that answers `9000` to everything.
    struct Ok9000;

    impl SimulatedCard for Ok9000 {
        fn atr(&self) -> &[u8] {
            &[0x3B, 0x00]
        }
        fn reset(&mut self) {}
        fn handle(&mut self, _apdu: &[u8], reply: &mut Vec<u8>) {
            reply.clear();
            reply.extend_from_slice(&[0x90, 0x00]);
        }
    }

    /// `open` (a TLS handshake) runs on the connection's thread: a client stuck in it
    /// delays nobody else.
    #[test]
    fn a_slow_opening_holds_no_other_client() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The "handshake": one byte from the client, within 5 s.
        let open = |mut s: TcpStream| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut hello = [0u8; 1];
            s.read_exact(&mut hello)?;
            Ok(s)
        };
        std::thread::spawn(move || {
            let _ = serve_clients_shared(listener, &mut Ok9000, Duration::from_secs(10), 2, open);
        });
        let _slow = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut fast = TcpStream::connect(addr).unwrap();
        fast.write_all(&[0x01]).unwrap();
        let mut client = TcpCardClient::on(Box::new(fast));
        let t = Instant::now();
        assert_eq!(
            client.transmit(&[0x00, 0xA4, 0x04, 0x00]).unwrap(),
            [0x90, 0x00]
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    /// A card whose memory fails on `FF` (answering `6581`) until powered up again; every
    /// other command answers `9000`. Counts its power-ups.
    struct Flaky {
        failed: bool,
        power_ups: Arc<AtomicUsize>,
    }

    impl SimulatedCard for Flaky {
        fn atr(&self) -> &[u8] {
            &[0x3B, 0x00]
        }
        fn reset(&mut self) {
            self.failed = false;
            self.power_ups.fetch_add(1, Ordering::SeqCst);
        }
        fn handle(&mut self, apdu: &[u8], reply: &mut Vec<u8>) {
            reply.clear();
            if self.failed || apdu == [0xFF, 0, 0, 0] {
                self.failed = true;
                reply.extend_from_slice(&[0x65, 0x81]);
            } else {
                reply.extend_from_slice(&[0x90, 0x00]);
            }
        }
        fn memory_failed(&mut self) -> bool {
            self.failed
        }
    }

    /// A memory failure under one client powers the card up again at once (its memory
    /// re-read) while others are connected: the client that saw `6581`, and the other, are
    /// each closed at their next command, unanswered; a new connection is served by the
    /// recovered card.
    #[test]
    fn a_failed_memory_is_re_read_at_once_and_its_clients_reconnect() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let power_ups = Arc::new(AtomicUsize::new(0));
        let p = Arc::clone(&power_ups);
        std::thread::spawn(move || {
            let mut card = Flaky {
                failed: false,
                power_ups: p,
            };
            let _ = serve_clients_shared(listener, &mut card, Duration::from_secs(10), 3, Ok);
        });
        let select = [0x00, 0xA4, 0x04, 0x00];
        let mut a = TcpCardClient::connect(addr).unwrap();
        let mut b = TcpCardClient::connect(addr).unwrap();
        assert_eq!(a.transmit(&select).unwrap(), [0x90, 0x00]);
        assert_eq!(b.transmit(&select).unwrap(), [0x90, 0x00]);
        assert_eq!(power_ups.load(Ordering::SeqCst), 1);
        assert_eq!(b.transmit(&[0xFF, 0, 0, 0]).unwrap(), [0x65, 0x81]);
        assert!(
            a.transmit(&select).is_err(),
            "a's selection went with the power-up"
        );
        assert!(b.transmit(&select).is_err(), "b's too");
        // The power-up at the failure, and one more if both ends were seen already.
        assert!(power_ups.load(Ordering::SeqCst) >= 2);
        let mut c = TcpCardClient::connect(addr).unwrap();
        assert_eq!(c.transmit(&select).unwrap(), [0x90, 0x00], "recovered");
    }
}
