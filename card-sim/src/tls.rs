//! Mutual TLS around the TCP framing (`card-sim serve --tcp ADDR --tls-cert … --tls-key …
//! --client-ca … --client-name NAME`): TLS 1.3 only, rustls with the `ring` provider (the
//! back office's choice too), and a client certificate **required**: it must chain to the
//! given CA *and* name NAME (a DNS name in its subject alternative names, e.g.
//! `datacenter.openpsd`), so a certificate the same CA issued to another party is refused
//! as well. Refusals happen in the handshake, before the card is reset or sees a frame
//! ([`crate::transport`]'s `serve_clients`).
//!
//! Why a name and not only the CA: one CA certifies every service of a deployment (the
//! back office's `pki init`), and only one of them may drive this card. Why a handshake
//! deadline: the card serves one client at a time, and a client that connects and stays
//! silent in the handshake would otherwise hold it for the whole idle bound. A box served
//! to several clients (`--clients N`, [`run_tls_server_shared`]) runs each handshake on
//! its connection's own thread; there the deadline bounds how long a silent client holds
//! one of the N places.
//!
//! The frames inside the session are the plain framing's bytes. No session tickets: a
//! client keeps one long-lived connection, and unsolicited ticket records would wait on
//! its socket where [`TcpCardClient::is_closed`] reads them as the card's goodbye.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, ConnectionCommon, DigitallySignedStruct,
    DistinguishedName, RootCertStore, ServerConfig, ServerConnection, SideData, SignatureScheme,
    StreamOwned,
};

use crate::sim::SimulatedCard;
use crate::transport::{serve_clients, serve_clients_shared, TcpCardClient, Wire, CLIENT_IDLE};

/// How long a client has to finish the TLS handshake, from its connection's accept (the
/// server) or connect (the client).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = zeroize::Zeroizing::new(
        fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    );
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// A DNS name a certificate must be valid for (`datacenter.openpsd`, `box.openpsd`).
pub fn dns_name(name: &str) -> Result<ServerName<'static>> {
    match ServerName::try_from(name.to_owned()) {
        Ok(n @ ServerName::DnsName(_)) if !name.contains('*') => Ok(n),
        _ => anyhow::bail!("{name:?} is not a DNS name"),
    }
}

/// The client verifier: the CA's chain (rustls's own verifier), then the name.
#[derive(Debug)]
struct NamedClient {
    chain: Arc<dyn ClientCertVerifier>,
    name: ServerName<'static>,
}

impl ClientCertVerifier for NamedClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let bad = rustls::Error::InvalidCertificate;
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| bad(CertificateError::BadEncoding))?;
        // A wildcard name would make one certificate every party's: it proves none.
        if ee.valid_dns_names().any(|n| n.contains('*')) {
            return Err(bad(CertificateError::NotValidForName));
        }
        ee.verify_is_valid_for_subject_name(&self.name)
            .map_err(|_| bad(CertificateError::NotValidForName))?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The server's configuration: its certificate chain and key (PEM files), and a client
/// certificate required that chains to `client_ca` and is valid for `client_name`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    client_name: &str,
) -> Result<Arc<ServerConfig>> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(client_ca)? {
        roots
            .add(c)
            .with_context(|| format!("{}: not a CA certificate", client_ca.display()))?;
    }
    let chain = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| anyhow!("client verifier: {e}"))?;
    let verifier = Arc::new(NamedClient {
        chain,
        name: dns_name(client_name).context("--client-name")?,
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .with_context(|| format!("{} and {}", cert.display(), key.display()))?;
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// Runs a handshake on `sock` to its end within `within`; on a refusal, the alert rustls
/// made is sent (best effort) so the peer learns why.
fn handshake<S: SideData>(
    conn: &mut ConnectionCommon<S>,
    sock: &mut TcpStream,
    within: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + within;
    let late = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake not done within {within:?}"),
        )
    };
    let timed = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => late(),
        _ => e,
    };
    loop {
        // Bounded by what is left, not per read: a client trickling a byte at a time must
        // not stretch the handshake.
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(late)?;
        sock.set_read_timeout(Some(left))?;
        sock.set_write_timeout(Some(left))?;
        while conn.wants_write() {
            conn.write_tls(sock).map_err(timed)?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        if conn.read_tls(sock).map_err(timed)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake",
            ));
        }
        if let Err(e) = conn.process_new_packets() {
            let _ = conn.write_tls(sock);
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, e));
        }
    }
}

/// The server's side of an accepted connection: the handshake within
/// [`HANDSHAKE_TIMEOUT`], then the session (its socket's timeouts the caller's to set).
pub fn accept(
    mut sock: TcpStream,
    config: &Arc<ServerConfig>,
) -> io::Result<StreamOwned<ServerConnection, TcpStream>> {
    let mut conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
    handshake(&mut *conn, &mut sock, HANDSHAKE_TIMEOUT)?;
    Ok(StreamOwned::new(conn, sock))
}

/// Serves the card to TLS clients at `listener` as [`crate::transport::run_tcp_server`]
/// does to plain ones (one at a time, each a fresh power-up, dropped after
/// [`CLIENT_IDLE`] silent); a client refused in the handshake is logged and never reaches
/// the card.
pub fn run_tls_server(
    listener: std::net::TcpListener,
    card: &mut dyn SimulatedCard,
    config: Arc<ServerConfig>,
) -> io::Result<()> {
    run_tls_server_with(listener, card, config, CLIENT_IDLE)
}

/// [`run_tls_server`] with another idle bound (tests).
pub fn run_tls_server_with(
    listener: std::net::TcpListener,
    card: &mut dyn SimulatedCard,
    config: Arc<ServerConfig>,
    idle: Duration,
) -> io::Result<()> {
    serve_clients(listener, card, idle, |sock| accept(sock, &config))
}

/// Serves the box to up to `max` TLS clients at once (`serve --tcp … --tls-cert …
/// --clients N`), as [`crate::transport::run_tcp_server_shared`] does to plain ones: one
/// whole APDU at a time on the one card, a connection beyond `max` closed at once, the
/// card reset when the first connection arrives and when the last ends, clients' power
/// events ignored. Each connection's handshake runs on its own thread, so a slow
/// handshaker (up to [`HANDSHAKE_TIMEOUT`]) holds one of the `max` places but delays no
/// other client; a client refused in the handshake never reaches the card.
pub fn run_tls_server_shared(
    listener: std::net::TcpListener,
    card: &mut dyn SimulatedCard,
    config: Arc<ServerConfig>,
    max: u16,
) -> io::Result<()> {
    run_tls_server_shared_with(listener, card, config, max, CLIENT_IDLE)
}

/// [`run_tls_server_shared`] with another idle bound (tests).
pub fn run_tls_server_shared_with(
    listener: std::net::TcpListener,
    card: &mut dyn SimulatedCard,
    config: Arc<ServerConfig>,
    max: u16,
    idle: Duration,
) -> io::Result<()> {
    serve_clients_shared(listener, card, idle, max, move |sock| accept(sock, &config))
}

impl Wire for StreamOwned<ServerConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }

    fn pending(&mut self) -> bool {
        // An error is input too: the next read reports it.
        self.conn
            .process_new_packets()
            .map_or(true, |s| s.plaintext_bytes_to_read() > 0)
    }
}

impl Wire for StreamOwned<ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }

    fn pending(&mut self) -> bool {
        self.conn
            .process_new_packets()
            .map_or(true, |s| s.plaintext_bytes_to_read() > 0)
    }
}

impl TcpCardClient {
    /// Connects to a `card-sim serve --tcp … --tls-cert …` at `addr` within `timeout`,
    /// through a TLS handshake under `config` (its client certificate included) that checks
    /// the card's certificate is valid for `server_name`; every later exchange is bounded
    /// by `timeout` too, as with [`TcpCardClient::connect_timeout`].
    ///
    /// In TLS 1.3 the server judges the client's certificate after the client's last
    /// handshake message: a card that refuses it is seen at the first exchange (an alert).
    pub fn connect_tls(
        addr: &SocketAddr,
        timeout: Duration,
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> io::Result<Self> {
        let mut sock = TcpStream::connect_timeout(addr, timeout)?;
        sock.set_nodelay(true)?;
        let mut conn = ClientConnection::new(config, server_name).map_err(io::Error::other)?;
        handshake(&mut *conn, &mut sock, timeout)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        Ok(Self::on(Box::new(StreamOwned::new(conn, sock))))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_client_name_is_one_dns_name() {
        assert!(dns_name("datacenter.openpsd").is_ok());
        for bad in ["*.openpsd", "127.0.0.1", "", "not a name"] {
            assert!(dns_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        let e = server_config(
            &dir.path().join("box.crt"),
            &dir.path().join("box.key"),
            &ca,
            "x.openpsd",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("ca.crt"), "{e:#}");
        fs::write(&ca, "not PEM").unwrap();
        let e = server_config(
            &dir.path().join("box.crt"),
            &dir.path().join("box.key"),
            &ca,
            "x.openpsd",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("holds no certificate"), "{e:#}");
    }
}
