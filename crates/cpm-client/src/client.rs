//! The client state machine: registration, outgoing pager messages, incoming messages and
//! IMDNs. See the crate documentation for the driver contract.

use core::net::SocketAddr;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_content::{
    CopyControl, CpimAddress, CpimBuilder, DeliveryStatus, DisplayStatus, Disposition, ListEntry,
    Multipart, Notification, Part, ProcessingStatus, ResourceList, mime,
};
use cpm_sip::{
    Contact, Frame, Header, HeaderName, Limits, Message, Method, Request, Response, Scope,
    StatusCode, StreamFramer, Uri, check_request, is_keepalive,
};
use cpm_sip_core::digest::{self, Algorithm, Challenge};
use cpm_sip_core::transaction::{
    ClientKey, MAGIC_COOKIE, RequestDisposition, ResponseDisposition, ServerKey, TimerConfig,
    TransactionLayer, TxEvent, response_to,
};
use cpm_sip_core::{Peer, Transmit, TransportKind};

mod event;
mod receive;
mod session;

use receive::{Inbound, Origin};

pub use event::{Event, ReceivedImdn, ReceivedMessage, SendError};
use session::Sessions;
pub use session::{
    FILE_CHUNK, FILE_WINDOW, LARGE_MESSAGE_THRESHOLD, MAX_QUEUED, SessionId, SessionKind,
};

use crate::config::{ClientConfig, ConfigError, instance_id};
use crate::rng::Rng;
use crate::time::rfc3339_ms;

// The CPM service identifiers the client registers and sends (one copy, in the codec).
pub use cpm_sip::cpm::{
    ICSI_DEFERRED, ICSI_FILETRANSFER, ICSI_LARGEMSG, ICSI_MSG, ICSI_MSG_GROUP, ICSI_SESSION,
};
/// The user part of the 1-N pager exploder URI, `sip:cpm-exploder@<domain>`.
pub const EXPLODER_USER: &str = "cpm-exploder";

/// How many received message ids are remembered for duplicate suppression.
pub const DEDUP_CAPACITY: usize = 10_000;
/// How many received messages that asked for a display notification are remembered.
const DISPLAY_CAPACITY: usize = 10_000;
/// Interval of the RFC 5626 CRLFCRLF keep-alive on TCP (section 4.4.1: 95 to 120 s), also
/// what keeps a server's idle timeout from closing the flow between registration refreshes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(120);
/// Authenticated attempts per request: a second one covers a stale or cached nonce.
const MAX_AUTH_TRIES: u8 = 2;
/// Longest wait between registration retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("cpm-client/", env!("CARGO_PKG_VERSION"));

/// Names one [`Client::send_message`] call; its [`Event::SendResult`] carries it back.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq, Ord, PartialOrd)]
pub struct SendId(pub u64);

/// `"delivered"`, `"displayed"`, `"failed"`, ...: the status element of a notification.
pub fn notification_status(n: Notification) -> &'static str {
    match n {
        Notification::Delivery(DeliveryStatus::Delivered) => "delivered",
        Notification::Delivery(DeliveryStatus::Failed) => "failed",
        Notification::Display(DisplayStatus::Displayed) => "displayed",
        Notification::Processing(ProcessingStatus::Processed) => "processed",
        Notification::Processing(ProcessingStatus::Stored) => "stored",
        Notification::Delivery(DeliveryStatus::Forbidden)
        | Notification::Display(DisplayStatus::Forbidden)
        | Notification::Processing(ProcessingStatus::Forbidden) => "forbidden",
        Notification::Delivery(DeliveryStatus::Error)
        | Notification::Display(DisplayStatus::Error)
        | Notification::Processing(ProcessingStatus::Error) => "error",
    }
}

/// `"delivery"`, `"display"` or `"processing"`: the kind of a notification.
pub fn notification_kind(n: Notification) -> &'static str {
    match n {
        Notification::Delivery(_) => "delivery",
        Notification::Display(_) => "display",
        Notification::Processing(_) => "processing",
    }
}

/// `user@domain` for a `sip:`/`sips:`/`im:` URI or a bare `user@domain` (see
/// [`cpm_sip::cpm::aor_of_text`]); any other text as it is, trimmed.
pub fn aor_of(uri: &str) -> String {
    cpm_sip::cpm::aor_of_text(uri).unwrap_or_else(|| {
        uri.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned()
    })
}

/// What a client transaction is for.
#[derive(Clone, Debug)]
pub(crate) enum Purpose {
    Register {
        expires: u32,
    },
    Unregister,
    Message {
        id: SendId,
        message_id: String,
    },
    Notification {
        to: String,
        message_id: String,
        notification: Notification,
    },
    /// The INVITE of a session (chat or Large Message Mode) we started.
    Invite {
        session: SessionId,
    },
    /// The BYE that ends a session (the session is already gone).
    Bye,
}

/// A client transaction in flight, with what a digest retry needs.
#[derive(Clone, Debug)]
struct Pending {
    purpose: Purpose,
    request: Request,
    auth_tries: u8,
    /// Creation order (the map's iteration order is not deterministic).
    seq: u64,
}

/// A challenge we answered, reused (with the next `nc`) on later requests.
#[derive(Clone, Debug)]
struct CachedChallenge {
    challenge: Challenge,
    nc: u32,
}

/// A sans-IO CPM client. See the crate documentation for the driver contract.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    domain: String,
    user: String,
    /// `sip:user@domain`.
    own_uri: String,
    /// `sip:domain`, the REGISTER Request-URI.
    registrar: Uri,
    /// `urn:uuid:…`.
    instance: String,
    t0: Instant,
    unix0: u64,
    rng: Rng,
    tx: TransactionLayer,

    // Registration.
    reg_call_id: String,
    reg_from_tag: String,
    reg_cseq: u32,
    want_registered: bool,
    registered: bool,
    reg_in_flight: Option<ClientKey>,
    unreg_in_flight: Option<ClientKey>,
    reg_timer: Option<Instant>,
    reg_failures: u32,

    // Authentication.
    www_auth: Option<CachedChallenge>,
    proxy_auth: Option<CachedChallenge>,

    // Sending.
    next_send: u64,
    pending: HashMap<ClientKey, Pending>,
    pending_seq: u64,
    conversations: HashMap<String, String>,

    // Receiving.
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    display_requests: HashMap<String, Origin>,
    display_order: VecDeque<String>,

    // Transport.
    framer: StreamFramer,
    stream_buf: BytesMut,
    close_requested: bool,
    keepalive_at: Option<Instant>,

    // Sessions (chat and Large Message Mode over MSRP): `session.rs`.
    sessions: Sessions,

    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Client {
    /// A client. `now` and `unix_ms` anchor the wall clock (CPIM `DateTime`, IMDN `datetime`):
    /// the wall time at `now + d` is `unix_ms + d`.
    pub fn new(cfg: ClientConfig, now: Instant, unix_ms: u64) -> Result<Self, ConfigError> {
        let (user, domain) = cfg.user_domain()?;
        if cfg.expires == 0 {
            return Err(ConfigError::ZeroExpires);
        }
        let mut rng = Rng::new(cfg.seed);
        let instance = instance_id(&format!("{user}@{domain}"), &cfg.device);
        let reg_call_id = rng.hex(24);
        let reg_from_tag = rng.hex(12);
        let tx = TransactionLayer::with_seed(TimerConfig::default(), rng.next_u64());
        let registrar = Uri::parse(&format!("sip:{domain}"))
            .map_err(|_| ConfigError::BadAor(cfg.aor.clone()))?;
        Uri::parse(&format!("sip:{user}@{domain}"))
            .map_err(|_| ConfigError::BadAor(cfg.aor.clone()))?;
        Ok(Self {
            registrar,
            own_uri: format!("sip:{user}@{domain}"),
            domain,
            user,
            instance,
            t0: now,
            unix0: unix_ms,
            rng,
            tx,
            reg_call_id,
            reg_from_tag,
            reg_cseq: 0,
            want_registered: false,
            registered: false,
            reg_in_flight: None,
            unreg_in_flight: None,
            reg_timer: None,
            reg_failures: 0,
            www_auth: None,
            proxy_auth: None,
            next_send: 1,
            pending: HashMap::new(),
            pending_seq: 0,
            conversations: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            display_requests: HashMap::new(),
            display_order: VecDeque::new(),
            framer: StreamFramer::new(Limits::default()),
            stream_buf: BytesMut::new(),
            close_requested: false,
            keepalive_at: None,
            sessions: Sessions::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Our own URI, `sip:user@domain`.
    pub fn own_uri(&self) -> &str {
        &self.own_uri
    }

    /// The device's `+sip.instance` value, `urn:uuid:…`.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Whether the last REGISTER succeeded and the binding has not been removed since.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Whether client transactions are still waiting for a final response.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The wall-clock time at `now`, in milliseconds since the Unix epoch.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        self.unix0 + now.saturating_duration_since(self.t0).as_millis() as u64
    }

    /// The `imdn.Message-ID` of a send still waiting for its final response.
    pub fn message_id(&self, id: SendId) -> Option<&str> {
        self.pending
            .values()
            .find_map(|p| match &p.purpose {
                Purpose::Message { id: i, message_id } if *i == id => Some(message_id.as_str()),
                _ => None,
            })
            .or_else(|| self.sessions.message_id(id))
    }

    // ---------------------------------------------------------------- commands

    /// Registers (and keeps the registration refreshed at half the granted expiry, and
    /// renewed after a lost connection) until [`Client::unregister`].
    pub fn register(&mut self, now: Instant) {
        self.want_registered = true;
        self.reg_failures = 0;
        if self.reg_in_flight.is_none() {
            self.send_register(now);
        }
    }

    /// Removes our binding (REGISTER with `Expires: 0`) and stops refreshing. An
    /// [`Event::Unregistered`] follows: at once if nothing is registered or being registered.
    pub fn unregister(&mut self, now: Instant) {
        self.want_registered = false;
        self.reg_timer = None;
        if !self.registered && self.reg_in_flight.is_none() {
            self.events.push_back(Event::Unregistered { status: 0 });
            return;
        }
        self.registered = false;
        let mut req = self.register_request(0);
        self.preauthorize(&mut req, false);
        if let Some(key) = self.start(now, req, Purpose::Unregister) {
            self.unreg_in_flight = Some(key);
        }
    }

    /// Sends a pager-mode message with `text` (`text/plain`) to `to` (AORs `user@domain`,
    /// bare user names in our domain, or SIP URIs). One recipient: a `MESSAGE` to that
    /// recipient; several: an RFC 5365 1-N pager request to `sip:cpm-exploder@<domain>`.
    /// Either way the body is CPIM asking for delivery and display notifications; the final
    /// response comes as [`Event::SendResult`].
    pub fn send_message(
        &mut self,
        now: Instant,
        to: &[String],
        text: &str,
    ) -> Result<SendId, SendError> {
        if to.is_empty() {
            return Err(SendError::NoRecipient);
        }
        let mut targets: Vec<String> = Vec::with_capacity(to.len());
        for t in to {
            let uri = self.target_uri(t)?;
            if !targets.contains(&uri) {
                targets.push(uri);
            }
        }
        if let [target] = targets.as_slice()
            && text.len() > LARGE_MESSAGE_THRESHOLD
        {
            // OMA CPM 5.2.2 (PROTOCOL.md row 10): over 1,300 bytes a pager MESSAGE is not
            // allowed; Large Message Mode carries it in an MSRP session instead.
            let target = target.clone();
            return self.send_large(now, &target, text);
        }
        let (cpim, message_id) = self.build_cpim(now, &targets, text)?;
        let conversation_id = self.conversation_for(&targets);
        let contribution_id = self.rng.uuid();
        let group = targets.len() > 1;
        let (ruri, icsi) = if group {
            (
                format!("sip:{EXPLODER_USER}@{}", self.domain),
                ICSI_MSG_GROUP,
            )
        } else {
            (targets[0].clone(), ICSI_MSG)
        };
        let call_id = self.rng.hex(24);
        let from_tag = self.rng.hex(12);
        let uri = Uri::parse(&ruri).map_err(|_| SendError::BadRecipient(ruri.clone()))?;
        let mut req = self.request(
            Method::Message,
            uri,
            &format!("<{ruri}>"),
            &call_id,
            &from_tag,
            1,
        );
        add_icsi_headers(&mut req, icsi);
        req.headers
            .push(Header::new(HeaderName::ConversationId, &conversation_id));
        req.headers
            .push(Header::new(HeaderName::ContributionId, &contribution_id));
        if group {
            req.headers
                .push(Header::new(HeaderName::Require, "recipient-list-message"));
            let list = ResourceList {
                entries: targets
                    .iter()
                    .map(|u| ListEntry {
                        uri: u.clone(),
                        copy_control: Some(CopyControl::To),
                    })
                    .collect(),
            };
            let body = Multipart {
                boundary: format!("cpm-boundary-{}", self.rng.hex(16)),
                parts: vec![
                    Part::new(mime::APPLICATION_RESOURCE_LISTS_XML, list.to_xml())
                        .with_header("Content-Disposition", "recipient-list"),
                    Part::new(mime::MESSAGE_CPIM, cpim),
                ],
            };
            let bytes = body
                .to_bytes()
                .map_err(|e| SendError::Body(e.to_string()))?;
            set_body(&mut req, &body.content_type(), bytes);
        } else {
            set_body(&mut req, mime::MESSAGE_CPIM, cpim);
        }
        if !self.registered {
            self.preauthorize(&mut req, true);
        }
        let id = SendId(self.next_send);
        self.next_send += 1;
        self.start(now, req, Purpose::Message { id, message_id });
        Ok(id)
    }

    /// A CPIM message (RFC 3862) from us to `targets` with `text` (`text/plain`), asking for
    /// delivery and display notifications (RFC 5438 section 6); with its `imdn.Message-ID`.
    pub(crate) fn build_cpim(
        &mut self,
        now: Instant,
        targets: &[String],
        text: &str,
    ) -> Result<(Bytes, String), SendError> {
        let message_id = self.rng.token(16);
        let date_time = rfc3339_ms(self.unix_ms(now));
        let mut cpim = CpimBuilder::new().from(&CpimAddress::new(self.own_uri.clone()));
        for t in targets {
            cpim = cpim.to(&CpimAddress::new(t.clone()));
        }
        let cpim = cpim
            .date_time(date_time)
            .message_id(message_id.clone())
            .disposition_notification(&[
                Disposition::PositiveDelivery,
                Disposition::NegativeDelivery,
                Disposition::Display,
            ])
            .content_type("text/plain;charset=UTF-8")
            .body(Bytes::copy_from_slice(text.as_bytes()))
            .build()
            .map_err(|e| SendError::Body(e.to_string()))?
            .to_bytes();
        Ok((cpim, message_id))
    }

    /// Sends the display notification for a received message, if its sender asked for one
    /// and none was sent yet; returns whether one was sent.
    pub fn send_displayed(&mut self, now: Instant, message_id: &str) -> bool {
        let Some(origin) = self.display_requests.remove(message_id) else {
            return false;
        };
        self.display_order.retain(|m| m != message_id);
        self.send_notification(
            now,
            &origin,
            message_id,
            Notification::Display(DisplayStatus::Displayed),
        );
        true
    }

    // ---------------------------------------------------------------- inputs

    /// A UDP datagram from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: Bytes) {
        if is_keepalive(&data) {
            return;
        }
        // A malformed datagram is dropped: a client has no use for a 400 to garbage.
        if let Ok(msg) = Message::parse_datagram(data, &Limits::default()) {
            self.handle_message(now, Peer::udp(source), msg);
        }
    }

    /// Bytes read from the TCP connection to the server, in order. A framing error asks the
    /// driver to close the connection ([`Client::poll_close`]).
    pub fn handle_stream_data(&mut self, now: Instant, data: &[u8]) {
        self.stream_buf.extend_from_slice(data);
        loop {
            match self.framer.decode(&mut self.stream_buf) {
                Ok(Some(Frame::Message(msg))) => {
                    let peer = self.server_peer();
                    self.handle_message(now, peer, msg);
                }
                Ok(Some(Frame::KeepAlive)) => {}
                Ok(None) => break,
                Err(e) if e.scope() == Scope::Connection => {
                    self.close_requested = true;
                    self.stream_buf.clear();
                    self.framer = StreamFramer::new(Limits::default());
                    break;
                }
                Err(_) => {}
            }
        }
    }

    /// The driver opened a TCP connection to the server, from `local`.
    pub fn handle_connected(&mut self, now: Instant, local: SocketAddr) {
        self.cfg.local_addr = local;
        self.stream_buf.clear();
        self.framer = StreamFramer::new(Limits::default());
        if self.cfg.transport == TransportKind::Tcp {
            self.keepalive_at = Some(now + KEEPALIVE_INTERVAL);
        }
    }

    /// The TCP connection closed (or could not be opened). Requests in flight fail with 503;
    /// if we want to be registered, a new REGISTER follows (at once the first time, then
    /// with a growing delay), which makes the driver connect again.
    pub fn handle_connection_closed(&mut self, now: Instant) {
        self.keepalive_at = None;
        self.close_requested = false;
        self.stream_buf.clear();
        self.framer = StreamFramer::new(Limits::default());
        if self.cfg.transport != TransportKind::Tcp {
            return;
        }
        let mut keys: Vec<(u64, ClientKey)> = self
            .pending
            .iter()
            .map(|(k, p)| (p.seq, k.clone()))
            .collect();
        keys.sort_by_key(|(seq, _)| *seq);
        for (_, key) in keys {
            if let Some(p) = self.pending.remove(&key) {
                self.tx.transport_error(&key);
                self.finish(now, &key, p.purpose, 503, "Connection Closed", None);
            }
        }
        // Drop the Timeout events transport_error queued: those requests are finished.
        while self.tx.poll_event().is_some() {}
        if self.want_registered {
            self.registered = false;
            // A REGISTER that failed just now scheduled its own retry; otherwise the refresh
            // timer is replaced by an early re-registration.
            let retry_scheduled =
                self.reg_timer.is_some_and(|t| t <= now + MAX_BACKOFF) && self.reg_failures > 0;
            if self.reg_in_flight.is_none() && !retry_scheduled {
                self.reg_timer = Some(now + self.backoff());
                self.reg_failures += 1;
            }
        }
    }

    /// Runs the timers due at `now` (idempotent; early calls do nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.process_tx_events(now);
        self.handle_session_timeouts(now);
        if self.reg_timer.is_some_and(|t| t <= now) {
            self.reg_timer = None;
            if self.want_registered && self.reg_in_flight.is_none() {
                self.send_register(now);
            }
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.keepalive_at = Some(now + KEEPALIVE_INTERVAL);
            let peer = self.server_peer();
            self.transmits.push_back(Transmit {
                peer,
                payload: Bytes::from_static(b"\r\n\r\n"),
            });
        }
    }

    // ---------------------------------------------------------------- outputs

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits
            .pop_front()
            .or_else(|| self.tx.poll_transmit())
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next deadline: call [`Client::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.tx.poll_timeout(),
            self.reg_timer,
            self.keepalive_at,
            self.sessions.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the core wants the TCP connection closed (framing lost); true once per
    /// request. The driver closes it and reports [`Client::handle_connection_closed`].
    pub fn poll_close(&mut self) -> bool {
        std::mem::take(&mut self.close_requested)
    }

    // ---------------------------------------------------------------- internals

    fn server_peer(&self) -> Peer {
        match self.cfg.transport {
            TransportKind::Udp => Peer::udp(self.cfg.server),
            // A client is always across the network: an in-node kind means a stream.
            TransportKind::Tcp | TransportKind::Local(_) => Peer::tcp(self.cfg.server, None),
        }
    }

    fn backoff(&self) -> Duration {
        if self.reg_failures == 0 {
            return Duration::ZERO;
        }
        let secs = 1u64 << self.reg_failures.saturating_sub(1).min(6);
        Duration::from_secs(secs).min(MAX_BACKOFF)
    }

    /// A user-given recipient as a URI: `sip:user@domain` for `user@domain`, our domain
    /// for a bare user name, SIP and tel URIs as they are.
    fn target_uri(&self, t: &str) -> Result<String, SendError> {
        let t = t.trim();
        let bad = || SendError::BadRecipient(t.to_owned());
        let lower = t.to_ascii_lowercase();
        let uri =
            if lower.starts_with("sip:") || lower.starts_with("sips:") || lower.starts_with("tel:")
            {
                t.to_owned()
            } else if t.contains('@') {
                format!("sip:{t}")
            } else if !t.is_empty() {
                format!("sip:{t}@{}", self.domain)
            } else {
                return Err(bad());
            };
        match Uri::parse(&uri) {
            Ok(Uri::Sip(u)) if u.user.is_some() => Ok(uri),
            Ok(Uri::Tel(_)) => Ok(uri),
            _ => Err(bad()),
        }
    }

    /// The Conversation-ID for a set of peers: the same for the client's lifetime.
    fn conversation_for(&mut self, targets: &[String]) -> String {
        let mut key: Vec<String> = targets.iter().map(|t| aor_of(t)).collect();
        key.sort();
        let key = key.join(",");
        if let Some(c) = self.conversations.get(&key) {
            return c.clone();
        }
        if self.conversations.len() >= DEDUP_CAPACITY {
            self.conversations.clear();
        }
        let c = self.rng.uuid();
        self.conversations.insert(key, c.clone());
        c
    }

    fn via(&mut self) -> String {
        format!(
            "SIP/2.0/{} {};branch={MAGIC_COOKIE}{};rport",
            self.cfg.transport.as_via_token(),
            self.cfg.local_addr,
            self.rng.hex(20)
        )
    }

    /// A request with the headers every request of ours has (Via, Max-Forwards, From, To,
    /// Call-ID, CSeq, User-Agent).
    fn request(
        &mut self,
        method: Method,
        uri: Uri,
        to: &str,
        call_id: &str,
        from_tag: &str,
        cseq: u32,
    ) -> Request {
        let mut req = Request::new(method.clone(), uri);
        let via = self.via();
        let h = &mut req.headers;
        h.push(Header::new(HeaderName::Via, &via));
        h.push(Header::new(HeaderName::MaxForwards, "70"));
        h.push(Header::new(
            HeaderName::From,
            &format!("<{}>;tag={from_tag}", self.own_uri),
        ));
        h.push(Header::new(HeaderName::To, to));
        h.push(Header::new(HeaderName::CallId, call_id));
        h.push(Header::new(HeaderName::CSeq, &format!("{cseq} {method}")));
        h.push(Header::new(HeaderName::UserAgent, USER_AGENT));
        req
    }

    /// The Contact of our REGISTER: every service the device takes (PROTOCOL.md row 1).
    fn contact(&self) -> String {
        let icsis: Vec<&str> = [
            ICSI_MSG,
            ICSI_LARGEMSG,
            ICSI_DEFERRED,
            ICSI_SESSION,
            ICSI_FILETRANSFER,
        ]
        .into_iter()
        .filter(|i| self.cfg.deferred || *i != ICSI_DEFERRED)
        .filter(|i| self.cfg.sessions || *i != ICSI_SESSION)
        .filter(|i| self.cfg.file_transfer || *i != ICSI_FILETRANSFER)
        .collect();
        self.contact_for(&icsis)
    }

    /// Our Contact with these ICSIs in `+g.3gpp.icsi-ref` (TS 24.229 7.2A.8).
    pub(crate) fn contact_for(&self, icsis: &[&str]) -> String {
        let transport = match self.cfg.transport {
            TransportKind::Tcp | TransportKind::Local(_) => ";transport=tcp",
            TransportKind::Udp => "",
        };
        let icsi: Vec<String> = icsis.iter().map(|i| i.replace(':', "%3A")).collect();
        format!(
            "<sip:{}@{}{transport}>;+sip.instance=\"<{}>\";+g.3gpp.icsi-ref=\"{}\"",
            self.user,
            self.cfg.local_addr,
            self.instance,
            icsi.join(",")
        )
    }

    fn register_request(&mut self, expires: u32) -> Request {
        self.reg_cseq += 1;
        let own = format!("<{}>", self.own_uri);
        let (uri, call_id, tag, cseq) = (
            self.registrar.clone(),
            self.reg_call_id.clone(),
            self.reg_from_tag.clone(),
            self.reg_cseq,
        );
        let mut req = self.request(Method::Register, uri, &own, &call_id, &tag, cseq);
        let contact = self.contact();
        req.headers.push(Header::new(HeaderName::Contact, &contact));
        req.headers
            .push(Header::new(HeaderName::Expires, &expires.to_string()));
        req.headers.push(Header::new(HeaderName::Supported, "path"));
        req.headers
            .push(Header::new(HeaderName::ContentLength, "0"));
        req
    }

    fn send_register(&mut self, now: Instant) {
        self.send_register_for(now, self.cfg.expires);
    }

    fn send_register_for(&mut self, now: Instant, expires: u32) {
        let mut req = self.register_request(expires);
        self.preauthorize(&mut req, false);
        self.reg_in_flight = self.start(now, req, Purpose::Register { expires });
    }

    /// Adds credentials from the last challenge of this kind, if any (saves a round trip;
    /// a stale nonce costs one retry).
    fn preauthorize(&mut self, req: &mut Request, proxy: bool) {
        let cached = if proxy {
            self.proxy_auth.as_mut()
        } else {
            self.www_auth.as_mut()
        };
        let Some(c) = cached else { return };
        c.nc += 1;
        let (challenge, nc) = (c.challenge.clone(), c.nc);
        let cnonce = self.rng.hex(16);
        let value = digest::respond(
            &challenge,
            req.method.as_str(),
            &req.uri.to_string(),
            &self.cfg.aor,
            &self.cfg.password,
            &cnonce,
            nc,
        );
        let name = if proxy {
            HeaderName::ProxyAuthorization
        } else {
            HeaderName::Authorization
        };
        req.headers.set(name, &value);
    }

    /// Starts a client transaction to the server.
    fn start(&mut self, now: Instant, req: Request, purpose: Purpose) -> Option<ClientKey> {
        let peer = self.server_peer();
        match self.tx.send_request(now, req.clone(), peer) {
            Ok(key) => {
                self.pending_seq += 1;
                self.pending.insert(
                    key.clone(),
                    Pending {
                        purpose,
                        request: req,
                        auth_tries: 0,
                        seq: self.pending_seq,
                    },
                );
                Some(key)
            }
            // Invariant: our requests always carry a Via with a magic-cookie branch.
            Err(_) => None,
        }
    }

    /// The same request again with a new branch, the next CSeq and credentials for
    /// `challenge`.
    fn authorized_retry(
        &mut self,
        mut req: Request,
        challenge: &Challenge,
        proxy: bool,
    ) -> Request {
        let via = self.via();
        req.headers.set(HeaderName::Via, &via);
        let seq = if req.method == Method::Register {
            self.reg_cseq += 1;
            self.reg_cseq
        } else {
            req.headers
                .cseq()
                .ok()
                .flatten()
                .map_or(1, |c| c.seq.saturating_add(1))
        };
        req.headers
            .set(HeaderName::CSeq, &format!("{seq} {}", req.method));
        let cache = CachedChallenge {
            challenge: challenge.clone(),
            nc: 0,
        };
        if proxy {
            self.proxy_auth = Some(cache);
        } else {
            self.www_auth = Some(cache);
        }
        self.preauthorize(&mut req, proxy);
        req
    }

    fn process_tx_events(&mut self, now: Instant) {
        while let Some(ev) = self.tx.poll_event() {
            if let TxEvent::Timeout(key) = ev
                && let Some(p) = self.pending.remove(&key)
            {
                self.finish(now, &key, p.purpose, 408, "Request Timeout", None);
            }
        }
    }

    fn handle_message(&mut self, now: Instant, peer: Peer, msg: Message) {
        match msg {
            Message::Response(resp) => {
                if let ResponseDisposition::Pass(key) = self.tx.handle_response(now, &resp) {
                    self.on_response(now, key, &resp);
                }
            }
            Message::Request(req) => self.on_request(now, peer, req),
        }
        self.process_tx_events(now);
    }

    fn on_response(&mut self, now: Instant, key: ClientKey, resp: &Response) {
        if !resp.status.is_final() {
            return;
        }
        let Some(p) = self.pending.remove(&key) else {
            // A 2xx retransmitted for an INVITE we answered: the ACK again (RFC 3261
            // section 13.2.2.4).
            self.on_late_final(&key, resp);
            return;
        };
        let status = resp.status.as_u16();
        if matches!(status, 401 | 407) && p.auth_tries < MAX_AUTH_TRIES {
            let proxy = status == 407;
            if let Some(ch) = pick_challenge(resp, proxy) {
                let req = self.authorized_retry(p.request, &ch, proxy);
                let is_reg = self.reg_in_flight.as_ref() == Some(&key);
                let is_unreg = self.unreg_in_flight.as_ref() == Some(&key);
                let session = match &p.purpose {
                    Purpose::Invite { session } => Some(*session),
                    _ => None,
                };
                if let Some(k) = self.start(now, req, p.purpose) {
                    if let Some(n) = self.pending.get_mut(&k) {
                        n.auth_tries = p.auth_tries + 1;
                    }
                    if is_reg {
                        self.reg_in_flight = Some(k);
                    } else if is_unreg {
                        self.unreg_in_flight = Some(k);
                    } else if let Some(s) = session {
                        self.rekey_invite(s, k);
                    }
                }
                return;
            }
        }
        if let Purpose::Invite { session } = p.purpose {
            self.on_invite_final(now, session, key, &p.request, resp);
            return;
        }
        if status == 423
            && let Purpose::Register { expires } = p.purpose
            && self.reg_in_flight.as_ref() == Some(&key)
            && let Some(min) = resp
                .headers
                .get(&HeaderName::MinExpires)
                .and_then(|h| h.value().ok())
                .and_then(|v| v.trim().parse::<u32>().ok())
            && min > expires
        {
            self.send_register_for(now, min);
            return;
        }
        self.finish(now, &key, p.purpose, status, &resp.reason, Some(resp));
    }

    /// A final outcome for a client transaction.
    fn finish(
        &mut self,
        now: Instant,
        key: &ClientKey,
        purpose: Purpose,
        status: u16,
        reason: &str,
        resp: Option<&Response>,
    ) {
        let ok = (200..300).contains(&status);
        match purpose {
            Purpose::Register { expires } => {
                if self.reg_in_flight.as_ref() != Some(key) {
                    return;
                }
                self.reg_in_flight = None;
                if !self.want_registered {
                    return;
                }
                if ok {
                    let granted = resp
                        .and_then(|r| self.granted_expires(r))
                        .unwrap_or(expires);
                    if granted == 0 {
                        self.registered = false;
                        self.events.push_back(Event::RegistrationFailed {
                            status,
                            reason: "Binding Not Kept".to_owned(),
                            will_retry: false,
                        });
                        return;
                    }
                    self.registered = true;
                    self.reg_failures = 0;
                    self.reg_timer = Some(now + Duration::from_secs(u64::from(granted / 2).max(1)));
                    self.events
                        .push_back(Event::Registered { expires: granted });
                } else {
                    self.registered = false;
                    let will_retry = status == 408 || status == 503 || status >= 500;
                    if will_retry {
                        self.reg_failures += 1;
                        self.reg_timer = Some(now + self.backoff().max(Duration::from_secs(1)));
                    }
                    self.events.push_back(Event::RegistrationFailed {
                        status,
                        reason: reason.to_owned(),
                        will_retry,
                    });
                }
            }
            Purpose::Unregister => {
                if self.unreg_in_flight.as_ref() == Some(key) {
                    self.unreg_in_flight = None;
                    self.events.push_back(Event::Unregistered { status });
                }
            }
            Purpose::Message { id, message_id } => {
                self.events.push_back(Event::SendResult {
                    id,
                    status,
                    reason: reason.to_owned(),
                    message_id,
                });
            }
            Purpose::Invite { session } => {
                self.on_invite_failed(now, session, status, reason);
            }
            Purpose::Bye => {}
            Purpose::Notification {
                to,
                message_id,
                notification,
            } => {
                self.events.push_back(Event::NotificationSent {
                    to,
                    message_id,
                    notification,
                    status,
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// The expiry the registrar granted our binding: the `expires` parameter of the Contact
    /// carrying our instance id, else the Expires header.
    fn granted_expires(&self, resp: &Response) -> Option<u32> {
        let want = format!("<{}>", self.instance);
        if let Ok(Some(Contact::Addresses(addrs))) = resp.headers.contact() {
            for a in addrs {
                let ours = a
                    .param("+sip.instance")
                    .and_then(|p| p.unquoted_value())
                    .is_some_and(|v| v.eq_ignore_ascii_case(&want));
                if ours {
                    return a
                        .param("expires")
                        .and_then(|p| p.value.as_deref())
                        .and_then(|v| v.parse().ok());
                }
            }
        }
        resp.headers.expires().ok().flatten()
    }

    fn respond(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Request,
        status: StatusCode,
        reason: Option<&str>,
        extra: &[(HeaderName, &str)],
    ) {
        let tag = self.rng.hex(12);
        let mut resp = response_to(req, status, Some(&tag));
        if let Some(r) = reason {
            resp.reason = r.to_owned();
        }
        resp.headers
            .push(Header::new(HeaderName::UserAgent, USER_AGENT));
        for (name, value) in extra {
            resp.headers.push(Header::new(name.clone(), value));
        }
        // A transaction that already answered is gone or absorbing: nothing to do.
        let _ = self.tx.respond(now, key, &resp);
    }

    fn on_request(&mut self, now: Instant, peer: Peer, req: Request) {
        const ALLOW: &str = session::ALLOW;
        if let Err(rej) = check_request(&req) {
            if let Ok(RequestDisposition::New(key)) = self.tx.handle_request(now, &req, peer) {
                self.respond(now, &key, &req, rej.status, Some(&rej.reason), &[]);
            }
            return;
        }
        let key = match self.tx.handle_request(now, &req, peer) {
            Ok(RequestDisposition::New(key)) => key,
            // The ACK for a 2xx is end to end (RFC 3261 section 13.3.1.4): its dialog's.
            Ok(RequestDisposition::Stray) if req.method == Method::Ack => {
                self.on_ack(&req);
                return;
            }
            // Retransmissions are absorbed (the last response re-sent); other ACKs dropped.
            _ => return,
        };
        match req.method {
            Method::Message => self.on_message(now, &key, &req),
            Method::Invite => self.on_invite(now, &key, peer, &req),
            Method::Bye => self.on_bye(now, &key, &req),
            Method::Cancel => self.on_cancel(now, &key, &req),
            Method::Options => self.respond(
                now,
                &key,
                &req,
                StatusCode::OK,
                None,
                &[
                    (HeaderName::Allow, ALLOW),
                    (HeaderName::Accept, "message/cpim, text/plain"),
                ],
            ),
            _ => self.respond(
                now,
                &key,
                &req,
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                &[(HeaderName::Allow, ALLOW)],
            ),
        }
    }
}

/// `P-Preferred-Service` and `Accept-Contact` for an ICSI (PROTOCOL.md rows 4 and 10).
fn add_icsi_headers(req: &mut Request, icsi: &str) {
    req.headers
        .push(Header::new(HeaderName::PPreferredService, icsi));
    req.headers.push(Header::new(
        HeaderName::AcceptContact,
        &format!("*;+g.3gpp.icsi-ref=\"{}\"", icsi.replace(':', "%3A")),
    ));
}

fn set_body(req: &mut Request, content_type: &str, body: Bytes) {
    req.headers
        .push(Header::new(HeaderName::ContentType, content_type));
    req.headers.push(Header::new(
        HeaderName::ContentLength,
        &body.len().to_string(),
    ));
    req.body = body;
}

/// The strongest digest challenge we can answer: SHA-256 before MD5 (RFC 8760 section 2.4).
fn pick_challenge(resp: &Response, proxy: bool) -> Option<Challenge> {
    let name = if proxy {
        HeaderName::ProxyAuthenticate
    } else {
        HeaderName::WwwAuthenticate
    };
    let mut best: Option<Challenge> = None;
    for h in resp.headers.get_all(&name) {
        let Ok(v) = h.value() else { continue };
        let Ok(ch) = Challenge::parse(&v) else {
            continue;
        };
        let better = match &best {
            None => true,
            Some(b) => b.algorithm == Algorithm::Md5 && ch.algorithm == Algorithm::Sha256,
        };
        if better {
            best = Some(ch);
        }
    }
    best
}
