//! CPM sessions through the PF (OMA CPM 5.2.3: 1-1 chat, 5.2.2 Large Message Mode, file
//! transfer; PROTOCOL.md flows 2.2-2.3): the PF is a B2BUA for the INVITE and **anchors the
//! MSRP media** (RFC 4975): the served user's client connects to the PF's MSRP listener, the
//! PF relays to the next PF (or to the client, on the terminating side) on a connection of its
//! own, and every message is stored in the served user's history before the PF acknowledges
//! it.
//!
//! Each session has two legs, each one SIP dialog and one MSRP session:
//!
//! - **Up**: toward whoever sent the INVITE (the PF is the UAS); on the originating side the
//!   served user's client, on the terminating side the network (the inviting user's PF).
//! - **Down**: toward the invitee (the PF is the UAC); on the originating side the network,
//!   on the terminating side the served user's devices (the core forks to them; the first
//!   to answer wins and the core cancels the others).
//!
//! The SDP the PF writes puts its own MSRP URI in `a=path` on each leg (a fresh session id
//! per leg, carrying the shard that owns it, see [`msrp_session_shard`]). Towards the invitee
//! it offers `a=setup:actpass`; towards the inviter it answers `passive` when it can, so
//! clients (which never listen) always open their own connection (RFC 6135).
//!
//! Storage rules (ARCHITECTURE.md rule 3), in `media`:
//! - a message from the served user's client is stored (`sent`) in the served user's
//!   history, then relayed; the client's `200` waits for the network's `200`, which the
//!   other PF sends only after its own commit, so a `200` means both histories have it;
//! - a message from the network is stored (`received`, in the deferred queue state
//!   `pending`) and then answered `200`; it is relayed to the client, whose `200` marks it
//!   delivered. If the client is gone it stays in the deferred queue and is delivered as a
//!   deferred pager message when a device registers;
//! - an invited user with no device reachable (480, 408): the terminating PF answers the
//!   INVITE itself (store and forward) and keeps every message in the deferred queue.

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_msrp::{ConnId, MsrpUri, TransactId, Transactions};
use cpm_sdp::offer_answer::{self, AnswerPolicy};
use cpm_sdp::{MsrpMedia, Sdp, Setup};
use cpm_sip::cpm::Phase;
use cpm_sip::{Header, HeaderName, Method, Request, Response, StatusCode};
use cpm_sip_core::dialog::{Dialog, DialogState};
use cpm_sip_core::transaction::{ClientKey, ServerKey, response_to};
use foldhash::fast::FixedState;

use super::message::{ConversationIds, asserted_identity};
use super::{BRANCH_PREFIX, ClientPurpose, OpPurpose, Output, ParticipatingFunction, Refusal};
use crate::ids::aor_of;

mod file;
mod media;

pub use file::FILE_RECORD_TYPE;

pub(super) use media::SessionStore;

pub use cpm_sip::cpm::PF_CONTACT_PARAM;
pub use cpm_sip::cpm::{ICSI_FILETRANSFER, ICSI_SESSION};
/// How many MSRP messages wait on a leg whose connection is not up yet.
const MAX_QUEUED: usize = 256;

/// The shard that owns an MSRP session id the PF allocated (`s<shard>-<random>`), for the
/// driver's dispatch of MSRP connections.
pub fn msrp_session_shard(session_id: &str) -> Option<u16> {
    let rest = session_id.strip_prefix('s')?;
    let (shard, _) = rest.split_once('-')?;
    shard.parse().ok()
}

/// Which side of the B2BUA a leg is.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub(super) enum Leg {
    /// Toward the inviter (we are the UAS).
    Up,
    /// Toward the invitee (we are the UAC).
    Down,
}

impl Leg {
    pub(super) fn other(self) -> Self {
        match self {
            Self::Up => Self::Down,
            Self::Down => Self::Up,
        }
    }
}

/// What a session carries, from its ICSI.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum SessionKind {
    Chat,
    LargeMessage,
    FileTransfer,
}

/// One leg's MSRP session.
#[derive(Debug)]
pub(super) struct MediaLeg {
    /// Our URI on this leg (its session id is ours).
    pub(super) local: MsrpUri,
    /// The peer's `a=path` (To-Path of what we send on this leg).
    pub(super) remote: Vec<MsrpUri>,
    /// The connection, once bound.
    pub(super) conn: Option<ConnId>,
    /// Whether we open the connection (RFC 6135), and whether that is under way.
    pub(super) we_connect: bool,
    /// What waits for the connection: the request and its encoded bytes.
    pub(super) queue: VecDeque<(cpm_msrp::Request, Bytes)>,
    /// Our requests in flight on this leg.
    pub(super) tx: Transactions,
    /// What each of our SENDs is for.
    pub(super) relays: HashMap<TransactId, media::Relay, FixedState>,
    /// The message being read on the connection: its head and body so far.
    pub(super) reading: Option<(cpm_msrp::Request, BytesMut)>,
    /// Earlier chunks of messages sent in several (RFC 4975 section 5.1), by Message-ID.
    pub(super) partial: HashMap<String, BytesMut, FixedState>,
}

impl MediaLeg {
    fn new(local: MsrpUri) -> Self {
        Self {
            local,
            remote: Vec::new(),
            conn: None,
            we_connect: false,
            queue: VecDeque::new(),
            tx: Transactions::default(),
            relays: HashMap::with_hasher(FixedState::with_seed(0)),
            reading: None,
            partial: HashMap::with_hasher(FixedState::with_seed(0)),
        }
    }
}

/// What a session needs while it is being set up.
#[derive(Debug)]
pub(super) struct SetupState {
    /// The INVITE we answer on the up leg.
    pub(super) up_invite: Request,
    /// The INVITE we sent on the down leg.
    pub(super) down_invite: Request,
    /// The answer SDP for the up leg, computed from the offer at INVITE time.
    pub(super) up_answer: Bytes,
}

/// One CPM session through this PF.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) side: Phase,
    pub(super) kind: SessionKind,
    /// The served user.
    pub(super) owner: String,
    /// The other party.
    pub(super) peer: String,
    pub(super) owner_uri: String,
    pub(super) peer_uri: String,
    pub(super) ids: ConversationIds,
    /// The terminating PF answered for a user with no device (store and forward).
    pub(super) stand_in: bool,
    /// What only the set-up needs (the INVITEs, our answer): dropped once the session is
    /// up, since a node holds many idle sessions.
    pub(super) setup: Option<Box<SetupState>>,
    /// (Call-ID, our tag) of each leg's dialog: its key in [`Sessions::dialogs`].
    pub(super) up_key: (String, String),
    pub(super) down_key: (String, String),
    // Up leg (we are UAS).
    pub(super) up_server: ServerKey,
    pub(super) up_tag: String,
    pub(super) up_dialog: Option<Dialog>,
    /// The 2xx we sent, retransmitted until the ACK (RFC 3261 13.3.1.4).
    pub(super) up_ok: Option<Response>,
    pub(super) up_ok_interval: Duration,
    pub(super) up_ok_since: Option<Instant>,
    // Down leg (we are UAC).
    pub(super) down_client: Option<ClientKey>,
    pub(super) down_dialog: Option<Dialog>,
    pub(super) media: [MediaLeg; 2],
    pub(super) last_activity: Instant,
    /// The network leg ended (BYE) while messages were still on their way to the served
    /// user's client: the client's leg stays up until they are acknowledged (a Large
    /// Message Mode session ends right after its one SEND), then gets its BYE.
    pub(super) draining: bool,
    /// A file session's transfer.
    pub(super) file: Option<file::FileState>,
}

impl Session {
    /// The leg toward the served user's client: the inviter on the originating side, the
    /// invitee on the terminating side.
    pub(super) fn owner_leg(&self) -> Leg {
        match self.side {
            Phase::Orig => Leg::Up,
            Phase::Term => Leg::Down,
        }
    }

    pub(super) fn media(&self, leg: Leg) -> &MediaLeg {
        &self.media[leg as usize]
    }

    pub(super) fn media_mut(&mut self, leg: Leg) -> &mut MediaLeg {
        &mut self.media[leg as usize]
    }
}

/// Every session of the PF and the indexes that find them.
#[derive(Debug)]
pub(super) struct Sessions {
    pub(super) map: HashMap<u64, Session, FixedState>,
    /// In-dialog SIP requests: (Call-ID, our tag) to the session and leg.
    pub(super) dialogs: HashMap<(String, String), (u64, Leg), FixedState>,
    /// Our MSRP session ids.
    pub(super) msrp_ids: HashMap<String, (u64, Leg), FixedState>,
    /// Bound MSRP connections.
    pub(super) conns: HashMap<ConnId, (u64, Leg), FixedState>,
    /// Connections whose current message is being skipped (refused at its head).
    pub(super) discarding: std::collections::HashSet<ConnId, FixedState>,
    /// Connections being opened, by token.
    pub(super) connects: HashMap<u64, (u64, Leg), FixedState>,
    /// 2xx retransmissions due (lazy deletion).
    pub(super) retransmits: BTreeSet<(Instant, u64)>,
    /// MSRP transaction deadlines (lazy: a session is checked when its entry comes due).
    pub(super) msrp_deadlines: BTreeSet<(Instant, u64)>,
    pub(super) next_sweep: Option<Instant>,
    pub(super) next_id: u64,
    pub(super) next_token: u64,
}

impl Sessions {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            map: HashMap::with_hasher(FixedState::with_seed(seed)),
            dialogs: HashMap::with_hasher(FixedState::with_seed(seed)),
            msrp_ids: HashMap::with_hasher(FixedState::with_seed(seed)),
            conns: HashMap::with_hasher(FixedState::with_seed(seed)),
            connects: HashMap::with_hasher(FixedState::with_seed(seed)),
            discarding: std::collections::HashSet::with_hasher(FixedState::with_seed(seed)),
            retransmits: BTreeSet::new(),
            msrp_deadlines: BTreeSet::new(),
            next_sweep: None,
            next_id: 1,
            next_token: 1,
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.retransmits.first().map(|e| e.0),
            self.msrp_deadlines.first().map(|e| e.0),
            self.next_sweep,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The session kind a request's service identifiers name.
fn kind_of(req: &Request) -> SessionKind {
    let h = &req.headers;
    let mut ids = h.p_asserted_service().unwrap_or_default();
    ids.extend(h.p_preferred_service().unwrap_or_default());
    for ac in h.accept_contact().unwrap_or_default() {
        ids.extend(ac.feature_values("+g.3gpp.icsi-ref"));
    }
    if ids.iter().any(|s| s.contains(".largemsg")) {
        SessionKind::LargeMessage
    } else if ids.iter().any(|s| s.contains(".filetransfer")) {
        SessionKind::FileTransfer
    } else {
        SessionKind::Chat
    }
}

/// The ICSI of a session kind.
fn icsi_of(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Chat => ICSI_SESSION,
        SessionKind::LargeMessage => cpm_sip::cpm::ICSI_LARGEMSG,
        SessionKind::FileTransfer => ICSI_FILETRANSFER,
    }
}

/// The Call-ID of a request (every request the PF handles has one: `check_request`).
fn call_id_of(r: &Request) -> String {
    r.headers
        .call_id()
        .ok()
        .flatten()
        .map(|c| c.0)
        .unwrap_or_default()
}

/// The tag of a From or To header, empty when it has none.
fn tag_of(a: Result<Option<cpm_sip::NameAddr>, cpm_sip::HeaderError>) -> String {
    a.ok()
        .flatten()
        .and_then(|f| f.tag().map(str::to_owned))
        .unwrap_or_default()
}

/// The socket address of an MSRP URI whose host is an IP literal (or `localhost`).
pub(super) fn uri_addr(u: &MsrpUri) -> Option<SocketAddr> {
    let host = u.host().as_str();
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(core::net::Ipv4Addr::LOCALHOST)
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?
    };
    Some(SocketAddr::new(ip, u.port()?))
}

impl ParticipatingFunction {
    /// Our Contact on a session leg: the core hands in-dialog requests to it back to this PF
    /// (on this shard).
    fn session_contact(&self, kind: SessionKind) -> String {
        format!(
            "<sip:{};{PF_CONTACT_PARAM}={}>;+g.3gpp.icsi-ref=\"{}\"",
            self.cfg.address,
            self.cfg.shard,
            icsi_of(kind).replace(':', "%3A")
        )
    }

    /// A fresh MSRP URI of ours (unguessable session id carrying the shard).
    fn new_msrp_uri(&mut self, at: SocketAddr) -> Option<MsrpUri> {
        let (a, b) = (self.random(), self.random());
        let id = format!("s{}-{a:016x}{b:016x}", self.cfg.shard);
        MsrpUri::new(false, &at.ip().to_string(), at.port(), &id).ok()
    }

    /// An INVITE the core routed to us with a CPM phase: a new session (5.2.3.2).
    pub(super) fn on_session_invite(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        phase: Phase,
    ) {
        let Some(msrp_at) = self.cfg.msrp else {
            return self.refuse(now, &key, &req, Refusal::SessionsNotServed);
        };
        if self.sessions.map.len() >= self.cfg.max_sessions {
            return self.refuse(now, &key, &req, Refusal::Overloaded);
        }
        let sender_uri =
            asserted_identity(&req).or_else(|| req.headers.from().ok().flatten().map(|f| f.uri));
        let (owner, peer, owner_uri, peer_uri) = match phase {
            Phase::Orig => {
                let Some(sender_uri) = asserted_identity(&req) else {
                    return self.refuse(now, &key, &req, Refusal::NoAssertedIdentity);
                };
                let (Some(owner), Some(peer)) = (aor_of(&sender_uri), aor_of(&req.uri)) else {
                    return self.refuse(now, &key, &req, Refusal::RecipientNotAor);
                };
                (owner, peer, sender_uri.to_string(), req.uri.to_string())
            }
            Phase::Term => {
                let Some(owner) = aor_of(&req.uri) else {
                    return self.refuse(now, &key, &req, Refusal::UserNotAor);
                };
                let Some(sender_uri) = sender_uri else {
                    return self.refuse(now, &key, &req, Refusal::NoSender);
                };
                let peer = aor_of(&sender_uri).unwrap_or_else(|| sender_uri.to_string());
                (owner, peer, req.uri.to_string(), sender_uri.to_string())
            }
        };
        let content_type = req
            .headers
            .get(&HeaderName::ContentType)
            .and_then(|h| h.value().ok().map(|v| v.into_owned()))
            .unwrap_or_default();
        if !cpm_content::mime::media_type(&content_type).eq_ignore_ascii_case("application/sdp") {
            return self.refuse(now, &key, &req, Refusal::SessionNeedsSdp);
        }
        let offer = match Sdp::parse(&req.body).map(|s| s.msrp()) {
            Ok(Some(Ok((_, m)))) => m,
            Ok(Some(Err(e))) | Err(e) => {
                return self.refuse(now, &key, &req, Refusal::BadSdp(e.status(), e.reason()));
            }
            Ok(None) => return self.refuse(now, &key, &req, Refusal::NoMsrpMedia),
        };
        let (Some(up_local), Some(down_local)) =
            (self.new_msrp_uri(msrp_at), self.new_msrp_uri(msrp_at))
        else {
            return self.refuse(now, &key, &req, Refusal::CannotSend);
        };
        // Our answer to the inviter: we relay whatever both ends accept, so the offer's types
        // are ours; passive, so a client opens the connection.
        let policy = AnswerPolicy {
            path: vec![up_local.clone()],
            accept_types: offer.accept_types.clone(),
            accept_wrapped_types: offer.accept_wrapped_types.clone(),
            prefer: Setup::Passive,
            max_size: Some(self.cfg.max_session_message as u64),
        };
        let answer = match offer_answer::answer(&offer, &policy) {
            Ok(a) => a,
            Err(rej) => {
                return self.refuse(now, &key, &req, Refusal::BadSdp(rej.status, rej.reason));
            }
        };
        let session_version = self.random() >> 1;
        let up_answer =
            Bytes::from(Sdp::for_msrp("cpm", session_version, 1, msrp_at.ip(), &answer).to_bytes());
        let down_offer = MsrpMedia {
            port: msrp_at.port(),
            secure: false,
            path: vec![down_local.clone()],
            accept_types: offer.accept_types.clone(),
            accept_wrapped_types: offer.accept_wrapped_types.clone(),
            setup: Some(Setup::ActPass),
            max_size: Some(self.cfg.max_session_message as u64),
            direction: offer.direction,
            file: offer.file.clone(),
            connection: Some(msrp_at.ip()),
            other: Vec::new(),
        };
        let down_sdp = Sdp::for_msrp("cpm", session_version, 1, msrp_at.ip(), &down_offer);
        let kind = kind_of(&req);
        let file = if kind == SessionKind::FileTransfer {
            let media_id = format!("ft-{:016x}{:016x}", self.random(), self.random());
            let max = self.cfg.max_file_size;
            match offer
                .file
                .as_ref()
                .map(|f| file::FileState::new(f, media_id, max))
            {
                Some(Some(f)) => Some(f),
                // RFC 5547: a push offer describes the file; we keep only what we can bound.
                _ => {
                    return self.refuse(
                        now,
                        &key,
                        &req,
                        Refusal::BadSdp(488, "File Selector Needs A Size Within The Limit"),
                    );
                }
            }
        } else {
            None
        };
        let ids = ConversationIds::of(&req);
        let mut out = self.onward(&req, &ids, req.uri.clone(), None);
        out.headers.set(HeaderName::CSeq, "1 INVITE");
        out.headers
            .set(HeaderName::Contact, &self.session_contact(kind));
        out.headers.set(HeaderName::ContentType, "application/sdp");
        out.body = Bytes::from(down_sdp.to_bytes());
        out.headers
            .set(HeaderName::ContentLength, &out.body.len().to_string());
        if phase == Phase::Term {
            // To the core with no CPM phase: it forks to the served user's devices.
            out.headers.remove_all(&HeaderName::Route);
        }
        let sid = self.sessions.next_id;
        self.sessions.next_id += 1;
        let up_tag = self.tag();
        let down_tag = tag_of(out.headers.from());
        self.sessions
            .dialogs
            .insert((call_id_of(&req), up_tag.clone()), (sid, Leg::Up));
        self.sessions
            .dialogs
            .insert((call_id_of(&out), down_tag), (sid, Leg::Down));
        for (uri, leg) in [(&up_local, Leg::Up), (&down_local, Leg::Down)] {
            if let Some(id) = uri.session_id() {
                self.sessions.msrp_ids.insert(id.to_owned(), (sid, leg));
            }
        }
        let mut up_media = MediaLeg::new(up_local);
        up_media.remote = offer.path.clone();
        up_media.we_connect = offer_answer::connects(
            answer.setup.unwrap_or(Setup::Passive),
            offer.setup.unwrap_or(Setup::ActPass),
            false,
        );
        self.sessions.map.insert(
            sid,
            Session {
                side: phase,
                kind,
                owner,
                peer,
                owner_uri,
                peer_uri,
                ids,
                stand_in: false,
                up_key: (call_id_of(&req), up_tag.clone()),
                down_key: (call_id_of(&out), tag_of(out.headers.from())),
                setup: Some(Box::new(SetupState {
                    up_invite: req,
                    down_invite: out.clone(),
                    up_answer,
                })),
                up_server: key,
                up_tag,
                up_dialog: None,
                up_ok: None,
                up_ok_interval: self.cfg.timers.t1,
                up_ok_since: None,
                down_client: None,
                down_dialog: None,
                media: [up_media, MediaLeg::new(down_local)],
                last_activity: now,
                draining: false,
                file,
            },
        );
        if self.sessions.next_sweep.is_none() {
            self.sessions.next_sweep =
                Some(now + self.cfg.session_idle.min(Duration::from_secs(30)));
        }
        let dest = self.core_peer();
        match self.tx.send_request(now, out, dest) {
            Ok(ckey) => {
                if let Some(s) = self.sessions.map.get_mut(&sid) {
                    s.down_client = Some(ckey.clone());
                }
                self.clients.insert(ckey, ClientPurpose::Session(sid));
            }
            Err(_) => self.fail_session(now, sid, StatusCode::SERVER_INTERNAL_ERROR, "Cannot Send"),
        }
    }

    /// A response on the down leg's INVITE.
    pub(super) fn on_session_response(&mut self, now: Instant, sid: u64, resp: &Response) {
        let contact = match self.sessions.map.get(&sid) {
            Some(s) => self.session_contact(s.kind),
            None => return,
        };
        let Some(s) = self.sessions.map.get_mut(&sid) else {
            return;
        };
        let status = resp.status;
        if status.is_provisional() {
            let Some(setup) = s.setup.as_ref().filter(|_| status.as_u16() != 100) else {
                return;
            };
            // RFC 3261 16.7-like relay of the progress (Appendix C: 180 when the first
            // device is alerting).
            let mut r = response_to(&setup.up_invite, status, Some(&s.up_tag));
            r.reason = resp.reason.clone();
            r.headers.push(Header::new(HeaderName::Contact, &contact));
            let key = s.up_server.clone();
            let _ = self.tx.respond_owned(now, &key, r);
            return;
        }
        if status.is_success() {
            if let Some(d) = s.down_dialog.clone() {
                // A retransmitted 2xx: its ACK got lost (RFC 3261 13.2.2.4).
                self.send_ack(d);
                return;
            }
            let Some(Ok(dialog)) = s
                .setup
                .as_ref()
                .map(|st| Dialog::from_uac(&st.down_invite, resp))
            else {
                return self.fail_session(now, sid, StatusCode::BAD_GATEWAY, "Bad Answer");
            };
            let answer = Sdp::parse(&resp.body)
                .ok()
                .and_then(|sdp| sdp.msrp())
                .and_then(Result::ok);
            s.down_dialog = Some(dialog.clone());
            self.send_ack(dialog);
            let Some((_, answer)) = answer else {
                self.end_session(now, sid, None);
                return;
            };
            let Some(s) = self.sessions.map.get_mut(&sid) else {
                return;
            };
            let m = s.media_mut(Leg::Down);
            m.remote = answer.path.clone();
            m.we_connect = offer_answer::connects(
                Setup::ActPass,
                answer.setup.unwrap_or(Setup::Passive),
                true,
            );
            if m.we_connect {
                self.connect_leg(sid, Leg::Down);
            }
            self.answer_up(now, sid);
            return;
        }
        // A failure. No device reachable for a served user's chat: answer for them and keep
        // what they are sent (5.2.3.1, store and forward).
        let term_no_device = s.side == Phase::Term
            && s.kind != SessionKind::FileTransfer
            && matches!(status.as_u16(), 480 | 408);
        s.down_client = None;
        if term_no_device {
            s.stand_in = true;
            self.answer_up(now, sid);
            return;
        }
        let reason = resp.reason.clone();
        self.fail_session(now, sid, status, &reason);
    }

    /// The down leg's INVITE timed out or could not be sent (a 408 of our own).
    pub(super) fn on_session_leg_failed(&mut self, now: Instant, sid: u64, status: StatusCode) {
        let mut r = Response::new(status);
        r.reason = "Request Timeout".to_owned();
        self.on_session_response(now, sid, &r);
    }

    /// Sends the ACK for the down leg's 2xx, in its dialog (RFC 3261 13.2.2.4).
    fn send_ack(&mut self, mut dialog: Dialog) {
        let seq = dialog.local_seq;
        let mut ack = dialog.request(Method::Ack, Some(seq));
        self.dress(&mut ack);
        let dest = self.core_peer();
        self.send_stateless(dest, cpm_sip::Message::Request(ack));
    }

    /// Adds our Via and Max-Forwards to a request we originate in a dialog.
    fn dress(&mut self, req: &mut Request) {
        let branch = format!("{BRANCH_PREFIX}{:016x}", self.random());
        req.headers.push_front(Header::new(
            HeaderName::Via,
            &format!(
                "SIP/2.0/{} {};branch={branch}",
                self.cfg.core.transport.as_via_token(),
                self.cfg.address
            ),
        ));
        req.headers.push(Header::new(HeaderName::MaxForwards, "70"));
        req.headers
            .push(Header::new(HeaderName::ContentLength, "0"));
    }

    /// Answers the inviter 200 with our SDP (the session is up on our side).
    fn answer_up(&mut self, now: Instant, sid: u64) {
        let contact = match self.sessions.map.get(&sid) {
            Some(s) => self.session_contact(s.kind),
            None => return,
        };
        let Some(s) = self.sessions.map.get_mut(&sid) else {
            return;
        };
        // Once answered, what the set-up needed goes.
        let Some(setup) = s.setup.take() else {
            return;
        };
        let mut ok = response_to(&setup.up_invite, StatusCode::OK, Some(&s.up_tag));
        // RFC 3261 12.1.1: the UAS copies Record-Route into the 2xx (the inviter's route set).
        for rr in setup.up_invite.headers.get_all(&HeaderName::RecordRoute) {
            ok.headers.push(rr.clone());
        }
        ok.headers.push(Header::new(HeaderName::Contact, &contact));
        ok.headers.push(Header::new(
            HeaderName::Allow,
            "INVITE, ACK, CANCEL, BYE, MESSAGE, OPTIONS",
        ));
        ok.headers.set(HeaderName::ContentType, "application/sdp");
        ok.body = setup.up_answer.clone();
        ok.headers
            .set(HeaderName::ContentLength, &ok.body.len().to_string());
        s.up_dialog = Dialog::from_uas(&setup.up_invite, &s.up_tag, DialogState::Confirmed).ok();
        s.up_ok = Some(ok.clone());
        s.up_ok_since = Some(now);
        s.up_ok_interval = self.cfg.timers.t1;
        s.last_activity = now;
        let key = s.up_server.clone();
        let we_connect = s.media(Leg::Up).we_connect;
        self.sessions
            .retransmits
            .insert((now + self.cfg.timers.t1, sid));
        let _ = self.tx.respond_owned(now, &key, ok);
        if we_connect {
            self.connect_leg(sid, Leg::Up);
        }
    }

    /// Asks the driver to open the MSRP connection of a leg where we are active.
    fn connect_leg(&mut self, sid: u64, leg: Leg) {
        let Some(s) = self.sessions.map.get(&sid) else {
            return;
        };
        let Some(addr) = s.media(leg).remote.first().and_then(uri_addr) else {
            return;
        };
        let token = self.sessions.next_token;
        self.sessions.next_token += 1;
        self.sessions.connects.insert(token, (sid, leg));
        self.outputs
            .push_back(Output::Msrp(cpm_msrp::ConnCommand::Connect { token, addr }));
    }

    /// The session cannot be set up: the inviter gets `status`, the rest is undone.
    pub(super) fn fail_session(
        &mut self,
        now: Instant,
        sid: u64,
        status: StatusCode,
        reason: &str,
    ) {
        if let Some(s) = self.sessions.map.get(&sid)
            && let Some(setup) = &s.setup
        {
            let mut r = response_to(&setup.up_invite, status, Some(&s.up_tag));
            r.reason = reason.to_owned();
            let key = s.up_server.clone();
            self.stats.rejected += 1;
            let _ = self.tx.respond_owned(now, &key, r);
        }
        self.end_session(now, sid, None);
    }

    /// The network leg `gone` ended (its BYE, or its connection lost) while messages were
    /// still on their way to the served user's client: what the network sent before is
    /// delivered first (a Large Message Mode session ends right after its one SEND), and the
    /// client's leg ends once it has everything. `bye`: the network leg's dialog is still up
    /// and gets a BYE now. Returns whether the session stays, draining.
    pub(super) fn drain_first(&mut self, now: Instant, sid: u64, gone: Leg, bye: bool) -> bool {
        let Some(s) = self.sessions.map.get_mut(&sid) else {
            return false;
        };
        // Established (answered: the set-up state is gone), and something is owed.
        let owed = {
            let m = s.media(s.owner_leg());
            !m.queue.is_empty() || !m.relays.is_empty()
        };
        if gone == s.owner_leg() || s.setup.is_some() || !owed {
            return false;
        }
        s.draining = true;
        s.last_activity = now;
        let dialog = match gone {
            Leg::Up => s.up_dialog.take(),
            Leg::Down => s.down_dialog.take(),
        };
        if let Some(conn) = s.media_mut(gone).conn.take() {
            self.sessions.conns.remove(&conn);
            self.outputs
                .push_back(Output::Msrp(cpm_msrp::ConnCommand::Close { conn }));
        }
        if bye && let Some(mut d) = dialog {
            let mut req = d.request(Method::Bye, None);
            self.dress(&mut req);
            let dest = self.core_peer();
            if let Ok(ck) = self.tx.send_request(now, req, dest) {
                self.clients.insert(ck, ClientPurpose::Notice);
            }
        }
        true
    }

    /// Ends a session: BYE on every established leg but `from` (which ended it), CANCEL of an
    /// INVITE still out, the MSRP connections closed, the indexes cleaned.
    pub(super) fn end_session(&mut self, now: Instant, sid: u64, from: Option<Leg>) {
        if let Some(from) = from
            && self.drain_first(now, sid, from, false)
        {
            return;
        }
        let Some(mut s) = self.sessions.map.remove(&sid) else {
            return;
        };
        self.stats.sessions_ended += 1;
        if let Some(f) = s.file.take().filter(|f| !f.complete) {
            // Interrupted: no half file is kept.
            self.store(
                OpPurpose::Background,
                cpm_store::StoreOp::DropMedia { id: f.media_id },
            );
        }
        if let Some(setup) = s.setup.take()
            && from != Some(Leg::Up)
        {
            let r = response_to(
                &setup.up_invite,
                StatusCode::REQUEST_TERMINATED,
                Some(&s.up_tag),
            );
            let _ = self.tx.respond_owned(now, &s.up_server, r);
        }
        if let Some(ck) = s.down_client.take() {
            self.clients.remove(&ck);
            self.tx.cancel(now, &ck);
        }
        for (leg, dialog) in [
            (Leg::Up, s.up_dialog.take()),
            (Leg::Down, s.down_dialog.take()),
        ] {
            if Some(leg) == from {
                continue;
            }
            if let Some(mut d) = dialog {
                let mut bye = d.request(Method::Bye, None);
                self.dress(&mut bye);
                let dest = self.core_peer();
                if let Ok(ck) = self.tx.send_request(now, bye, dest) {
                    self.clients.insert(ck, ClientPurpose::Notice);
                }
            }
        }
        self.sessions.dialogs.remove(&s.up_key);
        self.sessions.dialogs.remove(&s.down_key);
        for leg in [Leg::Up, Leg::Down] {
            let m = s.media_mut(leg);
            if let Some(id) = m.local.session_id() {
                self.sessions.msrp_ids.remove(id);
            }
            if let Some(conn) = m.conn.take() {
                self.sessions.conns.remove(&conn);
                self.outputs
                    .push_back(Output::Msrp(cpm_msrp::ConnCommand::Close { conn }));
            }
            // Messages relayed to the served user's client and not acknowledged stay in the
            // deferred queue; run it so they go out as deferred messages.
            let unacked: Vec<media::Relay> = m.relays.drain().map(|(_, r)| r).collect();
            for r in unacked {
                self.relay_failed(now, sid, r, StatusCode::REQUEST_TIMEOUT.as_u16());
            }
        }
        self.sessions.connects.retain(|_, v| v.0 != sid);
    }

    /// An in-dialog request for one of our sessions (the core routed it to our Contact), or
    /// an ACK. Returns `false` when no session has this dialog.
    pub(super) fn on_session_request(
        &mut self,
        now: Instant,
        key: Option<&ServerKey>,
        req: &Request,
    ) -> bool {
        let dialog = (call_id_of(req), tag_of(req.headers.to()));
        let Some(&(sid, leg)) = self.sessions.dialogs.get(&dialog) else {
            return false;
        };
        match req.method {
            Method::Ack => {
                if let Some(s) = self.sessions.map.get_mut(&sid)
                    && leg == Leg::Up
                {
                    s.up_ok = None;
                    s.last_activity = now;
                }
            }
            Method::Bye => {
                if let Some(key) = key {
                    let tag = self.tag();
                    let ok = response_to(req, StatusCode::OK, Some(&tag));
                    let _ = self.tx.respond_owned(now, key, ok);
                }
                self.end_session(now, sid, Some(leg));
            }
            _ => {
                if let Some(key) = key {
                    // Re-INVITE, UPDATE and the rest are not needed by CPM sessions (5.2.3).
                    self.refuse(now, key, req, Refusal::MethodNotAllowed);
                }
            }
        }
        true
    }

    /// CANCEL of an INVITE still being set up (RFC 3261 9.2): 200 to the CANCEL (sent by the
    /// caller), 487 to the INVITE, our own INVITE cancelled.
    pub(super) fn on_session_cancel(&mut self, now: Instant, invite: &ServerKey) -> bool {
        let Some(sid) = self
            .sessions
            .map
            .iter()
            .find(|(_, s)| &s.up_server == invite && s.setup.is_some())
            .map(|(id, _)| *id)
        else {
            return false;
        };
        self.end_session(now, sid, None);
        true
    }

    /// Session timers: 2xx retransmissions, MSRP transaction timeouts, the idle sweep.
    pub(super) fn session_timeouts(&mut self, now: Instant) {
        while let Some(&(at, sid)) = self.sessions.retransmits.first() {
            if at > now {
                break;
            }
            self.sessions.retransmits.pop_first();
            let t2 = self.cfg.timers.t2;
            let t1 = self.cfg.timers.t1;
            let Some(s) = self.sessions.map.get_mut(&sid) else {
                continue;
            };
            let (Some(ok), Some(since)) = (s.up_ok.clone(), s.up_ok_since) else {
                continue;
            };
            if now.saturating_duration_since(since) >= 64 * t1 {
                // No ACK (RFC 3261 13.3.1.4): the session ends.
                s.up_ok = None;
                self.end_session(now, sid, None);
                continue;
            }
            s.up_ok_interval = (s.up_ok_interval * 2).min(t2);
            let next = now + s.up_ok_interval;
            let key = s.up_server.clone();
            self.sessions.retransmits.insert((next, sid));
            let _ = self.tx.respond_owned(now, &key, ok);
        }
        while let Some(&(at, sid)) = self.sessions.msrp_deadlines.first() {
            if at > now {
                break;
            }
            self.sessions.msrp_deadlines.pop_first();
            self.msrp_transaction_timeouts(now, sid);
        }
        if let Some(at) = self.sessions.next_sweep
            && at <= now
        {
            let idle = self.cfg.session_idle;
            let stale: Vec<u64> = self
                .sessions
                .map
                .iter()
                .filter(|(_, s)| {
                    let linger = if s.draining {
                        idle.min(Duration::from_secs(30))
                    } else {
                        idle
                    };
                    now.saturating_duration_since(s.last_activity) >= linger
                })
                .map(|(id, _)| *id)
                .collect();
            for sid in stale {
                self.end_session(now, sid, None);
            }
            self.sessions.next_sweep =
                (!self.sessions.map.is_empty()).then(|| now + idle.min(Duration::from_secs(30)));
        }
    }

    /// Sessions open.
    pub fn sessions(&self) -> usize {
        self.sessions.map.len()
    }
}
