//! The Participating Function (PF) for pager mode: the per-user application server the SIP/IP
//! Core routes CPM requests through, once on the sender's side (`cpm=orig`) and once on each
//! recipient's side (`cpm=term`).
//!
//! It is a B2BUA for MESSAGE (RFC 3428): each leg is its own SIP transaction, and between the
//! legs the PF stores the message in the served user's conversation history. The flows
//! (PROTOCOL.md 2.1; outline sections Messaging, Deferred Messaging, Multiple Devices):
//!
//! - **Originating** (`Route: <pf;lr>, <core;lr;cpm=orig>`): check the asserted identity,
//!   keep or create `Conversation-ID`/`Contribution-ID`, store the message in the sender's
//!   history, then send it on to the core, which routes it to the recipient's PF. The final
//!   answer of the recipient's side (200, or 202 when deferred) goes back to the sender.
//!   A 1-N pager request (`Require: recipient-list-message`, RFC 5365) is exploded here: one
//!   stored record and one MESSAGE per recipient, `202 Accepted` to the sender once every
//!   record is stored, and failures reported with a failure IMDN.
//! - **Terminating** (`cpm=term`): send the message to the core without a CPM phase, so the
//!   core forks it to every registered device, then store it in the recipient's history with
//!   the outcome, in one write: `delivered` after a device's 2xx (answered 200), `pending`
//!   (the deferred queue) when there is no device (480), no answer (408), or no answer within
//!   [`PfConfig::delivery_timeout`] (answered `202 Accepted`). Either answer waits for that
//!   commit. A crash before it leaves the sender without a 2xx: it sends again and the
//!   device drops the duplicate by Message-ID, while the history keeps one record.
//! - **Deferred delivery**: a third-party REGISTER from the core (TS 24.229 5.4.1.7) says a
//!   user registered; the PF reads the user's queue and delivers it in order, one message at a
//!   time, with the `…oma.cpm.deferred` ICSI and the original sender and identifiers. Expired
//!   messages are marked failed and produce a failure IMDN when the sender asked for one.
//! - **IMDN** (RFC 5438): a notification travelling from recipient to sender updates the
//!   message's state in the recipient's history (originating side) and in the sender's
//!   history (terminating side) before it is passed on.
//!
//! **Durability** (SYSTEM.md rule 3): a 2xx to a MESSAGE is only sent from
//! `ParticipatingFunction::acknowledge`, which consumes the [`Receipt`] the store returned
//! for the message's record.
//!
//! **Layout**: this module holds the types, the driver contract (`handle_input`,
//! `handle_timeout`, `poll_output`, `poll_timeout`) and the transaction and store plumbing;
//! each flow has its own submodule: `pager` (1-1 originating and terminating), `list` (1-N,
//! RFC 5365), `deferred` (the deferred queue), `imdn` (notifications), with `jobs` (the job
//! lifecycle they share), `message` (what the PF reads from a request) and `error` (every
//! [`Refusal`] and its answer on the wire).

use core::net::SocketAddr;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use cpm_sip::cpm::Phase;
use cpm_sip::{
    Header, HeaderName, Message, Method, NameAddr, Request, Response, StatusCode, Uri,
    check_request,
};
use cpm_sip_core::rng::SplitMix64;
use cpm_sip_core::transaction::{
    ClientKey, RequestDisposition, ResponseDisposition, ServerKey, TimerConfig, TransactionLayer,
    TxEvent, response_to,
};
use cpm_sip_core::{Handoff, Outgoing, Peer, Transmit};
use cpm_store::{DeferredQuota, MessageRecord, OpError, OpId, Outcome, Receipt, StoreOp};
use foldhash::fast::FixedState;

mod deferred;
mod error;
mod imdn;
mod jobs;
mod list;
mod message;
mod pager;
mod session;

pub use error::Refusal;
pub use session::{
    FILE_RECORD_TYPE, ICSI_FILETRANSFER, ICSI_SESSION, PF_CONTACT_PARAM, msrp_session_shard,
};

/// Our Via branch prefix (RFC 3261 magic cookie, then a PF marker).
const BRANCH_PREFIX: &str = "z9hG4bK-pf-";
/// How many deferred messages one store read returns.
const DEFERRED_BATCH: usize = 64;
/// How many expired messages one expiry pass handles.
const EXPIRY_BATCH: usize = 256;
/// The methods the PF serves (the `Allow` header).
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, MESSAGE, OPTIONS, REGISTER";

/// How the PF is set up.
#[derive(Clone, Debug)]
pub struct PfConfig {
    /// The PF's own SIP address: its Via sent-by and the host of its Route entry.
    pub address: SocketAddr,
    /// The SIP/IP Core the PF sends its requests to: [`Peer::local`] when the PF is a
    /// function of the core's node (a lossless in-memory hop: no retransmissions, and
    /// transactions end at their final response), a UDP or TCP peer across a network.
    pub core: Peer,
    /// How long a terminating delivery waits for a device before the sender gets `202
    /// Accepted` (the message then stays in the deferred queue; a later 2xx still marks it
    /// delivered).
    pub delivery_timeout: Duration,
    /// How long an undelivered message stays in the deferred queue. `None`: forever.
    pub deferred_ttl: Option<Duration>,
    /// How often the deferred queue is checked for expired messages.
    pub expiry_interval: Duration,
    /// At most this many MESSAGE requests in progress at once; more are answered 503 with
    /// `Retry-After` (overload control instead of unbounded memory).
    pub max_in_progress: usize,
    /// Limits of each recipient's deferred queue, checked in the store transaction that
    /// queues a message; a message past them is refused (486, or 413 when it alone is
    /// larger than a queue). `None`: no limits.
    pub deferred_quota: Option<DeferredQuota>,
    /// RFC 3261 timers.
    pub timers: TimerConfig,
    /// Seed of the PF's tags, branches and Call-IDs (random in production, fixed in tests).
    pub rng_seed: u64,
    /// The largest pager-mode message content in octets (the body inside CPIM; OMA CPM
    /// 5.2.2: 1,300): a larger MESSAGE from a served user gets `413 Use Large Message Mode`.
    pub max_pager_message: usize,
    /// Whether this PF runs the expiry of deferred messages (`deferred_ttl`): one PF per
    /// store does, when a node runs one PF per shard.
    pub expire_deferred: bool,
    /// The address of the node's MSRP listener, written in the SDP of every session leg
    /// (the PF anchors the media). `None`: sessions are refused (488).
    pub msrp: Option<SocketAddr>,
    /// The largest message a session carries (all its chunks), in octets: the `a=max-size`
    /// the PF writes; a larger one is refused with MSRP 413.
    pub max_session_message: usize,
    /// A session with no SIP or MSRP traffic for this long is ended (BYE both ways).
    pub session_idle: Duration,
    /// At most this many sessions at once; more are refused with 503.
    pub max_sessions: usize,
    /// The largest file a transfer may announce, in octets; a larger offer is refused
    /// (488).
    pub max_file_size: u64,
    /// The shard this PF runs on (written into its MSRP session ids and dialog Contacts).
    pub shard: u16,
}

impl PfConfig {
    /// Defaults for a PF at `address` in front of the core at `core`.
    pub fn new(address: SocketAddr, core: Peer) -> Self {
        Self {
            address,
            core,
            delivery_timeout: Duration::from_secs(8),
            deferred_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
            expiry_interval: Duration::from_secs(10),
            max_in_progress: 100_000,
            deferred_quota: Some(DeferredQuota {
                max_messages: 1000,
                max_bytes: 16 * 1024 * 1024,
                max_per_sender: 100,
            }),
            timers: TimerConfig::default(),
            rng_seed: 0x5eed_0fcf,
            max_pager_message: 1300,
            expire_deferred: true,
            msrp: None,
            max_session_message: 4 * 1024 * 1024,
            session_idle: Duration::from_secs(30 * 60),
            max_sessions: 100_000,
            max_file_size: 1 << 30,
            shard: 0,
        }
    }
}

/// What the driver feeds the PF.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Built and consumed at once, never stored in bulk.
#[non_exhaustive]
pub enum Input {
    /// A SIP message from the core.
    Message {
        /// Where it came from.
        peer: Peer,
        /// The message.
        message: Message,
    },
    /// The outcome of an [`Output::Store`] operation.
    Stored {
        /// The operation.
        id: OpId,
        /// Its outcome.
        result: Result<Outcome, OpError>,
    },
    /// What the driver's MSRP transport reports (the connections of anchored sessions).
    Msrp(cpm_msrp::ConnEvent),
}

/// What the PF asks the driver to do.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Built and consumed at once, never stored in bulk.
pub enum Output {
    /// Send bytes.
    Transmit(Transmit),
    /// Hand a message to another function of the PF's node (the core, when the PF runs in
    /// the core's node).
    Handoff(Handoff),
    /// Run a store operation and answer with [`Input::Stored`].
    Store {
        /// Echo it in the answer.
        id: OpId,
        /// The operation.
        op: StoreOp,
    },
    /// Something for the driver's MSRP transport to do; its results come back as
    /// [`Input::Msrp`].
    Msrp(cpm_msrp::ConnCommand),
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct PfStats {
    /// Messages stored in a sender's history.
    pub messages_sent: u64,
    /// Messages stored in a recipient's history.
    pub messages_received: u64,
    /// Terminating messages a device accepted.
    pub delivered: u64,
    /// Terminating messages answered 202 (queued for deferred delivery).
    pub deferred: u64,
    /// Deferred messages delivered after a registration.
    pub deferred_delivered: u64,
    /// Deferred messages that expired.
    pub expired: u64,
    /// IMDNs passed through.
    pub imdns: u64,
    /// Duplicates recognised (already stored).
    pub duplicates: u64,
    /// Requests refused (4xx-6xx generated by the PF).
    pub rejected: u64,
    /// Store operations that failed.
    pub store_failures: u64,
    /// CPIM bodies whose `From` named someone else than the sender and was set to the
    /// sender's identity.
    pub cpim_from_corrected: u64,
    /// Messages refused because the recipient's deferred queue was full (count, bytes or
    /// the sender's share).
    pub deferred_refused: u64,
    /// Sessions set up (INVITEs accepted on a leg).
    pub sessions_started: u64,
    /// Sessions ended.
    pub sessions_ended: u64,
}

impl core::ops::AddAssign for PfStats {
    /// Adds another element's counters (the shards of one node, for `/metrics`).
    fn add_assign(&mut self, o: Self) {
        self.messages_sent += o.messages_sent;
        self.messages_received += o.messages_received;
        self.delivered += o.delivered;
        self.deferred += o.deferred;
        self.deferred_delivered += o.deferred_delivered;
        self.expired += o.expired;
        self.imdns += o.imdns;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
        self.store_failures += o.store_failures;
        self.cpim_from_corrected += o.cpim_from_corrected;
        self.deferred_refused += o.deferred_refused;
        self.sessions_started += o.sessions_started;
        self.sessions_ended += o.sessions_ended;
    }
}

/// One message request in progress (originating or terminating).
#[derive(Debug)]
struct Job {
    server: ServerKey,
    req: Request,
    kind: JobKind,
    /// The store receipts this job holds until it acknowledges.
    receipt: Option<Receipt>,
    /// Store operations still outstanding.
    waiting: usize,
    /// A store operation failed: answer 500, never 2xx.
    failed: bool,
    /// The store refused to queue the message (its deferred queue is full): this answer.
    refused: Option<Refusal>,
}

#[derive(Debug)]
enum JobKind {
    /// 1-1 pager from a served user: the request to send on once stored.
    Orig { out: Request },
    /// 1-N pager: one request per recipient.
    OrigList {
        outs: Vec<(String, Request)>,
        record: MessageRecord,
    },
    /// A message for a served user: delivered first, then stored with the outcome (one
    /// write), then acknowledged with that write's receipt.
    Term {
        owner: String,
        peer: String,
        message_id: String,
        /// The record to store once the devices answered (or the deadline passed).
        record: Option<Box<MessageRecord>>,
        deadline: Option<Instant>,
        /// The answer the sender gets once the record is stored: 200 (a device took it)
        /// or 202 (it waits in the deferred queue).
        answer: Option<StatusCode>,
        /// The owner's registration count when the delivery started: if it moved before
        /// the record was stored as pending, the queue is run again.
        epoch: u64,
        /// The devices refused CPIM (415) and the text was offered unwrapped.
        plain_retry: bool,
        /// The client transaction delivering it.
        leg: Option<ClientKey>,
    },
    /// A notification passing through: its state update, then sending on.
    Imdn { out: Request },
}

/// What a client transaction of ours is for.
#[derive(Debug)]
enum ClientPurpose {
    /// The onward leg of a job: its final answer goes back upstream.
    Job(u64),
    /// One recipient of a 1-N pager (the sender already has its 202).
    ListCopy { record: Box<MessageRecord> },
    /// The terminating leg after the sender got 202 on timeout.
    LateTerm {
        owner: String,
        peer: String,
        message_id: String,
    },
    /// One deferred delivery.
    Deferred { owner: String },
    /// A notification the PF generated itself, or a BYE (nothing to do with the answer).
    Notice,
    /// A session's INVITE on its down leg.
    Session(u64),
}

/// What a store operation of ours is for.
#[derive(Debug)]
enum OpPurpose {
    Job(u64),
    DeferredRead {
        owner: String,
    },
    Expiry,
    /// A state update whose outcome changes nothing here.
    Background,
    /// A session message's record or state.
    Session(Box<session::SessionStore>),
}

/// A user's deferred delivery in progress.
#[derive(Debug, Default)]
struct DeferredRun {
    queue: VecDeque<MessageRecord>,
    /// The delivery in flight.
    sending: Option<ClientKey>,
    /// A store read is outstanding.
    reading: bool,
    /// Another registration came while running: read the queue again at the end.
    again: bool,
    /// The last read was full: there may be more.
    more: bool,
}

type Map<K, V> = HashMap<K, V, FixedState>;

/// The Participating Function: see the module documentation.
#[derive(Debug)]
pub struct ParticipatingFunction {
    cfg: PfConfig,
    tx: TransactionLayer,
    start: Instant,
    start_unix_ms: u64,
    rng: SplitMix64,
    next_op: u64,
    next_job: u64,
    jobs: Map<u64, Job>,
    clients: Map<ClientKey, ClientPurpose>,
    ops: Map<OpId, OpPurpose>,
    runs: Map<String, DeferredRun>,
    /// Terminating deliveries in flight, by (owner, peer, message_id): a deferred run skips
    /// them.
    in_flight: HashSet<(String, String, String), FixedState>,
    /// Users whose deferred run skipped a message in flight: if that delivery fails, the
    /// queue is run again (the device that registered meanwhile should get it).
    rerun: HashSet<String, FixedState>,
    /// Third-party registrations seen per user (see `JobKind::Term::epoch`).
    reg_epoch: Map<String, u64>,
    /// Terminating jobs waiting for their delivery deadline, earliest first (lazy deletion).
    deadlines: VecDeque<(Instant, u64)>,
    next_expiry: Instant,
    expiry_running: bool,
    outputs: VecDeque<Output>,
    stats: PfStats,
    sessions: session::Sessions,
}

impl ParticipatingFunction {
    /// A PF with no state. `unix_ms` is the wall clock at `now` (for `DateTime` values and
    /// record times); later times are derived from `now` values.
    pub fn new(cfg: PfConfig, now: Instant, unix_ms: u64) -> Self {
        let seed = cfg.rng_seed;
        Self {
            tx: TransactionLayer::with_seed(cfg.timers, seed),
            start: now,
            start_unix_ms: unix_ms,
            rng: SplitMix64::new(seed),
            next_op: 1,
            next_job: 1,
            jobs: Map::with_hasher(FixedState::with_seed(seed)),
            clients: Map::with_hasher(FixedState::with_seed(seed)),
            ops: Map::with_hasher(FixedState::with_seed(seed)),
            runs: Map::with_hasher(FixedState::with_seed(seed)),
            in_flight: HashSet::with_hasher(FixedState::with_seed(seed)),
            rerun: HashSet::with_hasher(FixedState::with_seed(seed)),
            reg_epoch: Map::with_hasher(FixedState::with_seed(seed)),
            deadlines: VecDeque::new(),
            next_expiry: now + cfg.expiry_interval,
            expiry_running: false,
            outputs: VecDeque::new(),
            stats: PfStats::default(),
            sessions: session::Sessions::new(seed),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PfConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> PfStats {
        self.stats
    }

    /// Message requests in progress.
    pub fn in_progress(&self) -> usize {
        self.jobs.len()
    }

    /// Store operations outstanding.
    pub fn store_ops_outstanding(&self) -> usize {
        self.ops.len()
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Message {
                peer,
                message: Message::Request(req),
            } => self.on_request(now, req, peer),
            Input::Message {
                message: Message::Response(resp),
                ..
            } => self.on_response(now, resp),
            Input::Stored { id, result } => self.on_stored(now, id, result),
            Input::Msrp(ev) => self.on_msrp(now, ev),
        }
        self.drain_tx(now);
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.session_timeouts(now);
        while let Some(&(at, job)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            self.on_delivery_deadline(now, job, at);
        }
        if now >= self.next_expiry {
            self.next_expiry = now + self.cfg.expiry_interval;
            if self.cfg.deferred_ttl.is_some() && self.cfg.expire_deferred && !self.expiry_running {
                self.expiry_running = true;
                let now_ms = self.unix_ms(now);
                self.store(
                    OpPurpose::Expiry,
                    StoreOp::ExpireDeferred {
                        now_ms,
                        limit: EXPIRY_BATCH,
                    },
                );
            }
        }
        self.drain_tx(now);
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`ParticipatingFunction::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.next_expiry);
        for d in [
            self.tx.poll_timeout(),
            self.deadlines.front().map(|d| d.0),
            self.sessions.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        {
            t = Some(t.map_or(d, |x: Instant| x.min(d)));
        }
        t
    }

    // ----- transactions, store and outputs -----------------------------------------------

    /// Where requests to the core go.
    fn core_peer(&self) -> Peer {
        Peer {
            transport: self.cfg.core.transport,
            addr: self.cfg.core.addr,
            conn: None,
        }
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        self.start_unix_ms + now.saturating_duration_since(self.start).as_millis() as u64
    }

    fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn drain_tx(&mut self, now: Instant) {
        self.drain_sends();
        while let Some(ev) = self.tx.poll_event() {
            if let TxEvent::Timeout(ckey) = ev {
                // RFC 3261 16.8 / 8.1.3.1: a timed-out leg counts as 408.
                self.leg_final(now, &ckey, StatusCode::REQUEST_TIMEOUT, "Request Timeout");
            }
        }
        self.drain_sends();
    }

    /// What the transaction layer sends: bytes for the network, values for the node.
    fn drain_sends(&mut self) {
        while let Some(t) = self.tx.poll_transmit() {
            self.outputs.push_back(Output::Transmit(t));
        }
        while let Some(h) = self.tx.poll_handoff() {
            self.outputs.push_back(Output::Handoff(h));
        }
    }

    /// A message outside any transaction (a stateless answer).
    fn send_stateless(&mut self, peer: Peer, message: Message) {
        self.outputs.push_back(match Outgoing::new(peer, message) {
            Outgoing::Transmit(t) => Output::Transmit(t),
            Outgoing::Handoff(h) => Output::Handoff(h),
        });
    }

    fn store(&mut self, purpose: OpPurpose, op: StoreOp) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(id, purpose);
        self.outputs.push_back(Output::Store { id, op });
        id
    }

    fn send_leg(&mut self, now: Instant, out: Request, purpose: ClientPurpose) {
        let dest = self.core_peer();
        match self.tx.send_request(now, out, dest) {
            Ok(ckey) => {
                if let ClientPurpose::Job(j) = &purpose
                    && let Some(Job {
                        kind: JobKind::Term { leg, .. },
                        ..
                    }) = self.jobs.get_mut(j)
                {
                    *leg = Some(ckey.clone());
                }
                self.clients.insert(ckey, purpose);
            }
            Err(_) => {
                // Our own request always has a Via with a branch; treat a failure as 500.
                if let ClientPurpose::Job(job) = purpose
                    && let Some(j) = self.jobs.remove(&job)
                {
                    self.refuse(now, &j.server, &j.req, Refusal::CannotSend);
                }
            }
        }
    }

    fn tag(&mut self) -> String {
        format!("pf{:x}", self.random())
    }

    /// The only way a MESSAGE gets a 2xx: with the receipt of its stored record.
    fn acknowledge(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Request,
        status: StatusCode,
        receipt: Receipt,
    ) {
        debug_assert!(status.is_success());
        let tag = self.tag();
        let resp = response_to(req, status, Some(&tag));
        let _ = self.tx.respond_owned(now, key, resp);
        drop(receipt);
    }

    // ----- incoming messages --------------------------------------------------------------

    fn on_request(&mut self, now: Instant, mut req: Request, peer: Peer) {
        if let Err(e) = check_request(&req) {
            // Not a transaction we can key: answer statelessly when possible.
            let mut resp = response_to(&req, e.status, None);
            resp.reason = e.reason;
            self.send_stateless(peer, Message::Response(resp));
            return;
        }
        let key = match self.tx.handle_request(now, &req, peer) {
            Ok(RequestDisposition::New(key)) => key,
            // An ACK for a 2xx of ours (a new transaction of its own, RFC 3261 17.1.1.3).
            Ok(RequestDisposition::Stray) if req.method == Method::Ack => {
                self.on_session_request(now, None, &req);
                return;
            }
            _ => return,
        };
        match req.method {
            Method::Invite => {
                let in_dialog = req
                    .headers
                    .to()
                    .ok()
                    .flatten()
                    .is_some_and(|t| t.tag().is_some());
                if in_dialog {
                    if !self.on_session_request(now, Some(&key), &req) {
                        self.refuse(now, &key, &req, Refusal::NoSuchDialog);
                    }
                    return;
                }
                let phase = match self.pop_own_route(&mut req) {
                    Ok(phase) => phase,
                    Err(r) => return self.refuse(now, &key, &req, r),
                };
                match phase {
                    Some(phase) => {
                        self.stats.sessions_started += 1;
                        self.on_session_invite(now, key, req, phase);
                    }
                    None => self.refuse(now, &key, &req, Refusal::NotRoutedByCore),
                }
            }
            Method::Bye | Method::Update | Method::Info => {
                if !self.on_session_request(now, Some(&key), &req) {
                    self.refuse(now, &key, &req, Refusal::NoSuchDialog);
                }
            }
            Method::Cancel => {
                // RFC 3261 9.2: 200 to the CANCEL; the INVITE gets 487 if it was still open.
                let tag = self.tag();
                let ok = response_to(&req, StatusCode::OK, Some(&tag));
                let open = self
                    .tx
                    .invite_for_cancel(&key)
                    .is_some_and(|invite| self.on_session_cancel(now, &invite));
                if open {
                    let _ = self.tx.respond_owned(now, &key, ok);
                } else {
                    self.refuse(now, &key, &req, Refusal::NoSuchDialog);
                }
            }
            Method::Register => self.on_third_party_register(now, &key, &req),
            Method::Message => {
                let phase = match self.pop_own_route(&mut req) {
                    Ok(phase) => phase,
                    Err(r) => return self.refuse(now, &key, &req, r),
                };
                match phase {
                    Some(Phase::Orig) => self.on_orig(now, key, req),
                    Some(Phase::Term) => self.on_term(now, key, req),
                    None => self.refuse(now, &key, &req, Refusal::NotRoutedByCore),
                }
            }
            Method::Options => {
                let tag = self.tag();
                let mut resp = response_to(&req, StatusCode::OK, Some(&tag));
                resp.headers.push(Header::new(HeaderName::Allow, ALLOW));
                let _ = self.tx.respond_owned(now, &key, resp);
            }
            _ => self.refuse(now, &key, &req, Refusal::MethodNotAllowed),
        }
    }

    /// Pops the Route entries that name the PF and returns the phase the core asked for (the
    /// `cpm` parameter of the next Route, which names the core itself).
    fn pop_own_route(&self, req: &mut Request) -> Result<Option<Phase>, Refusal> {
        let routes = req.headers.route().map_err(|_| Refusal::BadRoute)?;
        let mut rest: Vec<NameAddr> = Vec::with_capacity(routes.len());
        let mut popped = false;
        for r in routes {
            // The Route carrying the phase is the core's own, even when the PF shares the
            // core's address (a function of its node).
            let ours = !popped
                && rest.is_empty()
                && matches!(&r.uri, Uri::Sip(u) if self.is_us(u) && Phase::of_uri(u).is_none());
            if ours {
                popped = true;
            } else {
                rest.push(r);
            }
        }
        req.headers.remove_all(&HeaderName::Route);
        for r in &rest {
            req.headers
                .push(Header::new(HeaderName::Route, &r.to_string()));
        }
        let phase = rest.first().and_then(|r| match &r.uri {
            Uri::Sip(u) => Phase::of_uri(u),
            _ => None,
        });
        Ok(phase)
    }

    fn is_us(&self, u: &cpm_sip::SipUri) -> bool {
        let host_matches = match &u.host {
            cpm_sip::Host::Ipv4(ip) => core::net::IpAddr::V4(*ip) == self.cfg.address.ip(),
            cpm_sip::Host::Ipv6(ip) => ip
                .parse::<core::net::Ipv6Addr>()
                .is_ok_and(|ip| core::net::IpAddr::V6(ip) == self.cfg.address.ip()),
            cpm_sip::Host::Domain(_) => false,
        };
        host_matches && u.port.unwrap_or(5060) == self.cfg.address.port()
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        match self.tx.handle_response(now, &resp) {
            ResponseDisposition::Pass(ckey)
                if let Some(&ClientPurpose::Session(sid)) = self.clients.get(&ckey) =>
            {
                if !resp.status.is_provisional() && !resp.status.is_success() {
                    self.clients.remove(&ckey);
                }
                self.on_session_response(now, sid, &resp);
            }
            ResponseDisposition::Pass(ckey) if !resp.status.is_provisional() => {
                let reason = resp.reason.clone();
                self.leg_final(now, &ckey, resp.status, &reason);
            }
            _ => {}
        }
    }
}
