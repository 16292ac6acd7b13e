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

use core::net::SocketAddr;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_content::{
    Cpim, CpimAddress, CpimBuilder, DeliveryStatus, DisplayStatus, Disposition, Imdn, Multipart,
    Notification, ResourceList, mime,
};
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
use cpm_store::{
    DeferredQuota, DeliveryState, Direction, MessageRecord, OpError, OpId, Outcome, QuotaExceeded,
    Receipt, StoreOp,
};
use foldhash::fast::FixedState;

use crate::ids::{ICSI_DEFERRED, ICSI_MSG, accept_contact, aor_of, derived_uuid, rfc3339};

/// Our Via branch prefix (RFC 3261 magic cookie, then a PF marker).
const BRANCH_PREFIX: &str = "z9hG4bK-pf-";
/// How many deferred messages one store read returns.
const DEFERRED_BATCH: usize = 64;
/// How many expired messages one expiry pass handles.
const EXPIRY_BATCH: usize = 256;

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
    refused: Option<(StatusCode, &'static str)>,
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
    /// A notification the PF generated itself (nothing to do with the answer).
    Notice,
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
        }
        self.drain_tx(now);
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        while let Some(&(at, job)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            self.on_delivery_deadline(now, job, at);
        }
        if now >= self.next_expiry {
            self.next_expiry = now + self.cfg.expiry_interval;
            if self.cfg.deferred_ttl.is_some() && !self.expiry_running {
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
        for d in [self.tx.poll_timeout(), self.deadlines.front().map(|d| d.0)]
            .into_iter()
            .flatten()
        {
            t = Some(t.map_or(d, |x: Instant| x.min(d)));
        }
        t
    }

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

    // ----- requests ---------------------------------------------------------------------

    fn on_request(&mut self, now: Instant, mut req: Request, peer: Peer) {
        if let Err(e) = check_request(&req) {
            // Not a transaction we can key: answer statelessly when possible.
            let mut resp = response_to(&req, e.status, None);
            resp.reason = e.reason;
            self.send_stateless(peer, Message::Response(resp));
            return;
        }
        let Ok(RequestDisposition::New(key)) = self.tx.handle_request(now, &req, peer) else {
            return;
        };
        match req.method {
            Method::Register => self.on_third_party_register(now, &key, &req),
            Method::Message => {
                let Ok(phase) = self.pop_own_route(&mut req) else {
                    return self.reject(now, &key, &req, StatusCode::BAD_REQUEST, "Bad Route");
                };
                match phase {
                    Some(Phase::Orig) => self.on_orig(now, key, req),
                    Some(Phase::Term) => self.on_term(now, key, req),
                    None => self.reject(
                        now,
                        &key,
                        &req,
                        StatusCode::FORBIDDEN,
                        "Not Routed By The SIP/IP Core",
                    ),
                }
            }
            Method::Options => {
                let tag = self.tag();
                let mut resp = response_to(&req, StatusCode::OK, Some(&tag));
                resp.headers
                    .push(Header::new(HeaderName::Allow, "MESSAGE, OPTIONS, REGISTER"));
                let _ = self.tx.respond(now, &key, &resp);
            }
            _ => {
                let tag = self.tag();
                let mut resp = response_to(&req, StatusCode::METHOD_NOT_ALLOWED, Some(&tag));
                resp.headers
                    .push(Header::new(HeaderName::Allow, "MESSAGE, OPTIONS, REGISTER"));
                self.stats.rejected += 1;
                let _ = self.tx.respond(now, &key, &resp);
            }
        }
    }

    /// Pops the Route entries that name the PF and returns the phase the core asked for (the
    /// `cpm` parameter of the next Route, which names the core itself).
    fn pop_own_route(&self, req: &mut Request) -> Result<Option<Phase>, ()> {
        let routes = req.headers.route().map_err(|_| ())?;
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

    fn tag(&mut self) -> String {
        format!("pf{:x}", self.random())
    }

    fn reject(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Request,
        status: StatusCode,
        reason: &str,
    ) {
        self.stats.rejected += 1;
        let tag = self.tag();
        let mut resp = response_to(req, status, Some(&tag));
        resp.reason = reason.to_owned();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers.push(Header::new(HeaderName::RetryAfter, "5"));
        }
        let _ = self.tx.respond(now, key, &resp);
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
        let _ = self.tx.respond(now, key, &resp);
        drop(receipt);
    }

    fn on_third_party_register(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        let aor = req.headers.to().ok().flatten().and_then(|t| aor_of(&t.uri));
        let expires = req.headers.expires().ok().flatten().unwrap_or(3600);
        let tag = self.tag();
        let Some(aor) = aor else {
            let mut resp = response_to(req, StatusCode::BAD_REQUEST, Some(&tag));
            resp.reason = "To Must Be A SIP AOR".to_owned();
            let _ = self.tx.respond(now, key, &resp);
            return;
        };
        let resp = response_to(req, StatusCode::OK, Some(&tag));
        let _ = self.tx.respond(now, key, &resp);
        if expires > 0 {
            *self.reg_epoch.entry(aor.clone()).or_insert(0) += 1;
            self.start_deferred_run(aor);
        }
    }

    // ----- originating ------------------------------------------------------------------

    fn on_orig(&mut self, now: Instant, key: ServerKey, req: Request) {
        if self.jobs.len() >= self.cfg.max_in_progress {
            return self.reject(
                now,
                &key,
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                "Overloaded",
            );
        }
        // The core asserted the served user (RFC 3325); without it the request did not come
        // through authentication.
        let Some(sender_uri) = asserted_identity(&req) else {
            return self.reject(
                now,
                &key,
                &req,
                StatusCode::FORBIDDEN,
                "No Asserted Identity",
            );
        };
        let Some(sender) = aor_of(&sender_uri) else {
            return self.reject(
                now,
                &key,
                &req,
                StatusCode::FORBIDDEN,
                "No Asserted Identity",
            );
        };
        let req = match self.vouch_cpim_from(req, &sender_uri) {
            Ok(r) => r,
            Err(req) => return self.refuse_unvouchable(now, &key, &req),
        };
        let list = req
            .headers
            .require()
            .unwrap_or_default()
            .iter()
            .any(|t| t.eq_ignore_ascii_case("recipient-list-message"));
        let unix = self.unix_ms(now);
        let ids = ConversationIds::of(&req);
        if list {
            return self.on_orig_list(now, key, req, &sender, &sender_uri, &ids, unix);
        }
        let body = match MessageBody::parse(&req) {
            Ok(b) => b,
            Err((status, reason)) => return self.reject(now, &key, &req, status, reason),
        };
        let Some(recipient) = aor_of(&req.uri) else {
            return self.reject(
                now,
                &key,
                &req,
                StatusCode::NOT_FOUND,
                "Recipient Is Not A SIP AOR",
            );
        };
        let out = self.onward(&req, &ids, req.uri.clone(), None);
        if let Some(imdn) = body.imdn {
            // The recipient's own notification on its way back to the sender: its record of
            // the message (direction received) takes the state.
            return self.imdn_job(
                now,
                key,
                req,
                out,
                &sender,
                &recipient,
                Direction::Received,
                &imdn,
            );
        }
        let record = MessageRecord {
            owner: sender.clone(),
            direction: Direction::Sent,
            peer: recipient,
            conversation_id: ids.conversation.clone(),
            contribution_id: ids.contribution.clone(),
            in_reply_to: ids.in_reply_to.clone(),
            message_id: body.message_id(&req),
            sender: sender_uri.to_string(),
            recipient: req.uri.to_string(),
            content_type: body.content_type.clone(),
            body: req.body.to_vec(),
            disposition: body.disposition.clone(),
            created_at_ms: unix,
            expires_at_ms: None,
            state: DeliveryState::Pending,
            state_at_ms: unix,
        };
        self.stats.messages_sent += 1;
        let job = self.new_job(key, req, JobKind::Orig { out }, 1);
        self.store(OpPurpose::Job(job), StoreOp::AppendMessage(record));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_orig_list(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        sender: &str,
        sender_uri: &Uri,
        ids: &ConversationIds,
        unix: u64,
    ) {
        let ct = req
            .headers
            .get(&HeaderName::ContentType)
            .and_then(|h| h.value().ok().map(|v| v.into_owned()))
            .unwrap_or_default();
        let multipart = match Multipart::parse_with_content_type(&ct, req.body.clone()) {
            Ok(m) => m,
            Err(e) => {
                return self.reject(now, &key, &req, status_of(e.status()), e.reason_phrase());
            }
        };
        let mut list = None;
        let mut message = None;
        for part in &multipart.parts {
            let pct = part
                .content_type()
                .map(mime::media_type)
                .unwrap_or_default();
            if pct == mime::APPLICATION_RESOURCE_LISTS_XML && list.is_none() {
                list = Some(ResourceList::parse(&part.body));
            } else if message.is_none() && pct != mime::APPLICATION_RESOURCE_LISTS_XML {
                message = Some(part.clone());
            }
        }
        let (Some(list), Some(message)) = (list, message) else {
            return self.reject(
                now,
                &key,
                &req,
                StatusCode::BAD_REQUEST,
                "Recipient List And Message Required",
            );
        };
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                return self.reject(now, &key, &req, status_of(e.status()), e.reason_phrase());
            }
        };
        let message_ct = message.content_type().unwrap_or("text/plain").to_owned();
        let mut single = req.clone();
        single.body = message.body;
        single.headers.set(HeaderName::ContentType, &message_ct);
        let Ok(single) = self.vouch_cpim_from(single, sender_uri) else {
            return self.refuse_unvouchable(now, &key, &req);
        };
        let body = match MessageBody::parse(&single) {
            Ok(b) => b,
            Err((status, reason)) => return self.reject(now, &key, &req, status, reason),
        };
        let mut recipients: Vec<(String, Uri)> = Vec::new();
        for e in &list.entries {
            let Ok(uri) = Uri::parse(&e.uri) else {
                return self.reject(
                    now,
                    &key,
                    &req,
                    StatusCode::BAD_REQUEST,
                    "Bad Recipient URI",
                );
            };
            let Some(aor) = aor_of(&uri) else {
                return self.reject(
                    now,
                    &key,
                    &req,
                    StatusCode::BAD_REQUEST,
                    "Bad Recipient URI",
                );
            };
            if !recipients.iter().any(|(a, _)| *a == aor) {
                recipients.push((aor, uri));
            }
        }
        if recipients.is_empty() {
            return self.reject(
                now,
                &key,
                &req,
                StatusCode::BAD_REQUEST,
                "Empty Recipient List",
            );
        }
        if self.jobs.len() >= self.cfg.max_in_progress {
            return self.reject(
                now,
                &key,
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                "Overloaded",
            );
        }
        let message_id = body.message_id(&req);
        let mut outs = Vec::with_capacity(recipients.len());
        let mut records = Vec::with_capacity(recipients.len());
        for (aor, uri) in recipients {
            // One Conversation-ID for the set, one Contribution-ID per exploded message.
            let copy_ids = ConversationIds {
                conversation: ids.conversation.clone(),
                contribution: derived_uuid(&[&ids.contribution, &aor]),
                in_reply_to: ids.in_reply_to.clone(),
            };
            let mut out = self.onward(&single, &copy_ids, uri.clone(), Some(&aor));
            out.headers.remove_all(&HeaderName::Require);
            out.headers.set(HeaderName::PAssertedService, ICSI_MSG);
            out.headers
                .set(HeaderName::AcceptContact, &accept_contact(ICSI_MSG));
            outs.push((aor.clone(), out));
            records.push(MessageRecord {
                owner: sender.to_owned(),
                direction: Direction::Sent,
                peer: aor,
                conversation_id: copy_ids.conversation,
                contribution_id: copy_ids.contribution,
                in_reply_to: copy_ids.in_reply_to,
                message_id: message_id.clone(),
                sender: sender_uri.to_string(),
                recipient: uri.to_string(),
                content_type: body.content_type.clone(),
                body: single.body.to_vec(),
                disposition: body.disposition.clone(),
                created_at_ms: unix,
                expires_at_ms: None,
                state: DeliveryState::Pending,
                state_at_ms: unix,
            });
        }
        self.stats.messages_sent += records.len() as u64;
        let template = records[0].clone();
        let job = self.new_job(
            key,
            req,
            JobKind::OrigList {
                outs,
                record: template,
            },
            records.len(),
        );
        for r in records {
            self.store(OpPurpose::Job(job), StoreOp::AppendMessage(r));
        }
    }

    /// The onward request of the B2BUA: the incoming request with our Via only, a new
    /// Call-ID, From tag and CSeq, the CPM identifiers set, credentials removed.
    fn onward(
        &mut self,
        req: &Request,
        ids: &ConversationIds,
        ruri: Uri,
        to_aor: Option<&str>,
    ) -> Request {
        let mut out = req.clone();
        out.uri = ruri;
        let h = &mut out.headers;
        h.remove_all(&HeaderName::Via);
        h.remove_all(&HeaderName::Authorization);
        h.remove_all(&HeaderName::ProxyAuthorization);
        h.remove_all(&HeaderName::PPreferredIdentity);
        h.remove_all(&HeaderName::PPreferredService);
        h.remove_all(&HeaderName::RecordRoute);
        h.remove_all(&HeaderName::Contact);
        let call_id = req
            .headers
            .call_id()
            .ok()
            .flatten()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let branch = format!("{BRANCH_PREFIX}{:016x}", self.random());
        h.push_front(Header::new(
            HeaderName::Via,
            &format!(
                "SIP/2.0/{} {};branch={branch}",
                self.cfg.core.transport.as_via_token(),
                self.cfg.address
            ),
        ));
        let from_uri = req.headers.from().ok().flatten().map_or_else(
            || "<sip:anonymous@anonymous.invalid>".to_owned(),
            |f| format!("<{}>", f.uri),
        );
        let tag = self.tag();
        h.set(HeaderName::From, &format!("{from_uri};tag={tag}"));
        if let Some(aor) = to_aor {
            h.set(HeaderName::To, &format!("<sip:{aor}>"));
        }
        // Derived, so that a retransmission after a restart produces the same onward leg.
        let leg = derived_uuid(&[&call_id, "pf-leg", &out.uri.to_string()]);
        h.set(
            HeaderName::CallId,
            &format!("{leg}@{}", self.cfg.address.ip()),
        );
        h.set(HeaderName::CSeq, "1 MESSAGE");
        let mf = req
            .headers
            .max_forwards()
            .ok()
            .flatten()
            .map_or(70, |m| m.saturating_sub(1));
        h.set(HeaderName::MaxForwards, &mf.to_string());
        h.set(HeaderName::ConversationId, &ids.conversation);
        h.set(HeaderName::ContributionId, &ids.contribution);
        h.set(HeaderName::ContentLength, &out.body.len().to_string());
        out
    }

    /// The CPIM `From` a recipient sees and both histories keep is the identity the network
    /// vouches for (the asserted identity; on the terminating side, for a sender from
    /// another domain, its From): a body naming someone else gets `From: <identity>`. A
    /// display name is kept only when the URI already was the identity, since a forged
    /// display name is how look-alikes work. A body that is not valid CPIM is left for
    /// [`MessageBody::parse`] to refuse. A body that still does not name exactly the
    /// identity once corrected (a `From` in another namespace, the default namespace bound
    /// elsewhere by `NS`) is given back as `Err`: it cannot be made to tell the truth.
    fn vouch_cpim_from(
        &mut self,
        mut req: Request,
        identity: &Uri,
    ) -> Result<Request, Box<Request>> {
        let ct = req
            .headers
            .get(&HeaderName::ContentType)
            .and_then(|h| h.value().ok().map(|v| v.into_owned()))
            .unwrap_or_default();
        if mime::media_type(&ct) != mime::MESSAGE_CPIM {
            return Ok(req);
        }
        let Ok(mut cpim) = Cpim::parse(req.body.clone()) else {
            return Ok(req);
        };
        let Some(want) = aor_of(identity) else {
            return Ok(req);
        };
        if names_only(&cpim, &want) {
            return Ok(req);
        }
        cpim.set_from(&CpimAddress::new(identity.to_string()));
        let body = cpim.to_bytes();
        // Read back as a recipient will: one From, the identity's.
        if !Cpim::parse(body.clone()).is_ok_and(|c| names_only(&c, &want)) {
            return Err(Box::new(req));
        }
        req.body = body;
        req.headers
            .set(HeaderName::ContentLength, &req.body.len().to_string());
        self.stats.cpim_from_corrected += 1;
        Ok(req)
    }

    /// 403 for a CPIM body whose sender cannot be set (see [`Self::vouch_cpim_from`]).
    fn refuse_unvouchable(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        self.reject(
            now,
            key,
            req,
            StatusCode::FORBIDDEN,
            "CPIM From Is Not The Sender",
        );
    }

    fn new_job(&mut self, server: ServerKey, req: Request, kind: JobKind, waiting: usize) -> u64 {
        let id = self.next_job;
        self.next_job += 1;
        self.jobs.insert(
            id,
            Job {
                server,
                req,
                kind,
                receipt: None,
                waiting,
                failed: false,
                refused: None,
            },
        );
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn imdn_job(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        out: Request,
        owner: &str,
        peer: &str,
        direction: Direction,
        imdn: &Imdn,
    ) {
        let _ = now;
        self.stats.imdns += 1;
        let state = match imdn.notification {
            Notification::Delivery(DeliveryStatus::Delivered) => Some(DeliveryState::Delivered),
            Notification::Display(DisplayStatus::Displayed) => Some(DeliveryState::Displayed),
            Notification::Delivery(
                DeliveryStatus::Failed | DeliveryStatus::Forbidden | DeliveryStatus::Error,
            ) => Some(DeliveryState::Failed),
            _ => None,
        };
        let job = self.new_job(key, req, JobKind::Imdn { out }, 1);
        let at_ms = self.unix_ms(now);
        match state {
            Some(state) => {
                self.store(
                    OpPurpose::Job(job),
                    StoreOp::UpdateState {
                        owner: owner.to_owned(),
                        peer: Some(peer.to_owned()),
                        direction: Some(direction),
                        message_id: imdn.message_id.clone(),
                        state,
                        at_ms,
                    },
                );
            }
            None => {
                // Nothing to record (a processing notification): pass it on at once.
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.waiting = 0;
                }
                self.job_stored(now, job);
            }
        }
    }

    // ----- terminating ------------------------------------------------------------------

    fn on_term(&mut self, now: Instant, key: ServerKey, req: Request) {
        if self.jobs.len() >= self.cfg.max_in_progress {
            return self.reject(
                now,
                &key,
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                "Overloaded",
            );
        }
        let Some(owner) = aor_of(&req.uri) else {
            return self.reject(now, &key, &req, StatusCode::NOT_FOUND, "Not A SIP AOR");
        };
        let sender_uri =
            asserted_identity(&req).or_else(|| req.headers.from().ok().flatten().map(|f| f.uri));
        let Some(sender_uri) = sender_uri else {
            return self.reject(now, &key, &req, StatusCode::BAD_REQUEST, "No Sender");
        };
        let sender = aor_of(&sender_uri).unwrap_or_else(|| sender_uri.to_string());
        let req = match self.vouch_cpim_from(req, &sender_uri) {
            Ok(r) => r,
            Err(req) => return self.refuse_unvouchable(now, &key, &req),
        };
        let body = match MessageBody::parse(&req) {
            Ok(b) => b,
            Err((status, reason)) => return self.reject(now, &key, &req, status, reason),
        };
        let ids = ConversationIds::of(&req);
        // To the core with no CPM phase: the core forks it to the owner's devices.
        let mut out = self.onward(&req, &ids, req.uri.clone(), None);
        out.headers.remove_all(&HeaderName::Route);
        if let Some(imdn) = body.imdn {
            // A notification for a served user about a message it sent.
            return self.imdn_job(now, key, req, out, &owner, &sender, Direction::Sent, &imdn);
        }
        let unix = self.unix_ms(now);
        let message_id = body.message_id(&req);
        let record = MessageRecord {
            owner: owner.clone(),
            direction: Direction::Received,
            peer: sender.clone(),
            conversation_id: ids.conversation.clone(),
            contribution_id: ids.contribution.clone(),
            in_reply_to: ids.in_reply_to.clone(),
            message_id: message_id.clone(),
            sender: sender_uri.to_string(),
            recipient: req.uri.to_string(),
            content_type: body.content_type.clone(),
            body: req.body.to_vec(),
            disposition: body.disposition.clone(),
            created_at_ms: unix,
            expires_at_ms: self.cfg.deferred_ttl.map(|t| unix + t.as_millis() as u64),
            state: DeliveryState::Pending,
            state_at_ms: unix,
        };
        self.stats.messages_received += 1;
        // Deliver first, store once with the outcome: the sender's 2xx still waits for that
        // commit (rule 3), and the message costs one write instead of append + update. A
        // crash before the commit leaves the sender without a 2xx: it sends again, and the
        // device drops the duplicate by Message-ID.
        let at = now + self.cfg.delivery_timeout;
        let epoch = self.reg_epoch.get(&owner).copied().unwrap_or(0);
        self.in_flight
            .insert((owner.clone(), sender.clone(), message_id.clone()));
        let job = self.new_job(
            key,
            req,
            JobKind::Term {
                owner,
                peer: sender,
                message_id,
                record: Some(Box::new(record)),
                deadline: Some(at),
                answer: None,
                epoch,
                plain_retry: false,
                leg: None,
            },
            0,
        );
        self.deadlines.push_back((at, job));
        self.send_leg(now, out, ClientPurpose::Job(job));
    }

    /// Stores a terminating job's record with the outcome the devices gave, then answers
    /// `answer` (from `job_stored`).
    fn store_term(&mut self, now: Instant, job_id: u64, state: DeliveryState, answer: StatusCode) {
        let unix = self.unix_ms(now);
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let JobKind::Term {
            record, answer: a, ..
        } = &mut job.kind
        else {
            return;
        };
        let Some(mut record) = record.take() else {
            return;
        };
        record.state = state;
        record.state_at_ms = unix;
        *a = Some(answer);
        job.waiting = 1;
        let op = match self.cfg.deferred_quota {
            // Queued for later: the queue's limits are checked where the record is written.
            Some(quota) if state == DeliveryState::Pending => StoreOp::AppendDeferred {
                record: *record,
                quota,
            },
            _ => StoreOp::AppendMessage(*record),
        };
        self.store(OpPurpose::Job(job_id), op);
    }

    fn on_delivery_deadline(&mut self, now: Instant, job_id: u64, at: Instant) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let JobKind::Term {
            deadline, record, ..
        } = &job.kind
        else {
            return;
        };
        // Not due, or the devices answered and the record is being stored already.
        if *deadline != Some(at) || record.is_none() {
            return;
        }
        // No device accepted in time: the message is stored as pending (the deferred queue),
        // the sender gets 202 after that commit, and the delivery goes on in the background.
        self.stats.deferred += 1;
        self.store_term(now, job_id, DeliveryState::Pending, StatusCode::ACCEPTED);
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if let JobKind::Term {
            owner,
            peer,
            message_id,
            leg: Some(leg),
            ..
        } = &job.kind
            && let Some(purpose) = self.clients.get_mut(leg)
        {
            *purpose = ClientPurpose::LateTerm {
                owner: owner.clone(),
                peer: peer.clone(),
                message_id: message_id.clone(),
            };
        }
    }

    // ----- store outcomes ---------------------------------------------------------------

    fn on_stored(&mut self, now: Instant, id: OpId, result: Result<Outcome, OpError>) {
        let Some(purpose) = self.ops.remove(&id) else {
            return;
        };
        if result.is_err() {
            self.stats.store_failures += 1;
        }
        match purpose {
            OpPurpose::Job(job_id) => {
                let Some(job) = self.jobs.get_mut(&job_id) else {
                    return;
                };
                job.waiting = job.waiting.saturating_sub(1);
                match result {
                    Ok(Outcome::Appended {
                        receipt,
                        duplicate,
                        state,
                    }) => {
                        if duplicate {
                            self.stats.duplicates += 1;
                        }
                        if let JobKind::Term { answer, .. } = &mut job.kind
                            && duplicate
                            && state >= DeliveryState::Delivered
                        {
                            // Stored and delivered before (a resend after a crash): it was
                            // delivered, whatever the devices said this time.
                            *answer = Some(StatusCode::OK);
                        }
                        // Keep one receipt (all of a 1-N job's records commit in order; the
                        // last one proves the whole batch).
                        job.receipt = Some(receipt);
                    }
                    Ok(Outcome::Updated { receipt, .. }) => job.receipt = Some(receipt),
                    Err(OpError::QuotaExceeded(q)) => job.refused = Some(quota_answer(q)),
                    Ok(_) | Err(_) => job.failed = true,
                }
                if job.waiting == 0 {
                    self.job_stored(now, job_id);
                }
            }
            OpPurpose::DeferredRead { owner } => {
                let records = match result {
                    Ok(Outcome::Messages(r)) => r,
                    _ => Vec::new(),
                };
                self.on_deferred_read(now, owner, records);
            }
            OpPurpose::Expiry => {
                self.expiry_running = false;
                if let Ok(Outcome::Expired { receipt, records }) = result {
                    let full = records.len() >= EXPIRY_BATCH;
                    drop(receipt);
                    for r in records {
                        self.stats.expired += 1;
                        self.on_expired(now, &r);
                    }
                    if full {
                        // More may be due: check again at once.
                        self.next_expiry = now;
                    }
                }
            }
            OpPurpose::Background => {}
        }
    }

    /// Every store operation of a job is done.
    fn job_stored(&mut self, now: Instant, job_id: u64) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if let Some((status, reason)) = job.refused.filter(|_| !job.failed) {
            // Nothing was written: the sender is told the queue is full, and may try later.
            self.stats.deferred_refused += 1;
            if let Some(job) = self.jobs.remove(&job_id) {
                self.reject(now, &job.server, &job.req, status, reason);
            }
            return;
        }
        if job.failed || (job.receipt.is_none() && !matches!(job.kind, JobKind::Imdn { .. })) {
            let job = self.jobs.remove(&job_id);
            if let Some(job) = job {
                self.reject(
                    now,
                    &job.server,
                    &job.req,
                    StatusCode::SERVER_INTERNAL_ERROR,
                    "Storage Failure",
                );
            }
            return;
        }
        match &mut job.kind {
            JobKind::Orig { out } | JobKind::Imdn { out } => {
                let out = out.clone();
                self.send_leg(now, out, ClientPurpose::Job(job_id));
            }
            JobKind::OrigList { outs, .. } => {
                let outs = std::mem::take(outs);
                let Some(job) = self.jobs.remove(&job_id) else {
                    return;
                };
                let JobKind::OrigList { record, .. } = job.kind else {
                    return;
                };
                if let Some(receipt) = job.receipt {
                    // RFC 5365: the list server accepts the request; the outcome per
                    // recipient comes later (here as failure IMDNs).
                    self.acknowledge(now, &job.server, &job.req, StatusCode::ACCEPTED, receipt);
                }
                for (aor, out) in outs {
                    let mut rec = record.clone();
                    rec.peer = aor;
                    rec.recipient = out.uri.to_string();
                    self.send_leg(
                        now,
                        out,
                        ClientPurpose::ListCopy {
                            record: Box::new(rec),
                        },
                    );
                }
            }
            JobKind::Term { .. } => {
                let Some(job) = self.jobs.remove(&job_id) else {
                    return;
                };
                let JobKind::Term {
                    owner,
                    answer,
                    epoch,
                    ..
                } = job.kind
                else {
                    return;
                };
                let answer = answer.unwrap_or(StatusCode::ACCEPTED);
                if let Some(receipt) = job.receipt {
                    self.acknowledge(now, &job.server, &job.req, answer, receipt);
                }
                // Stored as pending while the user registered: that registration's queue run
                // could not see it, so run the queue again.
                if answer == StatusCode::ACCEPTED
                    && self.reg_epoch.get(&owner).copied().unwrap_or(0) != epoch
                {
                    self.start_deferred_run(owner);
                }
            }
        }
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
                    self.reject(
                        now,
                        &j.server,
                        &j.req,
                        StatusCode::SERVER_INTERNAL_ERROR,
                        "Cannot Send",
                    );
                }
            }
        }
    }

    // ----- responses --------------------------------------------------------------------

    fn on_response(&mut self, now: Instant, resp: Response) {
        match self.tx.handle_response(now, &resp) {
            ResponseDisposition::Pass(ckey) if !resp.status.is_provisional() => {
                let reason = resp.reason.clone();
                self.leg_final(now, &ckey, resp.status, &reason);
            }
            _ => {}
        }
    }

    /// A leg of ours got its final answer (or timed out, as 408).
    fn leg_final(&mut self, now: Instant, ckey: &ClientKey, status: StatusCode, reason: &str) {
        let Some(purpose) = self.clients.remove(ckey) else {
            return;
        };
        let unix = self.unix_ms(now);
        match purpose {
            ClientPurpose::Job(job_id) => self.job_final(now, job_id, status, reason),
            ClientPurpose::ListCopy { record } => {
                if !status.is_success() {
                    self.sender_failed(now, &record, unix);
                }
            }
            ClientPurpose::LateTerm {
                owner,
                peer,
                message_id,
            } => {
                self.in_flight
                    .remove(&(owner.clone(), peer.clone(), message_id.clone()));
                if status.is_success() {
                    self.stats.delivered += 1;
                    self.mark(
                        &owner,
                        &peer,
                        Direction::Received,
                        &message_id,
                        DeliveryState::Delivered,
                        unix,
                    );
                } else if self.rerun.remove(&owner) {
                    self.start_deferred_run(owner);
                }
            }
            ClientPurpose::Deferred { owner } => {
                let Some(run) = self.runs.get_mut(&owner) else {
                    return;
                };
                run.sending = None;
                let Some(record) = run.queue.pop_front() else {
                    return;
                };
                if status.is_success() {
                    self.stats.deferred_delivered += 1;
                    self.mark(
                        &record.owner,
                        &record.peer,
                        Direction::Received,
                        &record.message_id,
                        DeliveryState::Delivered,
                        unix,
                    );
                    self.deferred_next(now, owner);
                } else {
                    // The device went away again: the rest waits for the next registration.
                    self.runs.remove(&owner);
                }
            }
            ClientPurpose::Notice => {}
        }
    }

    fn job_final(&mut self, now: Instant, job_id: u64, status: StatusCode, reason: &str) {
        let Some(mut job) = self.jobs.remove(&job_id) else {
            return;
        };
        // Interworking with a device that is not a CPM client (e.g. a plain RFC 3428 UA): it
        // refused CPIM with 415, so the text inside is offered once more, unwrapped.
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE
            && let JobKind::Term { plain_retry, .. } = &mut job.kind
            && !*plain_retry
            && let Some(out) = self.unwrapped_leg(&job.req)
        {
            *plain_retry = true;
            self.jobs.insert(job_id, job);
            self.send_leg(now, out, ClientPurpose::Job(job_id));
            return;
        }
        let unix = self.unix_ms(now);
        match job.kind {
            JobKind::Orig { ref out } => {
                if status.is_success() {
                    if let Some(receipt) = job.receipt.take() {
                        self.acknowledge(now, &job.server, &job.req, status, receipt);
                    }
                } else {
                    // The recipient's side refused it: the sender's record says so. (A
                    // timeout or server error says nothing final: the other side may have
                    // stored it, and its notifications may still come.)
                    let final_refusal =
                        status != StatusCode::REQUEST_TIMEOUT && status.class() != 5;
                    if final_refusal
                        && let (Some(owner), Some(peer)) = (
                            asserted_identity(&job.req).as_ref().and_then(aor_of),
                            aor_of(&out.uri),
                        )
                    {
                        let mid = MessageBody::parse(&job.req)
                            .map(|b| b.message_id(&job.req))
                            .unwrap_or_default();
                        self.mark(
                            &owner,
                            &peer,
                            Direction::Sent,
                            &mid,
                            DeliveryState::Failed,
                            unix,
                        );
                    }
                    self.relay_failure(now, &job, status, reason);
                }
            }
            JobKind::Imdn { .. } => {
                if status.is_success() {
                    if let Some(receipt) = job.receipt.take() {
                        self.acknowledge(now, &job.server, &job.req, status, receipt);
                    } else {
                        // Nothing was stored for it (a processing notification): its 2xx
                        // acknowledges no message of ours.
                        let tag = self.tag();
                        let resp = response_to(&job.req, status, Some(&tag));
                        let _ = self.tx.respond(now, &job.server, &resp);
                    }
                } else if let Some(receipt) = job.receipt.take() {
                    // The state is recorded in the history even if no device took the
                    // notification now.
                    self.acknowledge(now, &job.server, &job.req, StatusCode::ACCEPTED, receipt);
                } else {
                    self.relay_failure(now, &job, status, reason);
                }
            }
            JobKind::Term {
                ref owner,
                ref peer,
                ref message_id,
                ..
            } => {
                self.in_flight
                    .remove(&(owner.clone(), peer.clone(), message_id.clone()));
                if is_permanent_failure(status) {
                    // The user does not exist or refuses: nothing to keep.
                    return self.relay_failure(now, &job, status, reason);
                }
                let (state, answer) = if status.is_success() {
                    self.stats.delivered += 1;
                    (DeliveryState::Delivered, StatusCode::OK)
                } else {
                    // No device now (480), none answered (408), or a device error: the
                    // message waits in the deferred queue.
                    self.stats.deferred += 1;
                    (DeliveryState::Pending, StatusCode::ACCEPTED)
                };
                self.jobs.insert(job_id, job);
                self.store_term(now, job_id, state, answer);
            }
            JobKind::OrigList { .. } => {}
        }
    }

    /// The terminating leg of `req` with its CPIM body replaced by the text inside it
    /// (`None` unless the body is CPIM wrapping `text/*`).
    fn unwrapped_leg(&mut self, req: &Request) -> Option<Request> {
        let ct = req.headers.get(&HeaderName::ContentType)?.value().ok()?;
        if mime::media_type(&ct) != mime::MESSAGE_CPIM {
            return None;
        }
        let cpim = Cpim::parse(req.body.clone()).ok()?;
        let inner = cpim.content_type().unwrap_or("text/plain").to_owned();
        if !mime::media_type(&inner).starts_with("text/") {
            return None;
        }
        let ids = ConversationIds::of(req);
        let mut out = self.onward(req, &ids, req.uri.clone(), None);
        out.headers.remove_all(&HeaderName::Route);
        out.headers.set(HeaderName::CSeq, "2 MESSAGE");
        out.headers.set(HeaderName::ContentType, &inner);
        out.headers
            .set(HeaderName::ContentLength, &cpim.body.len().to_string());
        out.body = cpim.body;
        Some(out)
    }

    fn relay_failure(&mut self, now: Instant, job: &Job, status: StatusCode, reason: &str) {
        // RFC 3261 16.7 step 6 spirit: 503 from downstream is not passed on as 503.
        let status = if status == StatusCode::SERVICE_UNAVAILABLE {
            StatusCode::SERVER_INTERNAL_ERROR
        } else {
            status
        };
        self.reject(now, &job.server, &job.req, status, reason);
    }

    fn mark(
        &mut self,
        owner: &str,
        peer: &str,
        direction: Direction,
        message_id: &str,
        state: DeliveryState,
        at_ms: u64,
    ) {
        self.store(
            OpPurpose::Background,
            StoreOp::UpdateState {
                owner: owner.to_owned(),
                peer: Some(peer.to_owned()),
                direction: Some(direction),
                message_id: message_id.to_owned(),
                state,
                at_ms,
            },
        );
    }

    /// A copy of a sender's message failed for one recipient: record it, and tell the
    /// sender with a failure IMDN when asked to.
    fn sender_failed(&mut self, now: Instant, record: &MessageRecord, unix: u64) {
        self.mark(
            &record.owner,
            &record.peer,
            Direction::Sent,
            &record.message_id,
            DeliveryState::Failed,
            unix,
        );
        if record.disposition.iter().any(|d| d == "negative-delivery") {
            // Straight to the sender's devices: its record is already updated.
            let to = Uri::parse(&record.sender).ok();
            let from = Uri::parse(&record.recipient).ok();
            if let (Some(to), Some(from)) = (to, from) {
                self.send_failure_imdn(now, &from, &to, record, None);
            }
        }
    }

    // ----- deferred delivery ------------------------------------------------------------

    fn start_deferred_run(&mut self, owner: String) {
        if let Some(run) = self.runs.get_mut(&owner) {
            run.again = true;
            return;
        }
        self.runs.insert(
            owner.clone(),
            DeferredRun {
                reading: true,
                ..DeferredRun::default()
            },
        );
        self.store(
            OpPurpose::DeferredRead {
                owner: owner.clone(),
            },
            StoreOp::PendingDeferred {
                owner,
                limit: DEFERRED_BATCH,
            },
        );
    }

    fn on_deferred_read(&mut self, now: Instant, owner: String, records: Vec<MessageRecord>) {
        let in_flight = &self.in_flight;
        let Some(run) = self.runs.get_mut(&owner) else {
            return;
        };
        run.reading = false;
        let total = records.len();
        run.queue = records
            .into_iter()
            .filter(|r| {
                !in_flight.contains(&(r.owner.clone(), r.peer.clone(), r.message_id.clone()))
            })
            .collect();
        // More may follow a full read, unless everything read is still in flight (then a
        // failed delivery runs the queue again, see `rerun`; reading again now would spin).
        run.more = total >= DEFERRED_BATCH && !run.queue.is_empty();
        if run.queue.len() < total {
            self.rerun.insert(owner.clone());
        }
        self.deferred_next(now, owner);
    }

    fn deferred_next(&mut self, now: Instant, owner: String) {
        let Some(run) = self.runs.get_mut(&owner) else {
            return;
        };
        let Some(record) = run.queue.front().cloned() else {
            if run.again || run.more {
                run.again = false;
                run.reading = true;
                self.store(
                    OpPurpose::DeferredRead {
                        owner: owner.clone(),
                    },
                    StoreOp::PendingDeferred {
                        owner,
                        limit: DEFERRED_BATCH,
                    },
                );
            } else {
                self.runs.remove(&owner);
            }
            return;
        };
        let out = self.deferred_request(&record);
        let dest = self.core_peer();
        match self.tx.send_request(now, out, dest) {
            Ok(ckey) => {
                if let Some(run) = self.runs.get_mut(&owner) {
                    run.sending = Some(ckey.clone());
                }
                self.clients.insert(ckey, ClientPurpose::Deferred { owner });
            }
            Err(_) => {
                self.runs.remove(&owner);
            }
        }
    }

    /// A stored message re-sent to its owner's devices with the deferred ICSI, the original
    /// sender identity, identifiers and body (PROTOCOL.md row 13).
    fn deferred_request(&mut self, r: &MessageRecord) -> Request {
        let ruri = Uri::parse(&format!("sip:{}", r.owner))
            .unwrap_or_else(|_| Uri::parse("sip:invalid@invalid").expect("static URI"));
        let mut out = Request::new(Method::Message, ruri);
        let branch = format!("{BRANCH_PREFIX}{:016x}", self.random());
        let tag = self.tag();
        let h = &mut out.headers;
        h.push(Header::new(
            HeaderName::Via,
            &format!(
                "SIP/2.0/{} {};branch={branch}",
                self.cfg.core.transport.as_via_token(),
                self.cfg.address
            ),
        ));
        h.push(Header::new(HeaderName::MaxForwards, "70"));
        h.push(Header::new(
            HeaderName::From,
            &format!("<{}>;tag={tag}", r.sender),
        ));
        h.push(Header::new(HeaderName::To, &format!("<sip:{}>", r.owner)));
        let call_id = derived_uuid(&[&r.owner, &r.peer, &r.message_id, "deferred"]);
        h.push(Header::new(
            HeaderName::CallId,
            &format!("{call_id}@{}", self.cfg.address.ip()),
        ));
        h.push(Header::new(HeaderName::CSeq, "1 MESSAGE"));
        h.push(Header::new(
            HeaderName::PAssertedIdentity,
            &format!("<{}>", r.sender),
        ));
        h.push(Header::new(HeaderName::PAssertedService, ICSI_DEFERRED));
        // `require`: only devices that take deferred messages (or that announce no CPM
        // service at all, such as a plain RFC 3428 UA) get them (RFC 3841).
        h.push(Header::new(
            HeaderName::AcceptContact,
            &format!("{};require", accept_contact(ICSI_DEFERRED)),
        ));
        h.push(Header::new(HeaderName::ConversationId, &r.conversation_id));
        h.push(Header::new(HeaderName::ContributionId, &r.contribution_id));
        if let Some(irt) = &r.in_reply_to {
            h.push(Header::new(HeaderName::InReplyToContributionId, irt));
        }
        h.push(Header::new(HeaderName::ContentType, &r.content_type));
        h.push(Header::new(
            HeaderName::ContentLength,
            &r.body.len().to_string(),
        ));
        out.body = Bytes::from(r.body.clone());
        out
    }

    /// A deferred message expired: tell its sender when asked to (RFC 5438 failed).
    fn on_expired(&mut self, now: Instant, r: &MessageRecord) {
        if !r.disposition.iter().any(|d| d == "negative-delivery") {
            return;
        }
        let (Ok(from), Ok(to)) = (Uri::parse(&r.recipient), Uri::parse(&r.sender)) else {
            return;
        };
        // Through the core as the recipient's originating side, so that the sender's PF
        // records the failure in the sender's history too.
        let route = format!("<sip:{};lr;cpm=orig>", self.cfg.core.addr);
        self.send_failure_imdn(now, &from, &to, r, Some(&route));
    }

    fn send_failure_imdn(
        &mut self,
        now: Instant,
        from: &Uri,
        to: &Uri,
        r: &MessageRecord,
        route: Option<&str>,
    ) {
        let unix = self.unix_ms(now);
        let imdn = Imdn {
            message_id: r.message_id.clone(),
            datetime: rfc3339(r.created_at_ms),
            recipient_uri: Some(from.to_string()),
            original_recipient_uri: Some(from.to_string()),
            notification: Notification::Delivery(DeliveryStatus::Failed),
        };
        let notice_id = derived_uuid(&[&r.message_id, &r.owner, &r.peer, "failed"]);
        let cpim = CpimBuilder::new()
            .from(&CpimAddress::new(from.to_string()))
            .to(&CpimAddress::new(to.to_string()))
            .date_time(rfc3339(unix))
            .message_id(notice_id)
            .content_type(mime::MESSAGE_IMDN_XML)
            .content_header("Content-Disposition", "notification")
            .body(imdn.to_xml())
            .build();
        let Ok(cpim) = cpim else {
            return;
        };
        let body = cpim.to_bytes();
        let mut out = Request::new(Method::Message, to.clone());
        let branch = format!("{BRANCH_PREFIX}{:016x}", self.random());
        let tag = self.tag();
        let h = &mut out.headers;
        h.push(Header::new(
            HeaderName::Via,
            &format!(
                "SIP/2.0/{} {};branch={branch}",
                self.cfg.core.transport.as_via_token(),
                self.cfg.address
            ),
        ));
        if let Some(route) = route {
            h.push(Header::new(HeaderName::Route, route));
        }
        h.push(Header::new(HeaderName::MaxForwards, "70"));
        h.push(Header::new(
            HeaderName::From,
            &format!("<{from}>;tag={tag}"),
        ));
        h.push(Header::new(HeaderName::To, &format!("<{to}>")));
        let call_id = derived_uuid(&[&r.message_id, &r.owner, &r.peer, "imdn-failed"]);
        h.push(Header::new(
            HeaderName::CallId,
            &format!("{call_id}@{}", self.cfg.address.ip()),
        ));
        h.push(Header::new(HeaderName::CSeq, "1 MESSAGE"));
        h.push(Header::new(
            HeaderName::PAssertedIdentity,
            &format!("<{from}>"),
        ));
        h.push(Header::new(HeaderName::PAssertedService, ICSI_MSG));
        h.push(Header::new(
            HeaderName::AcceptContact,
            &accept_contact(ICSI_MSG),
        ));
        h.push(Header::new(HeaderName::ConversationId, &r.conversation_id));
        h.push(Header::new(
            HeaderName::ContributionId,
            &derived_uuid(&[&r.contribution_id, "imdn-failed"]),
        ));
        h.push(Header::new(HeaderName::ContentType, mime::MESSAGE_CPIM));
        h.push(Header::new(
            HeaderName::ContentLength,
            &body.len().to_string(),
        ));
        out.body = body;
        let dest = self.core_peer();
        if let Ok(ckey) = self.tx.send_request(now, out, dest) {
            self.clients.insert(ckey, ClientPurpose::Notice);
        }
    }
}

/// Permanent failures of a terminating delivery: the user does not exist or refuses; the
/// message is not kept for later.
/// Whether a CPIM body names `aor` as its sender and nobody else: exactly one header line
/// called `From` (in any namespace, under any prefix: some reader would show each), in the
/// CPIM namespace, whose URI is `aor`.
fn names_only(cpim: &Cpim, aor: &str) -> bool {
    let froms = cpim
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("From"))
        .count();
    froms == 1
        && cpim
            .from()
            .ok()
            .flatten()
            .and_then(|a| Uri::parse(&a.uri).ok())
            .and_then(|u| aor_of(&u))
            .is_some_and(|n| n.eq_ignore_ascii_case(aor))
}

/// The answer to a message the deferred queue has no room for (the store's refusal).
fn quota_answer(q: QuotaExceeded) -> (StatusCode, &'static str) {
    match q {
        QuotaExceeded::MessageTooLarge => (
            StatusCode::REQUEST_ENTITY_TOO_LARGE,
            "Message Too Large For The Deferred Queue",
        ),
        QuotaExceeded::SenderMessages => {
            (StatusCode::BUSY_HERE, "Too Many Deferred Messages From You")
        }
        QuotaExceeded::RecipientMessages | QuotaExceeded::RecipientBytes => {
            (StatusCode::BUSY_HERE, "Recipient Deferred Queue Full")
        }
    }
}

fn is_permanent_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 403 | 404 | 410 | 484 | 603 | 604)
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::new(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The first P-Asserted-Identity SIP URI (set by the core, RFC 3325).
fn asserted_identity(req: &Request) -> Option<Uri> {
    req.headers
        .p_asserted_identity()
        .ok()?
        .into_iter()
        .map(|a| a.uri)
        .find(|u| matches!(u, Uri::Sip(_)))
}

/// `Conversation-ID`, `Contribution-ID` and `InReplyTo-Contribution-ID` of a request, the
/// first two created (derived from the Call-ID) when missing.
#[derive(Clone, Debug)]
struct ConversationIds {
    conversation: String,
    contribution: String,
    in_reply_to: Option<String>,
}

impl ConversationIds {
    fn of(req: &Request) -> Self {
        let call_id = req
            .headers
            .call_id()
            .ok()
            .flatten()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let conversation = req
            .headers
            .conversation_id()
            .ok()
            .flatten()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| derived_uuid(&[&call_id, "conversation"]));
        let contribution = req
            .headers
            .contribution_id()
            .ok()
            .flatten()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| derived_uuid(&[&call_id, "contribution"]));
        let in_reply_to = req
            .headers
            .in_reply_to_contribution_id()
            .ok()
            .flatten()
            .filter(|s| !s.is_empty());
        Self {
            conversation,
            contribution,
            in_reply_to,
        }
    }
}

/// What the PF needs from a MESSAGE body.
#[derive(Debug)]
struct MessageBody {
    content_type: String,
    /// `imdn.Message-ID` of a CPIM body.
    message_id: Option<String>,
    disposition: Vec<String>,
    /// The body is a notification.
    imdn: Option<Imdn>,
}

impl MessageBody {
    /// Parses the body as far as the PF needs: a CPIM body must be valid CPIM (400), an IMDN
    /// inside must be valid IMDN (400).
    fn parse(req: &Request) -> Result<Self, (StatusCode, &'static str)> {
        let content_type = req
            .headers
            .get(&HeaderName::ContentType)
            .and_then(|h| h.value().ok().map(|v| v.trim().to_owned()))
            .unwrap_or_default();
        if req.body.is_empty() {
            return Err((StatusCode::BAD_REQUEST, "Empty Message"));
        }
        let media = mime::media_type(&content_type);
        if media == mime::MESSAGE_CPIM {
            let cpim = Cpim::parse(req.body.clone())
                .map_err(|e| (status_of(e.status()), e.reason_phrase()))?;
            let inner = cpim
                .content_type()
                .map(mime::media_type)
                .unwrap_or_default();
            let imdn = if inner == mime::MESSAGE_IMDN_XML {
                Some(
                    Imdn::parse(&cpim.body)
                        .map_err(|e| (status_of(e.status()), e.reason_phrase()))?,
                )
            } else {
                None
            };
            let disposition = cpim
                .disposition_notification()
                .iter()
                .map(|d| d.as_str().to_ascii_lowercase())
                .filter(|d| !matches!(Disposition::parse(d), Disposition::Other(_)))
                .collect();
            Ok(Self {
                content_type,
                message_id: cpim.message_id().map(str::to_owned),
                disposition,
                imdn,
            })
        } else if media == mime::MESSAGE_IMDN_XML {
            let imdn =
                Imdn::parse(&req.body).map_err(|e| (status_of(e.status()), e.reason_phrase()))?;
            Ok(Self {
                content_type,
                message_id: None,
                disposition: Vec::new(),
                imdn: Some(imdn),
            })
        } else {
            Ok(Self {
                content_type: if content_type.is_empty() {
                    "text/plain".to_owned()
                } else {
                    content_type
                },
                message_id: None,
                disposition: Vec::new(),
                imdn: None,
            })
        }
    }

    /// The message's identity for the history: `imdn.Message-ID`, or one derived from the
    /// Call-ID and CSeq (a retransmission gets the same one).
    fn message_id(&self, req: &Request) -> String {
        if let Some(id) = &self.message_id {
            return id.clone();
        }
        let call_id = req
            .headers
            .call_id()
            .ok()
            .flatten()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let cseq = req
            .headers
            .get(&HeaderName::CSeq)
            .and_then(|h| h.value().ok().map(|v| v.into_owned()))
            .unwrap_or_default();
        derived_uuid(&[&call_id, &cseq, "message-id"])
    }
}
