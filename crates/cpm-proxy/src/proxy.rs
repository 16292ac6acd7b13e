//! The SIP/IP Core as one sans-IO state machine: registrar, authentication, transaction
//! stateful proxy with parallel forking, CPM routing through the Participating Function.
//!
//! This file holds the types, the constructor and the driver contract; the flows live in
//! submodules: `register` (registrar), `auth` (digest and user-directory lookups), `routing`
//! (route processing, CPM routing, target determination), `forward` (forking, responses,
//! CANCEL) and `security` (the security rules).

use core::net::{IpAddr, SocketAddr};
use std::collections::{HashMap, VecDeque};

use foldhash::fast::FixedState;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_sip::{
    Header, HeaderName, Message, Method, Param, ParseError, Request, Response, Scope, StatusCode,
    Verdict, Via, check_request,
};
use cpm_sip_core::digest::NonceKey;
use cpm_sip_core::guard::{AuthThrottle, NonceTracker, SourceLimiter};
use cpm_sip_core::overload::{LoadControl, LoadStats};
use cpm_sip_core::transaction::{
    ClientKey, RequestDisposition, ServerKey, TransactionLayer, TxEvent, response_to,
};
use cpm_sip_core::{ConnId, Handoff, Outgoing, Peer, Transmit};

use crate::config::ProxyConfig;
use crate::registrar::Registrar;

mod auth;
mod forward;
mod overload;
mod register;
mod routing;
mod security;

use auth::Parked;
use forward::Fork;
pub use routing::{CPM_ICSI_PREFIX, is_cpm, service_ids};
pub use security::SecurityEvent;

/// Our branch prefix: the magic cookie, then a marker for loop detection (RFC 3261 16.6 step 8).
const BRANCH_PREFIX: &str = "z9hG4bK-cpm-";

/// What ends the branch of a request a core on a shard sends, before the shard's number.
const SHARD_MARK: &str = ".s";

/// The shard whose core sent the request this branch names (`z9hG4bK-cpm-<hash>.s1`), for a
/// driver that hands each response to the shard that waits for it; `None` for a branch that
/// is not ours or carries no shard.
pub fn branch_shard(branch: &str) -> Option<u16> {
    let (_, shard) = branch
        .strip_prefix(BRANCH_PREFIX)?
        .rsplit_once(SHARD_MARK)?;
    shard.parse().ok()
}

/// The parameter of our Record-Route that carries the dialog token: a MAC of the Call-ID
/// under the node's secret, so an in-dialog request proves the dialog runs through us.
const DIALOG_PARAM: &str = "cpm-d";

/// How often the guards' tables are swept (expired blocks, idle sources).
const GUARD_SWEEP: Duration = Duration::from_secs(5);

/// A user-directory query the driver answers with [`Input::User`].
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct QueryId(pub u64);

/// What the user directory knows about a user, for the digest username that was asked.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct UserRecord {
    /// The address-of-record, `alice@localhost`.
    pub aor: String,
    /// HA1 for MD5 for the username asked (lowercase hex).
    pub ha1_md5: String,
    /// HA1 for SHA-256 for the username asked.
    pub ha1_sha256: String,
}

/// What the driver feeds the core.
#[derive(Debug)]
#[non_exhaustive]
pub enum Input {
    /// A message received from a peer.
    Message {
        /// Where it came from.
        peer: Peer,
        /// The message.
        message: Message,
    },
    /// A message that could not be parsed.
    ParseError {
        /// Where it came from.
        peer: Peer,
        /// The parse error.
        error: ParseError,
        /// The received bytes (the head at least), to copy the headers of an error response.
        raw: Bytes,
    },
    /// One CRLF between messages on a stream.
    KeepAlive {
        /// The connection.
        peer: Peer,
    },
    /// A stream connection closed.
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
    },
    /// The answer to [`Output::LookupUser`].
    User {
        /// The query answered.
        query: QueryId,
        /// The user, if the directory knows the username in that realm.
        user: Option<UserRecord>,
    },
}

/// What the core asks the driver to do.
#[derive(Debug)]
pub enum Output {
    /// Send bytes.
    Transmit(Transmit),
    /// Hand a message to another function of this node (an application server of the
    /// core's table that runs in the node).
    Handoff(Handoff),
    /// Close a stream connection (its framing was lost).
    Close(ConnId),
    /// Persist a registration change (fire and forget: a REGISTER is answered from memory;
    /// the store lets the bindings survive a restart, see [`Proxy::restore_bindings`]).
    Persist(Box<cpm_store::StoreOp>),
    /// Look up a digest username (`alice` or `alice@localhost`) in a realm; answer with
    /// [`Input::User`].
    LookupUser {
        /// Echoed in the answer.
        query: QueryId,
        /// The digest username, or an address-of-record.
        username: String,
        /// The realm.
        realm: String,
    },
    /// Log this (see [`SecurityEvent`]).
    Security(SecurityEvent),
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Stats {
    /// Requests received (parsed).
    pub requests_received: u64,
    /// Responses received (parsed).
    pub responses_received: u64,
    /// Messages that failed to parse.
    pub parse_errors: u64,
    /// New server transactions.
    pub transactions_started: u64,
    /// Requests forwarded on a client transaction (each fork counts).
    pub requests_forwarded: u64,
    /// MESSAGE requests forwarded.
    pub messages_forwarded: u64,
    /// REGISTERs answered 200.
    pub registrations_accepted: u64,
    /// 401/407 challenges sent.
    pub auth_challenges: u64,
    /// Final responses we generated (not forwarded), by class 4xx-6xx.
    pub local_failures: u64,
    /// Third-party REGISTERs sent to the Participating Function.
    pub third_party_registers: u64,
    /// Failed authentications (wrong password, unknown user, credentials for another URI).
    pub auth_failures: u64,
    /// Requests refused because their source or user was blocked after failures.
    pub auth_refused: u64,
    /// Blocks started (sources and users).
    pub auth_blocks: u64,
    /// Sources blocked now (as of the last sweep, every few seconds).
    pub auth_blocked_sources: u64,
    /// Users blocked now for new devices (as of the last sweep).
    pub auth_blocked_users: u64,
    /// Credentials refused as replays (RFC 7616 nonce count).
    pub replays_refused: u64,
    /// Out-of-dialog requests dropped (UDP) or answered 503 (TCP) for their source's rate.
    pub rate_limited: u64,
    /// Requests refused because they asked us to send somewhere on an unauthenticated
    /// sender's behalf (a preloaded Route, a foreign target, a dialog that is not ours).
    pub relay_refused: u64,
    /// Requests refused because their sender could not be who it said (a foreign domain not
    /// from its core, an unverifiable From).
    pub sender_refused: u64,
}

impl core::ops::AddAssign for Stats {
    /// Adds another element's counters (the shards of one node, for `/metrics`).
    fn add_assign(&mut self, o: Self) {
        self.requests_received += o.requests_received;
        self.responses_received += o.responses_received;
        self.parse_errors += o.parse_errors;
        self.transactions_started += o.transactions_started;
        self.requests_forwarded += o.requests_forwarded;
        self.messages_forwarded += o.messages_forwarded;
        self.registrations_accepted += o.registrations_accepted;
        self.auth_challenges += o.auth_challenges;
        self.local_failures += o.local_failures;
        self.third_party_registers += o.third_party_registers;
        self.auth_failures += o.auth_failures;
        self.auth_refused += o.auth_refused;
        self.auth_blocks += o.auth_blocks;
        self.auth_blocked_sources += o.auth_blocked_sources;
        self.auth_blocked_users += o.auth_blocked_users;
        self.replays_refused += o.replays_refused;
        self.rate_limited += o.rate_limited;
        self.relay_refused += o.relay_refused;
        self.sender_refused += o.sender_refused;
    }
}

/// The SIP/IP Core. See the crate docs for the driver loop.
pub struct Proxy {
    cfg: ProxyConfig,
    tx: TransactionLayer,
    registrar: Registrar,
    nonce_key: NonceKey,
    /// `now` at construction and the Unix time then: wall clock for nonces and Date.
    anchor: (Instant, u64),
    /// Boxed, like the transaction layer's map: an INVITE fork stays 33 s (RFC 6026), so the
    /// map holds tens of thousands at a few thousand calls/s, and a resize moving whole forks
    /// (368 bytes each) stalls the loop: 30 ms at 28,672 entries inline, 7 ms boxed (a map
    /// of the same shape timed on the 2-core bench machine).
    forks: HashMap<ServerKey, Box<Fork>, FixedState>,
    /// Finished INVITE forks and when to forget them.
    done_forks: VecDeque<(Instant, ServerKey)>,
    branch_fork: HashMap<ClientKey, ServerKey, FixedState>,
    parked: HashMap<QueryId, Parked>,
    next_query: u64,
    /// Consecutive CRLFs per connection (two make a keep-alive ping, RFC 5626 3.5.1).
    crlf_run: HashMap<ConnId, u8>,
    rng: u64,
    outputs: VecDeque<Output>,
    stats: Stats,
    sweep_at: Option<Instant>,
    /// Nonce counts seen, against replayed credentials.
    nonces: NonceTracker,
    /// Failed authentications per source and per user.
    throttle: AuthThrottle,
    /// Out-of-dialog requests per source.
    limiter: SourceLimiter,
    /// When the guards' tables are swept next.
    guard_sweep_at: Option<Instant>,
    /// Admission of new requests by measured delay (RFC 5390).
    load: LoadControl,
    /// Store operations of the node in flight, as the driver last said.
    store_backlog: usize,
    /// The end of every branch we write: the shard's mark, or nothing
    /// ([`ProxyConfig::shards`]).
    branch_tag: String,
}

/// The Unix time as an RFC 1123 date for the Date header (one formatter, in the codec).
pub use cpm_sip::cpm::http_date;

/// Removes the first Via value (a proxy's own, RFC 3261 16.7 step 3); false if there is none.
fn pop_top_via(headers: &mut cpm_sip::Headers) -> bool {
    let Some(first) = headers.get(&HeaderName::Via).cloned() else {
        return false;
    };
    let Ok(value) = first.value() else {
        return false;
    };
    let Some(list) = Via::parse_list(&value) else {
        return false;
    };
    let rest: Vec<String> = list.iter().skip(1).map(ToString::to_string).collect();
    let replacement = (!rest.is_empty()).then(|| Header::new(HeaderName::Via, &rest.join(", ")));
    replace_top_via(headers, replacement);
    true
}

/// Replaces (or removes) the first Via header field where it stands: the other fields keep
/// their order and bytes.
fn replace_top_via(headers: &mut cpm_sip::Headers, replacement: Option<Header>) {
    replace_first(headers, &HeaderName::Via, replacement);
}

/// Replaces (or removes) the first field named `name` where it stands.
fn replace_first(headers: &mut cpm_sip::Headers, name: &HeaderName, replacement: Option<Header>) {
    let mut out = cpm_sip::Headers::new();
    let mut replacement = replacement;
    let mut done = false;
    for h in headers.iter() {
        if !done && h.name() == name {
            done = true;
            if let Some(r) = replacement.take() {
                out.push(r);
            }
            continue;
        }
        out.push(h.clone());
    }
    *headers = out;
}

/// RFC 3261 18.2.1 and RFC 3581 section 4: the server notes where a request really came
/// from in its top Via (`received` when the address differs from sent-by, `rport` filled in
/// when the client asked for it), so responses find their way back through NATs.
fn stamp_top_via(req: &mut Request, source: SocketAddr) {
    let Ok(Some(mut via)) = req.headers.top_via() else {
        return;
    };
    let sent_by_ip = match &via.host {
        cpm_sip::Host::Ipv4(a) => Some(IpAddr::V4(*a)),
        cpm_sip::Host::Ipv6(a) => a.parse().ok(),
        cpm_sip::Host::Domain(_) => None,
    };
    let wants_rport = via.rport() == Some(None);
    let needs_received = sent_by_ip != Some(source.ip());
    if !wants_rport && !needs_received {
        return;
    }
    via.params.retain(|p| {
        !p.name.eq_ignore_ascii_case("received") && !p.name.eq_ignore_ascii_case("rport")
    });
    if needs_received || wants_rport {
        let ip = match source.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => a.to_string(),
        };
        via.params.push(Param::new("received", Some(ip)));
    }
    if wants_rport {
        via.params
            .push(Param::new("rport", Some(source.port().to_string())));
    }
    // The top Via field may hold more values: keep them after ours.
    let Some(first) = req.headers.get(&HeaderName::Via).cloned() else {
        return;
    };
    let rest: Vec<String> = first
        .value()
        .ok()
        .and_then(|v| Via::parse_list(&v))
        .map(|l| l.iter().skip(1).map(ToString::to_string).collect())
        .unwrap_or_default();
    let mut value = via.to_string();
    for r in rest {
        value.push_str(", ");
        value.push_str(&r);
    }
    replace_top_via(&mut req.headers, Some(Header::new(HeaderName::Via, &value)));
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("domains", &self.cfg.domains)
            .field("transactions", &self.tx.len())
            .field("registrations", &self.registrar.len())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A core with this configuration; `now` and `unix_now` anchor the wall clock (digest
    /// nonces, Date headers).
    pub fn new(cfg: ProxyConfig, now: Instant, unix_now: u64) -> Self {
        let nonce_key = NonceKey::new(cfg.nonce_secret);
        let seed = cfg.rng_seed;
        Self {
            nonces: NonceTracker::new(cfg.nonce_table_size, seed ^ 1),
            throttle: AuthThrottle::new(cfg.auth_throttle, seed ^ 2),
            limiter: SourceLimiter::new(
                cfg.source_rate,
                cfg.source_burst,
                cfg.tracked_sources,
                cfg.auth_throttle.report_interval,
                seed ^ 3,
            ),
            guard_sweep_at: None,
            load: LoadControl::new(cfg.overload),
            store_backlog: 0,
            branch_tag: if cfg.shards.count > 1 {
                format!("{SHARD_MARK}{}", cfg.shards.index)
            } else {
                String::new()
            },
            tx: TransactionLayer::with_seed(cfg.timers, cfg.rng_seed),
            registrar: Registrar::default(),
            nonce_key,
            anchor: (now, unix_now),
            forks: HashMap::with_hasher(FixedState::with_seed(cfg.rng_seed)),
            done_forks: VecDeque::new(),
            branch_fork: HashMap::with_hasher(FixedState::with_seed(cfg.rng_seed)),
            parked: HashMap::new(),
            next_query: 0,
            crlf_run: HashMap::new(),
            rng: cfg.rng_seed | 1,
            outputs: VecDeque::new(),
            stats: Stats::default(),
            sweep_at: None,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let t = self.throttle.stats();
        Stats {
            auth_failures: t.failures,
            auth_refused: t.refused,
            auth_blocks: t.blocks,
            auth_blocked_sources: t.blocked_sources,
            auth_blocked_users: t.blocked_users,
            rate_limited: self.limiter.stats().refused,
            ..self.stats
        }
    }

    /// Live registrations (bindings) across all users.
    pub fn registrations(&self) -> usize {
        self.registrar.len()
    }

    /// Live transactions.
    pub fn transactions(&self) -> usize {
        self.tx.len()
    }

    /// The registrar, for inspection (admin API, tests).
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    fn unix(&self, now: Instant) -> u64 {
        self.anchor.1 + now.saturating_duration_since(self.anchor.0).as_secs()
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        self.anchor.1 * 1000 + now.saturating_duration_since(self.anchor.0).as_millis() as u64
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: seeded, deterministic; only uniqueness matters (tags, branch suffixes).
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn tag(&mut self) -> String {
        format!("{:x}", self.random())
    }

    /// Feeds one input that did not wait (see [`Proxy::handle_received`]).
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        self.handle(now, Duration::ZERO, input);
    }

    /// Feeds one input from the network that the driver received at `received` (`<= now`):
    /// the wait between the two is the queue delay overload control measures.
    pub fn handle_received(&mut self, now: Instant, received: Instant, input: Input) {
        let sojourn = now.saturating_duration_since(received);
        if matches!(input, Input::Message { .. } | Input::ParseError { .. }) {
            self.load.queue_delay(now, sojourn);
        }
        self.handle(now, sojourn, input);
    }

    /// A message from another shard of the node waited `sojourn` in the channel between
    /// the shards: a queue delay like the network's ([`Proxy::handle_received`]).
    pub fn shard_delay(&mut self, now: Instant, sojourn: Duration) {
        self.load.queue_delay(now, sojourn);
    }

    /// The queue delay the other shards of the node see now (the largest), for admission:
    /// see [`cpm_sip_core::overload::LoadControl::remote_delay`].
    pub fn set_remote_delay(&mut self, delay: Duration) {
        self.load.remote_delay(delay);
    }

    /// A store operation of this node's functions was answered `latency` after it was
    /// asked for (the node reports every one: the store is shared).
    pub fn store_latency(&mut self, now: Instant, latency: Duration) {
        self.load.store_latency(now, latency);
    }

    /// How many store operations of the node wait for their receipts now; at
    /// [`ProxyConfig::max_store_in_flight`] new requests are refused (503).
    pub fn set_store_backlog(&mut self, in_flight: usize) {
        self.store_backlog = in_flight;
    }

    /// What overload control did.
    pub fn load_stats(&self) -> LoadStats {
        self.load.stats()
    }

    fn handle(&mut self, now: Instant, sojourn: Duration, input: Input) {
        match input {
            Input::Message { peer, message } => {
                if let Some(conn) = peer.conn {
                    self.crlf_run.remove(&conn);
                }
                match message {
                    Message::Request(r) => self.on_request(now, r, peer, sojourn),
                    Message::Response(r) => self.on_response(now, r),
                }
            }
            Input::ParseError { peer, error, raw } => self.on_parse_error(peer, &error, &raw),
            Input::KeepAlive { peer } => {
                if let Some(conn) = peer.conn {
                    let run = self.crlf_run.entry(conn).or_insert(0);
                    *run += 1;
                    if *run >= 2 {
                        // RFC 5626 3.5.1: CRLFCRLF ping, CRLF pong.
                        *run = 0;
                        self.outputs.push_back(Output::Transmit(Transmit {
                            peer,
                            payload: Bytes::from_static(b"\r\n"),
                        }));
                    }
                }
            }
            Input::ConnectionClosed { conn } => {
                self.crlf_run.remove(&conn);
                self.registrar.flow_closed(conn);
            }
            Input::User { query, user } => self.on_user(now, query, user),
        }
        self.drain_tx(now);
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.registrar.handle_timeout(now);
        if self.sweep_at.is_some_and(|s| s <= now) {
            self.sweep_at = None;
            self.sweep(now);
        }
        if self.guard_sweep_at.is_some_and(|s| s <= now) {
            self.throttle.sweep(now);
            self.limiter.sweep(now);
            self.guard_sweep_at =
                (!self.throttle.is_empty() || !self.limiter.is_empty()).then(|| now + GUARD_SWEEP);
        }
        self.drain_tx(now);
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.tx.poll_timeout(),
            self.registrar.poll_timeout(),
            self.sweep_at,
            self.guard_sweep_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn drain_tx(&mut self, now: Instant) {
        loop {
            while let Some(t) = self.tx.poll_transmit() {
                self.outputs.push_back(Output::Transmit(t));
            }
            while let Some(h) = self.tx.poll_handoff() {
                self.outputs.push_back(Output::Handoff(h));
            }
            let Some(ev) = self.tx.poll_event() else {
                break;
            };
            match ev {
                TxEvent::Timeout(ckey) => self.branch_timeout(now, &ckey),
                TxEvent::CancelSent(_) | TxEvent::AckTimeout(_) => {}
            }
        }
    }

    fn send_stateless(&mut self, peer: Peer, resp: &Response) {
        self.send_message(peer, Message::Response(resp.clone()));
    }

    /// A message outside any transaction: bytes for the network, a value for a function of
    /// this node.
    fn send_message(&mut self, peer: Peer, message: Message) {
        self.outputs.push_back(match Outgoing::new(peer, message) {
            Outgoing::Transmit(t) => Output::Transmit(t),
            Outgoing::Handoff(h) => Output::Handoff(h),
        });
    }

    /// Answers on a server transaction.
    fn reply(&mut self, now: Instant, key: &ServerKey, resp: Response) {
        if resp.status.class() >= 4 {
            self.stats.local_failures += 1;
        }
        // The transaction may already be gone (e.g. CANCEL raced a final): nothing to send.
        let _ = self.tx.respond_owned(now, key, resp);
    }

    fn reply_status(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Request,
        status: StatusCode,
        reason: &str,
    ) {
        let tag = self.tag();
        let mut resp = response_to(req, status, (status.as_u16() > 100).then_some(tag.as_str()));
        resp.reason = reason.to_owned();
        self.reply(now, key, resp);
    }

    /// 420 Bad Extension with the option tags we do not support (RFC 3261 8.2.2.3, 16.3 step 6).
    fn bad_extension(&mut self, now: Instant, key: &ServerKey, req: &Request, tags: &[String]) {
        let tag = self.tag();
        let mut resp = response_to(req, StatusCode::BAD_EXTENSION, Some(&tag));
        resp.headers
            .push(Header::new(HeaderName::Unsupported, &tags.join(", ")));
        self.reply(now, key, resp);
    }

    fn on_parse_error(&mut self, peer: Peer, error: &ParseError, raw: &[u8]) {
        self.stats.parse_errors += 1;
        if let Verdict::Respond(status, reason) = error.verdict()
            && let Some(resp) = error_response_from_raw(raw, status, reason)
        {
            self.send_stateless(peer, &resp);
        }
        if let (Scope::Connection, Some(conn)) = (error.scope(), peer.conn) {
            self.outputs.push_back(Output::Close(conn));
        }
    }

    fn on_request(&mut self, now: Instant, mut req: Request, peer: Peer, sojourn: Duration) {
        self.stats.requests_received += 1;
        if !self.admit(now, &req, peer) {
            return;
        }
        stamp_top_via(&mut req, peer.addr);
        if let Err(rej) = check_request(&req) {
            if req.method != Method::Ack {
                let mut resp = response_to(&req, rej.status, Some("cpm-err"));
                resp.reason = rej.reason;
                self.stats.local_failures += 1;
                self.send_stateless(peer, &resp);
            }
            return;
        }
        if self.overloaded_for(now, &req, peer, sojourn) {
            return self.refuse_overloaded(&req, peer);
        }
        let key = match self.tx.handle_request(now, &req, peer) {
            Ok(RequestDisposition::New(key)) => key,
            Ok(RequestDisposition::Stray) => return self.forward_stateless_ack(now, req, peer),
            Ok(_) => return,
            Err(_) => return,
        };
        self.stats.transactions_started += 1;
        if req.method == Method::Cancel {
            return self.on_cancel(now, &key, &req);
        }
        if req.method == Method::Invite {
            // RFC 3261 16.2: a stateful proxy sends 100 Trying for INVITE at once.
            let trying = response_to(&req, StatusCode::TRYING, None);
            self.reply(now, &key, trying);
        }
        self.route_request(now, key, req, peer);
    }
}

/// A stateless error response built from the raw bytes of a message that failed to parse:
/// Via, From, To, Call-ID and CSeq lines are copied as they are (RFC 3261 8.2.6.2). `None`
/// when there is no Via to send it along.
pub fn error_response_from_raw(raw: &[u8], status: StatusCode, reason: &str) -> Option<Response> {
    let head_end = memchr_find(raw, b"\r\n\r\n").unwrap_or(raw.len());
    let head = &raw[..head_end];
    let mut resp = Response::new(status);
    resp.reason = reason.to_owned();
    let mut has_via = false;
    let mut lines = head.split(|&b| b == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name_bytes = line[..colon].trim_ascii();
        let Some(name) = HeaderName::parse(name_bytes) else {
            continue;
        };
        if !matches!(
            name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            continue;
        }
        // Unfold continuation lines into the value.
        let mut value = String::from_utf8_lossy(line[colon + 1..].trim_ascii()).into_owned();
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                let n = next.strip_suffix(b"\r").unwrap_or(next);
                value.push(' ');
                value.push_str(String::from_utf8_lossy(n.trim_ascii()).as_ref());
                lines.next();
            } else {
                break;
            }
        }
        if value.contains(['\r', '\n']) || value.is_empty() {
            continue;
        }
        if name == HeaderName::Via {
            // A broken Via (RFC 4475 badinv01) is salvaged down to what the client needs to
            // match the response: sent-protocol, sent-by and branch. Lower Vias are not needed:
            // the response goes straight back to the source.
            if has_via {
                continue;
            }
            let via = salvage_via(&value)?;
            has_via = true;
            resp.headers.push(Header::new(name, &via));
            continue;
        }
        resp.headers.push(Header::new(name, &value));
    }
    resp.headers
        .push(Header::new(HeaderName::ContentLength, "0"));
    has_via.then_some(resp)
}

/// The first via-parm of a Via value, or a reduced one (`SIP/2.0/UDP host;branch=x`) when
/// the parameters are broken; `None` when even that does not parse.
fn salvage_via(value: &str) -> Option<String> {
    if let Some(list) = Via::parse_list(value) {
        return list.first().map(ToString::to_string);
    }
    let first = value.split(',').next()?;
    let base = first.split(';').next()?.trim();
    let branch = first
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("branch"))
        .map(|(_, v)| v.trim().to_owned());
    let reduced = match branch {
        Some(b) => format!("{base};branch={b}"),
        None => base.to_owned(),
    };
    Via::parse_list(&reduced).and_then(|l| l.first().map(ToString::to_string))
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
