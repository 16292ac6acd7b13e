//! Sessions over MSRP: the 1-1 chat (OMA CPM session, PROTOCOL.md flow 2.3) and Large Message
//! Mode (flow 2.2), both ways, several at once.
//!
//! The SIP side is an INVITE dialog (RFC 3261 sections 12-14) whose SDP (cpm-sdp) carries
//! the MSRP media (RFC 4975 section 8); the MSRP side is one connection per session, which
//! this client always opens itself (`a=setup:active`, RFC 6135: a client never listens), and
//! on which it sends first, to bind it (RFC 4975 section 5.4). Bytes reach the core as
//! [`ConnEvent`]s and leave it as [`ConnCommand`]s (the driver contract of `cpm_msrp::conn`).
//!
//! Outgoing, per session: INVITE, 1xx ignored, 2xx: ACK in the dialog, `Connect` to the first
//! URI of the answer's `a=path`, on `Connected` the binding SEND (the first queued message,
//! or an empty SEND), then every message as SENDs of at most 64 KiB, each reported by the
//! MSRP 200 to its last chunk. Incoming: 180, then 200 with our answer (at once with
//! [`crate::ClientConfig::auto_accept`]), `Connect` to the offer's path, the binding SEND,
//! every SEND answered 200 per chunk and handed on like a pager message once whole.
//!
//! Through an MSRP relay ([`crate::ClientConfig::msrp_relay`], RFC 4976), the session's
//! connection goes to the relay and is opened first: AUTH (To-Path the relay, From-Path our
//! URI), a 401's digest challenge answered with the user's credentials (section 5), the 200's
//! Use-Path kept; only then is the SDP offered or answered, its `a=path` the Use-Path then our
//! URI, and every SEND's To-Path the Use-Path then the peer's path (section 6). The relay
//! answers SENDs hop by hop.

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_content::mime;
use cpm_msrp::{
    ChunkCursor, ConnCommand, ConnEvent, ConnId, MsrpUri, Reassembler, ReassemblyLimits,
    Request as MsrpRequest, TransactId, TransactionConfig, Transactions,
};
use cpm_sdp::offer_answer;
use cpm_sdp::{Direction, MsrpMedia, Sdp, Setup};
use cpm_sip::{Header, HeaderName, Method, Request, Response, StatusCode, Uri};
use cpm_sip_core::Peer;
use cpm_sip_core::dialog::Dialog;
use cpm_sip_core::transaction::{ClientKey, ServerKey, response_to};

mod file;
mod incoming;
mod msrp;
mod relay;

use file::Transfer;
pub use file::{FILE_CHUNK, FILE_WINDOW};
use msrp::composing_xml;

use super::receive::Origin;
use super::{
    Client, Event, ICSI_FILETRANSFER, ICSI_LARGEMSG, ICSI_SESSION, Purpose, SendError, SendId,
    USER_AGENT, add_icsi_headers, aor_of, set_body,
};

/// Texts longer than this (in bytes) go in Large Message Mode: OMA CPM 5.2.2 and TS 33.127
/// Annex D.1 cap a pager-mode message at 1,300 bytes (PROTOCOL.md row 10).
pub const LARGE_MESSAGE_THRESHOLD: usize = 1300;
/// Messages a session keeps while its MSRP connection is not up yet.
pub const MAX_QUEUED: usize = 64;
/// The methods we take (the `Allow` of our answers).
pub(crate) const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, MESSAGE, OPTIONS";
/// Largest chunk we send (RFC 4975 section 7.1.1 lets the sender choose; 64 KiB keeps a
/// large message from blocking others on the connection).
const MAX_CHUNK: u64 = 64 * 1024;
/// Largest incoming message we reassemble, and how many at once per session: the client
/// holds a message whole (to read its CPIM), so both are small.
const INCOMING_LIMITS: ReassemblyLimits = ReassemblyLimits {
    max_message_len: 16 * 1024 * 1024,
    max_messages: 8,
};
/// Largest chunk we send through an MSRP relay: RFC 4976 section 7.1 lets a relay refuse
/// what it cannot buffer, and Kamailio's `msrp` module takes frames of at most 10,240 body
/// octets (its `MSRP_MAX_BODY_SIZE`).
const RELAY_CHUNK: u64 = 8 * 1024;
/// How long, through a relay, a message whose chunks the relay took waits for the success
/// REPORT that says the network stored it.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 3994: the composing indication's media type.
const ISCOMPOSING: &str = "application/im-iscomposing+xml";
/// What our sessions carry (RFC 4975 section 8: `a=accept-types`): CPIM and the composing
/// indication; inside CPIM, text and notifications (`a=accept-wrapped-types`).
const ACCEPT_TYPES: [&str; 2] = [mime::MESSAGE_CPIM, ISCOMPOSING];
const ACCEPT_WRAPPED_TYPES: [&str; 2] = ["text/plain", mime::MESSAGE_IMDN_XML];
/// RFC 3261 timers for our 2xx retransmissions (section 13.3.1.4).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// Names one session of a [`Client`].
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct SessionId(pub u64);

/// What a session is for.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum SessionKind {
    /// A 1-1 chat (ICSI `…oma.cpm.session`).
    Chat,
    /// One large message (ICSI `…oma.cpm.largemsg`, OMA CPM 5.2.2).
    LargeMessage,
    /// One file (ICSI `…oma.cpm.filetransfer`, RFC 5547 push).
    FileTransfer,
}

impl SessionKind {
    /// The ICSI of the session's INVITE, Contact and answers.
    fn icsi(self) -> &'static str {
        match self {
            Self::Chat => ICSI_SESSION,
            Self::LargeMessage => ICSI_LARGEMSG,
            Self::FileTransfer => ICSI_FILETRANSFER,
        }
    }
}

/// Where a session stands.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Phase {
    /// Outgoing: our INVITE waits for its final response.
    Inviting,
    /// Incoming: 180 sent, the application has not answered yet.
    Offered,
    /// Outgoing through a relay: the connection to it is being opened and authenticated
    /// (RFC 4976 section 5); the INVITE follows.
    Authenticating,
    /// The SDP exchange is done; the MSRP connection is being opened.
    Connecting,
    /// The MSRP connection is open and bound.
    Up,
}

/// What an outgoing MSRP message is.
#[derive(Clone, Debug)]
enum What {
    /// A chat message (or the one message of Large Message Mode): [`Event::SendResult`].
    Chat { id: SendId, message_id: String },
    /// A disposition notification: [`Event::NotificationSent`] (a [`Purpose::Notification`]);
    /// if the session fails it, it goes again by pager MESSAGE to this origin.
    Notification(Purpose, Box<Origin>),
    /// A composing indication or the empty binding SEND: nobody waits for it.
    Quiet,
}

/// An outgoing MSRP message: queued until the connection is up, then in flight until the
/// response to each of its chunks came.
#[derive(Clone, Debug)]
struct Item {
    what: What,
    /// `None` for the empty binding SEND (no Content-Type, no body).
    content_type: Option<String>,
    body: Bytes,
    /// Chunks sent and not answered yet.
    chunks_left: usize,
}

/// The UAS side of an incoming INVITE, until it is answered and acknowledged.
#[derive(Clone, Debug)]
struct Uas {
    key: ServerKey,
    invite: Request,
    /// Our To tag (the same in the 180 and the 200, RFC 3261 section 12.1.1).
    tag: String,
    peer: Peer,
    /// The 200, retransmitted over UDP until the ACK (RFC 3261 section 13.3.1.4).
    ok: Option<Bytes>,
    resend_at: Option<Instant>,
    interval: Duration,
    give_up: Option<Instant>,
}

/// One session.
#[derive(Debug)]
struct Session {
    kind: SessionKind,
    incoming: bool,
    phase: Phase,
    /// The peer's URI.
    peer: String,
    conversation_id: String,
    contribution_id: String,
    /// The INVITE's service was `…oma.cpm.deferred` (messages the network kept for us).
    deferred: bool,
    /// Outgoing: the INVITE's client transaction, and whether the application ended the
    /// session before the answer (CANCEL sent; a 2xx still gets ACK and BYE).
    invite_key: Option<ClientKey>,
    cancelled: bool,
    /// The ACK we sent for the 2xx, re-sent when the 2xx is retransmitted.
    ack: Option<(ClientKey, Bytes)>,
    uas: Option<Uas>,
    dialog: Option<Dialog>,
    /// Our media and SDP (the offer, or the answer).
    local_media: MsrpMedia,
    local_sdp: Bytes,
    local_path: MsrpUri,
    /// The peer's `a=path` (our To-Path).
    remote_path: Vec<MsrpUri>,
    conn: Option<ConnId>,
    tx: Transactions,
    /// Item numbers waiting for the connection, in order.
    queue: VecDeque<u64>,
    items: BTreeMap<u64, Item>,
    next_item: u64,
    in_flight: HashMap<TransactId, u64>,
    reassembler: Reassembler,
    /// Through a relay, whose 200s are hop by hop (RFC 4976 section 7.3): the items whose
    /// success REPORT (RFC 4975 section 7.1.2) reports them stored, by MSRP Message-ID, and
    /// when those whose chunks are all answered give up waiting for it.
    reports: HashMap<String, u64>,
    report_by: BTreeMap<u64, Instant>,
    /// Bodies of incoming messages being reassembled, by MSRP Message-ID.
    bodies: HashMap<String, Vec<u8>>,
    /// The file of a [`SessionKind::FileTransfer`] session.
    file: Option<Box<Transfer>>,
    /// Through an MSRP relay: its AUTH and Use-Path.
    relay: Option<relay::Relay>,
}

impl Session {
    /// The To-Path of our requests: the relay's Use-Path (RFC 4976 section 6), then the
    /// peer's path.
    fn to_path(&self) -> Vec<MsrpUri> {
        self.relay
            .iter()
            .flat_map(|r| r.use_path.iter().cloned())
            .chain(self.remote_path.iter().cloned())
            .collect()
    }

    /// The largest chunk to send in this session.
    fn max_chunk(&self) -> u64 {
        if self.relay.is_some() {
            RELAY_CHUNK
        } else {
            MAX_CHUNK
        }
    }

    fn push_item(&mut self, item: Item) -> u64 {
        let n = self.next_item;
        self.next_item += 1;
        self.items.insert(n, item);
        self.queue.push_back(n);
        n
    }

    /// Chat messages and notifications waiting for the connection (the binding SEND and
    /// composing indications do not count against [`MAX_QUEUED`]).
    fn queued_messages(&self) -> usize {
        self.queue
            .iter()
            .filter(|n| {
                self.items
                    .get(n)
                    .is_some_and(|i| !matches!(i.what, What::Quiet))
            })
            .count()
    }

    fn deadline(&self) -> Option<Instant> {
        let uas = self
            .uas
            .as_ref()
            .map(|u| [u.resend_at, u.give_up].into_iter().flatten().min());
        let relay = self.relay.as_ref().and_then(|r| r.deadline);
        let report = self.report_by.values().min().copied();
        [self.tx.poll_timeout(), uas.flatten(), relay, report]
            .into_iter()
            .flatten()
            .min()
    }
}

/// What a connection is in the middle of reading.
#[derive(Debug)]
enum Reading {
    /// Between messages.
    Idle,
    /// A message we do not take (a response, a refused request): until its end-line.
    Discard,
    /// A SEND for one of our sessions; `cursor` is `None` once refused (already answered).
    Send {
        session: SessionId,
        request: MsrpRequest,
        cursor: Option<ChunkCursor>,
    },
}

/// Every session of a client, and the MSRP side of the driver contract.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    next: u64,
    map: BTreeMap<SessionId, Session>,
    reading: HashMap<ConnId, Reading>,
    commands: VecDeque<ConnCommand>,
}

impl Sessions {
    /// The earliest deadline of any session (MSRP transaction timeouts, 2xx retransmission).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.map.values().filter_map(Session::deadline).min()
    }

    /// The `imdn.Message-ID` of a message sent in a session and not answered yet.
    pub(crate) fn message_id(&self, id: SendId) -> Option<&str> {
        self.map.values().find_map(|s| {
            s.items.values().find_map(|i| match &i.what {
                What::Chat { id: i, message_id } if *i == id => Some(message_id.as_str()),
                _ => None,
            })
        })
    }

    fn by_conn(&self, conn: ConnId) -> Option<SessionId> {
        self.map
            .iter()
            .find_map(|(id, s)| (s.conn == Some(conn)).then_some(*id))
    }

    /// The session whose own path URI (RFC 4975 section 6.1: the session-id part) is `uri`.
    fn by_path(&self, uri: &MsrpUri) -> Option<SessionId> {
        self.map
            .iter()
            .find_map(|(id, s)| s.local_path.equivalent(uri).then_some(*id))
    }

    /// The session whose dialog a request belongs to (RFC 3261 section 12.2.2: Call-ID, the
    /// To tag ours, the From tag the peer's).
    fn by_dialog(&self, req: &Request) -> Option<SessionId> {
        let call_id = req.headers.call_id().ok().flatten()?.0;
        let from_tag = req.headers.from().ok().flatten()?.tag().map(str::to_owned);
        let to_tag = req.headers.to().ok().flatten()?.tag().map(str::to_owned);
        self.map.iter().find_map(|(id, s)| {
            let d = s.dialog.as_ref()?;
            (d.id.call_id == call_id
                && from_tag.as_deref() == Some(d.id.remote_tag.as_str())
                && to_tag.as_deref() == Some(d.id.local_tag.as_str()))
            .then_some(*id)
        })
    }
}

/// The socket address of an MSRP URI (the client resolves no names: its peer is the
/// network's MSRP endpoint, given by address).
fn uri_addr(uri: &MsrpUri) -> Option<SocketAddr> {
    let ip: IpAddr = uri
        .host()
        .as_str()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, uri.port()?))
}

/// Whether a request asks for the Large Message Mode service (TS 24.229 7.2A.8: the ICSI in
/// Accept-Contact, P-Asserted-Service or P-Preferred-Service).
fn names_service(req: &Request, service: &str) -> bool {
    let needle = service.replace(':', "%3A").to_ascii_lowercase();
    let plain = service.to_ascii_lowercase();
    [
        HeaderName::AcceptContact,
        HeaderName::PAssertedService,
        HeaderName::PPreferredService,
    ]
    .iter()
    .flat_map(|n| req.headers.get_all(n))
    .any(|h| {
        let v = String::from_utf8_lossy(h.value_bytes()).to_ascii_lowercase();
        v.contains(&needle) || v.contains(&plain)
    })
}

impl Client {
    // ---------------------------------------------------------------- commands

    /// Starts a chat session with `to` (`user@domain`, a bare user name in our domain, or a
    /// SIP URI): an INVITE with the `…oma.cpm.session` ICSI and an SDP offer of MSRP media.
    /// [`Event::SessionStarted`] follows once the MSRP connection is up,
    /// [`Event::SessionEnded`] if it is refused. Messages can be given at once
    /// ([`Client::send_chat`]); they wait for the connection.
    pub fn start_session(&mut self, now: Instant, to: &str) -> Result<SessionId, SendError> {
        let target = self.target_uri(to)?;
        let id = self.new_session(SessionKind::Chat, &target);
        if let Err(e) = self.begin_outgoing(now, id) {
            self.sessions.map.remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Sends `text` (`text/plain` in CPIM, asking for delivery and display notifications)
    /// in a session; before the MSRP connection is up it waits in a queue of at most
    /// [`MAX_QUEUED`]. The MSRP 200 to its last chunk (the network stored it) comes as
    /// [`Event::SendResult`] with status 200; a timeout (408) or an MSRP error response
    /// gives that status, and a session that ends first the session's (see
    /// [`Event::SessionEnded`]).
    pub fn send_chat(
        &mut self,
        now: Instant,
        session: SessionId,
        text: &str,
    ) -> Result<SendId, SendError> {
        let peer = match self.sessions.map.get(&session) {
            Some(s) if s.kind == SessionKind::Chat => s.peer.clone(),
            _ => return Err(SendError::NoSession),
        };
        if self
            .sessions
            .map
            .get(&session)
            .is_some_and(|s| s.phase != Phase::Up && s.queued_messages() >= MAX_QUEUED)
        {
            return Err(SendError::QueueFull);
        }
        let (cpim, message_id) = self.build_cpim(now, &[peer], text)?;
        let id = SendId(self.next_send);
        self.next_send += 1;
        self.queue_item(
            now,
            session,
            Item {
                what: What::Chat { id, message_id },
                content_type: Some(mime::MESSAGE_CPIM.to_owned()),
                body: cpim,
                chunks_left: 0,
            },
        );
        Ok(id)
    }

    /// Tells the peer we are typing (`active`) or stopped (RFC 3994); returns whether the
    /// session could take it. Nothing reports its outcome.
    pub fn send_composing(&mut self, now: Instant, session: SessionId, active: bool) -> bool {
        match self.sessions.map.get(&session) {
            Some(s) if s.kind == SessionKind::Chat && s.phase == Phase::Up => {}
            _ => return false,
        }
        self.queue_item(
            now,
            session,
            Item {
                what: What::Quiet,
                content_type: Some(ISCOMPOSING.to_owned()),
                body: Bytes::from(composing_xml(active)),
                chunks_left: 0,
            },
        );
        true
    }

    /// Ends a session: BYE once it is set up (RFC 3261 section 15), CANCEL while our INVITE
    /// waits (RFC 3261 section 9.1), 603 to an invitation not answered yet. Messages not
    /// answered yet fail; [`Event::SessionEnded`] follows (for an INVITE being cancelled,
    /// when its final response comes).
    pub fn end_session(&mut self, now: Instant, session: SessionId) {
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        match s.phase {
            Phase::Authenticating => {
                self.finish_session(now, session, 487, "Request Terminated", false);
            }
            Phase::Inviting => {
                s.cancelled = true;
                if let Some(key) = s.invite_key.clone() {
                    self.tx.cancel(now, &key);
                }
            }
            Phase::Offered => {
                self.reject_session(now, session);
            }
            Phase::Connecting | Phase::Up => {
                self.finish_session(now, session, 200, "Session Ended", false);
            }
        }
    }

    /// The sessions that exist, oldest first.
    pub fn sessions(&self) -> Vec<SessionId> {
        self.sessions.map.keys().copied().collect()
    }

    /// A session's peer (`user@domain`).
    pub fn session_peer(&self, session: SessionId) -> Option<String> {
        self.sessions.map.get(&session).map(|s| aor_of(&s.peer))
    }

    // ---------------------------------------------------------------- MSRP inputs/outputs

    /// What the driver's MSRP transport reports: a connection we asked for is open (or not),
    /// a frame read on one, a connection gone.
    pub fn handle_conn_event(&mut self, now: Instant, event: ConnEvent) {
        match event {
            // A client never listens (RFC 6135): whatever connected to us is not ours.
            ConnEvent::Accepted { conn, .. } => {
                self.sessions
                    .commands
                    .push_back(ConnCommand::Close { conn });
            }
            ConnEvent::Connected { token, conn } => {
                let session = SessionId(token);
                if self.authenticating(session) {
                    self.relay_connected(now, session, conn);
                } else {
                    self.on_connected(now, session, conn);
                }
            }
            ConnEvent::ConnectFailed { token } => {
                let session = SessionId(token);
                if self.authenticating(session) {
                    self.relay_failed(now, session, 503, "MSRP Relay Unreachable");
                } else if self.sessions.map.contains_key(&session) {
                    self.finish_session(now, session, 503, "MSRP Connection Failed", true);
                }
            }
            ConnEvent::Frame { conn, frame } => self.on_frame(now, conn, frame),
            // The head could not be read: there is no To-Path to answer to (a message-scoped
            // error skips its body by itself; a connection-scoped one closes the
            // connection, and Closed follows).
            ConnEvent::Error { conn, .. } => {
                self.sessions.reading.insert(conn, Reading::Idle);
            }
            ConnEvent::Closed { conn } => {
                self.sessions.reading.remove(&conn);
                if let Some(session) = self.sessions.by_conn(conn) {
                    let authenticating = self.authenticating(session);
                    if let Some(s) = self.sessions.map.get_mut(&session) {
                        s.conn = None;
                    }
                    if authenticating {
                        self.relay_failed(now, session, 503, "MSRP Relay Closed");
                    } else {
                        // RFC 4975 section 5.4: the session cannot go on without its
                        // connection.
                        self.finish_session(now, session, 503, "MSRP Connection Closed", true);
                    }
                }
            }
        }
    }

    /// The next thing the MSRP transport must do: open a connection, write bytes, close one.
    pub fn poll_conn_command(&mut self) -> Option<ConnCommand> {
        self.sessions.commands.pop_front()
    }

    // ---------------------------------------------------------------- for client.rs

    /// `send_message` over [`LARGE_MESSAGE_THRESHOLD`]: Large Message Mode (OMA CPM 5.2.2,
    /// PROTOCOL.md flow 2.2): an INVITE with the `…oma.cpm.largemsg` ICSI and `a=sendonly`,
    /// the message in one SEND (chunked over 64 KiB), BYE after its 200. The outcome comes
    /// as [`Event::SendResult`], as for a pager message.
    pub(crate) fn send_large(
        &mut self,
        now: Instant,
        target: &str,
        text: &str,
    ) -> Result<SendId, SendError> {
        let (cpim, message_id) = self.build_cpim(now, &[target.to_owned()], text)?;
        let session = self.new_session(SessionKind::LargeMessage, target);
        let id = SendId(self.next_send);
        self.next_send += 1;
        if let Some(s) = self.sessions.map.get_mut(&session) {
            s.push_item(Item {
                what: What::Chat { id, message_id },
                content_type: Some(mime::MESSAGE_CPIM.to_owned()),
                body: cpim,
                chunks_left: 0,
            });
        }
        if let Err(e) = self.begin_outgoing(now, session) {
            self.sessions.map.remove(&session);
            return Err(e);
        }
        Ok(id)
    }

    /// Sends a notification (CPIM wrapping `message/imdn+xml`) in a chat session that is
    /// still there; false when there is none (it goes by pager MESSAGE then). Large Message
    /// Mode sessions end at once, so their notifications go by pager MESSAGE.
    pub(crate) fn notify_in_session(
        &mut self,
        now: Instant,
        session: SessionId,
        cpim: Bytes,
        purpose: Purpose,
        fallback: Origin,
    ) -> bool {
        match self.sessions.map.get(&session) {
            Some(s)
                if s.kind == SessionKind::Chat
                    && matches!(s.phase, Phase::Connecting | Phase::Up)
                    && s.queued_messages() < MAX_QUEUED => {}
            _ => return false,
        }
        self.queue_item(
            now,
            session,
            Item {
                what: What::Notification(purpose, Box::new(fallback)),
                content_type: Some(mime::MESSAGE_CPIM.to_owned()),
                body: cpim,
                chunks_left: 0,
            },
        );
        true
    }

    /// Our INVITE was retried with credentials: a new transaction.
    pub(crate) fn rekey_invite(&mut self, session: SessionId, key: ClientKey) {
        if let Some(s) = self.sessions.map.get_mut(&session) {
            s.invite_key = Some(key);
        }
    }

    /// A final response to our INVITE (after any digest retry).
    pub(crate) fn on_invite_final(
        &mut self,
        now: Instant,
        session: SessionId,
        key: ClientKey,
        invite: &Request,
        resp: &Response,
    ) {
        let status = resp.status.as_u16();
        if !resp.status.is_success() {
            // The transaction layer sent the ACK (RFC 3261 section 17.1.1.3).
            let cancelled = self.sessions.map.get(&session).is_some_and(|s| s.cancelled);
            self.finish_session(now, session, status, &resp.reason, !cancelled);
            return;
        }
        // RFC 3261 section 12.1.2: the UAC's dialog; section 13.2.2.4: ACK every 2xx.
        let Ok(mut dialog) = Dialog::from_uac(invite, resp) else {
            self.finish_session(now, session, 502, "Bad Answer (no dialog)", true);
            return;
        };
        let seq = invite.headers.cseq().ok().flatten().map_or(1, |c| c.seq);
        let mut ack = dialog.request(Method::Ack, Some(seq));
        self.in_dialog_headers(&mut ack);
        // RFC 3261 section 22.1: the ACK for a 2xx carries the INVITE's credentials.
        for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
            if let Some(h) = invite.headers.get(&name) {
                ack.headers.push(h.clone());
            }
        }
        ack.headers
            .push(Header::new(HeaderName::ContentLength, "0"));
        let bytes = ack.to_bytes();
        let peer = self.server_peer();
        self.transmits.push_back(cpm_sip_core::Transmit {
            peer,
            payload: bytes.clone(),
        });
        let answer = self.answer_media(resp);
        let Some(s) = self.sessions.map.get_mut(&session) else {
            // Ended meanwhile: the dialog still needs its BYE.
            self.bye(now, dialog);
            return;
        };
        s.ack = Some((key, bytes));
        s.dialog = Some(dialog);
        if s.cancelled {
            self.finish_session(now, session, 487, "Request Terminated", false);
            return;
        }
        let remote = match answer {
            Ok(m) => m,
            Err(reason) => {
                self.finish_session(now, session, 488, reason, true);
                return;
            }
        };
        // RFC 4145 section 4.1 / RFC 6135: we offered `active`, the answer must leave the
        // connection to us.
        if !offer_answer::connects(s.local_media.setup, remote.setup, true) {
            self.finish_session(now, session, 488, "Answer Wants Us To Listen", true);
            return;
        }
        s.remote_path = remote.path;
        s.phase = Phase::Connecting;
        self.start_media(now, session);
    }

    /// The INVITE got no final response (408) or its connection closed (503).
    pub(crate) fn on_invite_failed(
        &mut self,
        now: Instant,
        session: SessionId,
        status: u16,
        reason: &str,
    ) {
        self.finish_session(now, session, status, reason, true);
    }

    /// A response no transaction waits for: a retransmitted 2xx to an INVITE we answered
    /// gets the ACK again (RFC 3261 section 13.2.2.4).
    pub(crate) fn on_late_final(&mut self, key: &ClientKey, resp: &Response) {
        if !resp.status.is_success() {
            return;
        }
        let ack = self.sessions.map.values().find_map(|s| {
            s.ack
                .as_ref()
                .and_then(|(k, b)| (k == key).then(|| b.clone()))
        });
        if let Some(payload) = ack {
            let peer = self.server_peer();
            self.transmits
                .push_back(cpm_sip_core::Transmit { peer, payload });
        }
    }

    /// The sessions' timers: MSRP transaction timeouts, 2xx retransmissions.
    pub(crate) fn handle_session_timeouts(&mut self, now: Instant) {
        let due: Vec<SessionId> = self
            .sessions
            .map
            .iter()
            .filter(|(_, s)| s.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for session in due {
            if self
                .sessions
                .map
                .get(&session)
                .and_then(|s| s.relay.as_ref())
                .and_then(|r| r.deadline)
                .is_some_and(|d| d <= now)
            {
                self.relay_failed(now, session, 408, "MSRP Relay Did Not Answer");
                continue;
            }
            let Some(s) = self.sessions.map.get_mut(&session) else {
                continue;
            };
            s.tx.handle_timeout(now);
            let mut resend = None;
            let mut no_ack = false;
            if let Some(u) = s.uas.as_mut() {
                if u.give_up.is_some_and(|g| g <= now) {
                    no_ack = true;
                } else if u.resend_at.is_some_and(|r| r <= now) {
                    u.interval = (u.interval * 2).min(T2);
                    u.resend_at = Some(now + u.interval);
                    resend = u.ok.clone().map(|b| (u.peer, b));
                }
            }
            let no_report: Vec<u64> = s
                .report_by
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(n, _)| *n)
                .collect();
            for n in no_report {
                self.finish_item(now, session, n, 408, "No Success Report");
            }
            if let Some((peer, payload)) = resend {
                self.transmits
                    .push_back(cpm_sip_core::Transmit { peer, payload });
            }
            if no_ack {
                // RFC 3261 section 13.3.1.4: no ACK for the 2xx: the dialog ends with a BYE.
                self.finish_session(now, session, 408, "No ACK", true);
                continue;
            }
            self.drain_outcomes(now, session);
        }
    }

    // ---------------------------------------------------------------- internals

    fn new_session(&mut self, kind: SessionKind, peer: &str) -> SessionId {
        self.sessions.next += 1;
        let id = SessionId(self.sessions.next);
        // RFC 4975 section 14.1: the session-id part of our URI must be hard to guess; port 9
        // with `setup:active` since we never listen (RFC 4145 section 4, RFC 6135).
        let session_part = self.rng.token(20);
        let host = self.cfg.local_addr.ip().to_string();
        let local_path = MsrpUri::new(false, &host, 9, &session_part)
            .or_else(|_| MsrpUri::new(false, "127.0.0.1", 9, &session_part))
            .expect("invariant: an IP address and an alphanumeric session-id make a valid URI");
        let local_media = MsrpMedia {
            port: 9,
            secure: false,
            path: vec![local_path.clone()],
            accept_types: ACCEPT_TYPES.iter().map(|s| (*s).to_owned()).collect(),
            accept_wrapped_types: ACCEPT_WRAPPED_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            setup: Some(Setup::Active),
            max_size: None,
            direction: match kind {
                SessionKind::Chat => Direction::SendRecv,
                SessionKind::LargeMessage | SessionKind::FileTransfer => Direction::SendOnly,
            },
            file: None,
            connection: None,
            other: Vec::new(),
        };
        let conversation_id = self.conversation_for(&[peer.to_owned()]);
        let contribution_id = self.rng.uuid();
        let relay = self
            .cfg
            .msrp_relay
            .as_ref()
            .map(|r| relay::Relay::new(r.uri.clone()));
        self.sessions.map.insert(
            id,
            Session {
                kind,
                incoming: false,
                phase: Phase::Inviting,
                peer: peer.to_owned(),
                conversation_id,
                contribution_id,
                deferred: false,
                invite_key: None,
                cancelled: false,
                ack: None,
                uas: None,
                dialog: None,
                local_media,
                local_sdp: Bytes::new(),
                local_path,
                remote_path: Vec::new(),
                conn: None,
                tx: Transactions::new(TransactionConfig::default()),
                queue: VecDeque::new(),
                items: BTreeMap::new(),
                next_item: 0,
                in_flight: HashMap::new(),
                reports: HashMap::new(),
                report_by: BTreeMap::new(),
                reassembler: Reassembler::new(INCOMING_LIMITS),
                bodies: HashMap::new(),
                file: None,
                relay,
            },
        );
        id
    }

    /// Our SDP for `media` (RFC 4566 `o=`/`c=` with our address).
    fn sdp_bytes(&mut self, media: &MsrpMedia) -> Bytes {
        let session_id = self.rng.next_u64() >> 1;
        Bytes::from(
            Sdp::for_msrp(&self.user, session_id, 1, self.cfg.local_addr.ip(), media).to_bytes(),
        )
    }

    /// Starts a session we start: the INVITE, or through a relay first the relay's AUTH
    /// (the INVITE follows its 200). A recipient that is no URI is an error at once.
    fn begin_outgoing(&mut self, now: Instant, session: SessionId) -> Result<(), SendError> {
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return Err(SendError::NoSession);
        };
        if s.relay.is_none() {
            return self.invite(now, session);
        }
        Uri::parse(&s.peer).map_err(|_| SendError::BadRecipient(s.peer.clone()))?;
        s.phase = Phase::Authenticating;
        self.relay_connect(session);
        Ok(())
    }

    /// Sends the INVITE of a session we start (PROTOCOL.md flows 2.2 and 2.3).
    fn invite(&mut self, now: Instant, session: SessionId) -> Result<(), SendError> {
        let Some(s) = self.sessions.map.get(&session) else {
            return Err(SendError::NoSession);
        };
        let (kind, peer, conversation, contribution, media) = (
            s.kind,
            s.peer.clone(),
            s.conversation_id.clone(),
            s.contribution_id.clone(),
            s.local_media.clone(),
        );
        let sdp = self.sdp_bytes(&media);
        let uri = Uri::parse(&peer).map_err(|_| SendError::BadRecipient(peer.clone()))?;
        let call_id = self.rng.hex(24);
        let from_tag = self.rng.hex(12);
        let mut req = self.request(
            Method::Invite,
            uri,
            &format!("<{peer}>"),
            &call_id,
            &from_tag,
            1,
        );
        let icsi = kind.icsi();
        add_icsi_headers(&mut req, icsi);
        let contact = self.contact_for(&[icsi]);
        req.headers.push(Header::new(HeaderName::Contact, &contact));
        req.headers
            .push(Header::new(HeaderName::ConversationId, &conversation));
        req.headers
            .push(Header::new(HeaderName::ContributionId, &contribution));
        req.headers.push(Header::new(HeaderName::Allow, ALLOW));
        set_body(&mut req, "application/sdp", sdp.clone());
        if !self.registered {
            self.preauthorize(&mut req, true);
        }
        let key = self.start(now, req, Purpose::Invite { session });
        if let Some(s) = self.sessions.map.get_mut(&session) {
            s.local_sdp = sdp;
            s.invite_key = key;
        }
        Ok(())
    }

    /// A provisional or 2xx response to an INVITE we received: our To tag, Contact,
    /// Record-Route copied (RFC 3261 section 12.1.1), Allow.
    fn invite_response(
        &self,
        invite: &Request,
        status: StatusCode,
        tag: &str,
        contact: &str,
    ) -> Response {
        let mut resp = response_to(invite, status, Some(tag));
        for rr in invite.headers.get_all(&HeaderName::RecordRoute) {
            resp.headers.push(rr.clone());
        }
        resp.headers.push(Header::new(HeaderName::Contact, contact));
        resp.headers.push(Header::new(HeaderName::Allow, ALLOW));
        resp.headers
            .push(Header::new(HeaderName::UserAgent, USER_AGENT));
        resp
    }

    /// The MSRP media of an SDP answer, or why it cannot be used.
    fn answer_media(&self, resp: &Response) -> Result<MsrpMedia, &'static str> {
        let is_sdp = resp
            .headers
            .content_type()
            .ok()
            .flatten()
            .is_some_and(|c| c.is("application", "sdp"));
        if !is_sdp {
            return Err("Answer Without SDP");
        }
        let sdp = Sdp::parse(&resp.body).map_err(|e| e.reason())?;
        match sdp.msrp() {
            Some(Ok((_, m))) if !m.path.is_empty() => Ok(m),
            Some(Ok(_)) | None => Err("Answer Without MSRP Media"),
            Some(Err(e)) => Err(e.reason()),
        }
    }

    /// Via, Max-Forwards and User-Agent of a request in a dialog (the dialog gives the rest).
    fn in_dialog_headers(&mut self, req: &mut Request) {
        let via = self.via();
        req.headers.push_front(Header::new(HeaderName::Via, &via));
        req.headers.push(Header::new(HeaderName::MaxForwards, "70"));
        req.headers
            .push(Header::new(HeaderName::UserAgent, USER_AGENT));
    }

    /// Sends a BYE in `dialog` (RFC 3261 section 15.1.1).
    fn bye(&mut self, now: Instant, mut dialog: Dialog) {
        let mut req = dialog.request(Method::Bye, None);
        self.in_dialog_headers(&mut req);
        req.headers
            .push(Header::new(HeaderName::ContentLength, "0"));
        if !self.registered {
            self.preauthorize(&mut req, true);
        }
        self.start(now, req, Purpose::Bye);
    }

    /// Asks the transport for the session's MSRP connection: to the first URI of the peer's
    /// path (RFC 4975 section 5.4; its To-Path for us).
    fn connect(&mut self, now: Instant, session: SessionId) {
        let addr = self
            .sessions
            .map
            .get(&session)
            .and_then(|s| s.remote_path.first())
            .and_then(uri_addr);
        match addr {
            Some(addr) => self.sessions.commands.push_back(ConnCommand::Connect {
                token: session.0,
                addr,
            }),
            None => self.finish_session(now, session, 488, "MSRP Path Not An Address", true),
        }
    }

    /// The SDP exchange is done: the media goes on the relay's connection, which is open
    /// already, or on a new one to the peer's path.
    fn start_media(&mut self, now: Instant, session: SessionId) {
        let Some(s) = self.sessions.map.get(&session) else {
            return;
        };
        match (&s.relay, s.conn) {
            (None, _) => self.connect(now, session),
            (Some(_), Some(conn)) => self.media_up(now, session, conn),
            (Some(_), None) => {
                self.finish_session(now, session, 503, "MSRP Relay Closed", true);
            }
        }
    }

    fn on_connected(&mut self, now: Instant, session: SessionId, conn: ConnId) {
        if !self
            .sessions
            .map
            .get(&session)
            .is_some_and(|s| s.phase == Phase::Connecting && s.conn.is_none())
        {
            self.sessions
                .commands
                .push_back(ConnCommand::Close { conn });
            return;
        }
        self.media_up(now, session, conn);
    }

    /// The session's MSRP connection is open: it is bound with the first SEND.
    fn media_up(&mut self, now: Instant, session: SessionId, conn: ConnId) {
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        s.conn = Some(conn);
        s.phase = Phase::Up;
        // A file we send binds the connection with its first chunk.
        let sends_file = s.file.as_ref().is_some_and(|f| f.is_sending());
        if s.queue.is_empty() && !sends_file {
            // RFC 4975 section 5.4: the active side binds the connection with a SEND; with
            // nothing to say, an empty one (no Content-Type, no body).
            let n = s.push_item(Item {
                what: What::Quiet,
                content_type: None,
                body: Bytes::new(),
                chunks_left: 0,
            });
            s.queue.retain(|x| *x != n);
            s.queue.push_front(n);
        }
        let (peer, kind, incoming) = (aor_of(&s.peer), s.kind, s.incoming);
        // A relay's connection may be in the middle of a frame already.
        self.sessions.reading.entry(conn).or_insert(Reading::Idle);
        self.events.push_back(Event::SessionStarted {
            session,
            peer,
            kind,
            incoming,
        });
        self.flush_queue(now, session);
        if sends_file {
            self.file_fill(now, session);
        }
    }

    fn queue_item(&mut self, now: Instant, session: SessionId, item: Item) {
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        s.push_item(item);
        if s.phase == Phase::Up {
            self.flush_queue(now, session);
        }
    }

    /// Ends a session: its messages fail, its connection closes, a BYE goes out if it had a
    /// dialog, [`Event::SessionEnded`].
    fn finish_session(
        &mut self,
        now: Instant,
        session: SessionId,
        status: u16,
        reason: &str,
        by_peer: bool,
    ) {
        self.end(now, session, status, reason, by_peer, true);
    }

    /// [`Client::finish_session`] for a dialog the peer ended (BYE, CANCEL): no BYE.
    fn finish_without_bye(
        &mut self,
        now: Instant,
        session: SessionId,
        status: u16,
        reason: &str,
        by_peer: bool,
    ) {
        self.end(now, session, status, reason, by_peer, false);
    }

    fn end(
        &mut self,
        now: Instant,
        session: SessionId,
        status: u16,
        reason: &str,
        by_peer: bool,
        send_bye: bool,
    ) {
        let Some(s) = self.sessions.map.remove(&session) else {
            return;
        };
        // What was not answered fails with the session's status (its refusal), or 503 when
        // a session that was up ended.
        let (fail, fail_reason) = if (200..300).contains(&status) {
            (503, "Session Ended")
        } else {
            (status, reason)
        };
        for (_, item) in s.items {
            self.report_item(now, session, item.what, fail, fail_reason);
        }
        if let Some(t) = s.file.filter(|t| !t.done) {
            let status = if (200..300).contains(&status) {
                503
            } else {
                status
            };
            self.events.push_back(Event::FileFailed {
                session,
                incoming: !t.is_sending(),
                name: t.file.name.clone(),
                status,
                reason: reason.to_owned(),
            });
        }
        if let Some(conn) = s.conn {
            self.sessions.reading.remove(&conn);
            self.sessions
                .commands
                .push_back(ConnCommand::Close { conn });
        }
        if send_bye && let Some(dialog) = s.dialog {
            self.bye(now, dialog);
        }
        self.events.push_back(Event::SessionEnded {
            session,
            status,
            reason: reason.to_owned(),
            by_peer,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_addresses() {
        let u: MsrpUri = "msrp://127.0.0.1:2855/abcd;tcp".parse().unwrap();
        assert_eq!(uri_addr(&u), Some("127.0.0.1:2855".parse().unwrap()));
        let u: MsrpUri = "msrp://[::1]:2855/abcd;tcp".parse().unwrap();
        assert_eq!(uri_addr(&u), Some("[::1]:2855".parse().unwrap()));
        let u: MsrpUri = "msrp://relay.example:2855/abcd;tcp".parse().unwrap();
        assert_eq!(uri_addr(&u), None);
    }
}
