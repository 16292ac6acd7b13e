//! What a client is: its identity, its server and its transport.

use core::net::SocketAddr;

use cpm_msrp::MsrpUri;
use cpm_sip_core::TransportKind;
use sha2::{Digest as _, Sha256};

use crate::rng::format_uuid;

/// The configuration of one client (one device of one user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The address of record, `user@domain` (`alice@localhost`); also the digest username.
    pub aor: String,
    /// The digest password.
    pub password: String,
    /// The device name; with the AOR it makes the stable `+sip.instance` of this device.
    pub device: String,
    /// The SIP server (the node's SIP/IP Core) every request goes to.
    pub server: SocketAddr,
    /// UDP or TCP.
    pub transport: TransportKind,
    /// Our address as the server sees it: the Via sent-by and the Contact (the driver updates
    /// it through [`crate::Client::handle_connected`] when a TCP connection opens).
    pub local_addr: SocketAddr,
    /// The registration lifetime asked for, in seconds (the server may grant less).
    pub expires: u32,
    /// Seed of every random identifier (branches, tags, Call-IDs, cnonces, UUIDs, message ids).
    pub seed: u64,
    /// Whether the device registers the `…oma.cpm.deferred` ICSI, i.e. takes the messages the
    /// network kept while the user was offline. A short-lived device (such as the one `cpm
    /// client send --wait-imdn` registers to hear the notifications) leaves it out, so that
    /// the user's stored messages wait for a real device.
    pub deferred: bool,
    /// Whether the device registers the `…oma.cpm.session` ICSI, i.e. takes chat sessions
    /// (and is offered them by the network).
    pub sessions: bool,
    /// Whether incoming sessions are accepted at once (180 then 200); otherwise the
    /// application answers each [`crate::Event::SessionIncoming`] itself.
    pub auto_accept: bool,
    /// Whether the device takes file transfers (RFC 5547 push, the `…oma.cpm.filetransfer`
    /// ICSI, registered when set): the application must then write what
    /// [`crate::Event::FileData`] gives it. Off, offers of files are refused (488).
    pub file_transfer: bool,
    /// An MSRP relay (RFC 4976) every session's media goes through, or `None` for a direct
    /// connection to the network's MSRP endpoint. Before it offers or answers a session's
    /// SDP, the client opens a connection to the relay, authenticates with AUTH (answering
    /// its digest challenge with [`ClientConfig::aor`] and [`ClientConfig::password`]) and
    /// puts the relay's Use-Path before its own URI in `a=path`.
    pub msrp_relay: Option<MsrpRelay>,
}

/// Where an MSRP relay is (RFC 4976).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsrpRelay {
    /// The relay's URI, `msrp://HOST:PORT;tcp`: the To-Path of AUTH.
    pub uri: MsrpUri,
    /// The address to connect to (the client resolves no names: the driver does, for a URI
    /// with a host name).
    pub addr: SocketAddr,
}

impl MsrpRelay {
    /// The relay at `uri`, whose host must be an IP address (with its port, 2855 when the
    /// URI has none, RFC 4975 section 15.1); `None` otherwise.
    pub fn from_uri(uri: MsrpUri) -> Option<Self> {
        let ip: core::net::IpAddr = uri
            .host()
            .as_str()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let addr = SocketAddr::new(ip, uri.port().unwrap_or(2855));
        Some(Self { uri, addr })
    }
}

impl ClientConfig {
    /// A configuration with the defaults: device `default`, UDP, 600 s, seed 0, deferred
    /// messages and sessions taken, sessions accepted at once, file transfers refused, no MSRP
    /// relay.
    pub fn new(
        aor: impl Into<String>,
        password: impl Into<String>,
        server: SocketAddr,
        local_addr: SocketAddr,
    ) -> Self {
        Self {
            aor: aor.into(),
            password: password.into(),
            device: "default".to_owned(),
            server,
            transport: TransportKind::Udp,
            local_addr,
            expires: 600,
            seed: 0,
            deferred: true,
            sessions: true,
            auto_accept: true,
            file_transfer: false,
            msrp_relay: None,
        }
    }

    /// Splits the AOR into user and domain, checking both are present.
    pub(crate) fn user_domain(&self) -> Result<(String, String), ConfigError> {
        let aor = self.aor.strip_prefix("sip:").unwrap_or(&self.aor);
        match aor.split_once('@') {
            Some((u, d))
                if !u.is_empty()
                    && !d.is_empty()
                    && !d.contains('@')
                    && [u, d].iter().all(|s| {
                        s.bytes()
                            .all(|b| b.is_ascii_graphic() && !b"<>\"';,?&".contains(&b))
                    }) =>
            {
                Ok((u.to_owned(), d.to_ascii_lowercase()))
            }
            _ => Err(ConfigError::BadAor(self.aor.clone())),
        }
    }
}

/// A configuration the client cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The AOR is not `user@domain`.
    #[error("address of record {0:?} is not user@domain")]
    BadAor(String),
    /// The expiry is zero.
    #[error("expires must be at least 1 second")]
    ZeroExpires,
}

/// The device's instance id, `urn:uuid:…`, stable per (AOR, device name): a UUID made from
/// the SHA-256 of both (version 8, RFC 9562 section 5.8), so the registrar sees the same device
/// across restarts and replaces its binding rather than adding one.
pub fn instance_id(aor: &str, device: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"cpm-client instance\0");
    h.update(aor.as_bytes());
    h.update(b"\0");
    h.update(device.as_bytes());
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    format!("urn:uuid:{}", format_uuid(b, 8))
}
