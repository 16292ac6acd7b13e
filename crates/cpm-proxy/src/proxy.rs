//! The SIP/IP Core as one sans-IO state machine: registrar, authentication, transaction
//! stateful proxy with parallel forking, CPM routing through the Participating Function.

use core::net::{IpAddr, SocketAddr};
use std::collections::{HashMap, VecDeque};

use foldhash::fast::FixedState;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_sip::{
    Header, HeaderName, Message, Method, NameAddr, Param, ParseError, Request, Response, Scope,
    SipUri, StatusCode, Uri, Verdict, Via, check_request, feature_list,
};
use cpm_sip_core::digest::{self, Algorithm, Credentials, NonceCheck, NonceKey};
use cpm_sip_core::guard::{AuthThrottle, NonceTracker, SourceLimiter};
use cpm_sip_core::transaction::{
    ClientKey, RequestDisposition, ResponseDisposition, ServerKey, TransactionLayer, TxEvent,
    response_to,
};
use cpm_sip_core::{ConnId, Peer, Transmit, TransportKind};

use crate::config::ProxyConfig;
use crate::policy::{Sender, normalize_domain};

mod security;

use crate::registrar::{Binding, Registrar};
pub use security::SecurityEvent;
use security::SenderVerdict;

/// The CPM ICSI prefix (PROTOCOL.md row 5): every CPM service identifier starts with it.
pub const CPM_ICSI_PREFIX: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm";

/// Our branch prefix: the magic cookie, then a marker for loop detection (RFC 3261 16.6 step 8).
const BRANCH_PREFIX: &str = "z9hG4bK-cpm-";

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
#[derive(Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Send bytes.
    Transmit(Transmit),
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

/// Why a request waits for the user directory.
#[derive(Debug)]
enum Purpose {
    RegisterAuth(Credentials),
    ProxyAuth(Credentials),
    /// No binding: 480 if the user exists, else 404.
    TargetExists,
    /// A CPM request for a local user without a binding, before the terminating PF: the PF
    /// serves (stores, defers) existing users only; unknown ones get 404 here.
    TermUserExists,
}

#[derive(Debug)]
struct Parked {
    key: ServerKey,
    req: Request,
    peer: Peer,
    purpose: Purpose,
    ctx: RouteCtx,
}

/// What route processing learned about a request.
#[derive(Clone, Debug, Default)]
struct RouteCtx {
    /// The `cpm` parameter of our own Route that was popped: `orig` or `term` done.
    phase: Option<String>,
    /// The request's originator was authenticated as this local address-of-record.
    origin: Option<String>,
    /// The request came from a trusted peer.
    trusted: bool,
    /// A Route naming us was removed: the request follows a route we are on (Record-Route).
    routed_via_us: bool,
    /// One of the removed Routes carried our dialog token for this Call-ID: the request is
    /// inside a dialog this core Record-Routed.
    dialog: bool,
    /// No To tag: an initial request, outside any dialog.
    initial: bool,
    /// The RFC 3261 16.6 step 8 hash, computed once after route processing.
    hash: u64,
    /// The terminating user was found in the user directory.
    target_exists: bool,
}

/// One forwarded request and what its branches answered.
#[derive(Debug)]
struct Fork {
    /// The request as received, to build responses of our own (408 for a silent branch);
    /// dropped once every branch answered.
    request: Option<Request>,
    invite: bool,
    branches: Vec<ClientKey>,
    pending: usize,
    best: Option<Response>,
    answered: bool,
    cancelled: bool,
    done_at: Option<Instant>,
}

/// A destination chosen by target determination.
#[derive(Debug)]
struct Target {
    ruri: Uri,
    dest: Peer,
    routes: Vec<String>,
}

/// The SIP/IP Core. See the crate docs for the driver loop.
pub struct Proxy {
    cfg: ProxyConfig,
    tx: TransactionLayer,
    registrar: Registrar,
    nonce_key: NonceKey,
    /// `now` at construction and the Unix time then: wall clock for nonces and Date.
    anchor: (Instant, u64),
    forks: HashMap<ServerKey, Fork, FixedState>,
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
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The Unix time as an RFC 1123 date (`Wed, 25 Nov 2026 14:20:58 GMT`) for the Date header.
pub fn http_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil from days (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[(days.rem_euclid(7)) as usize],
        d,
        MO[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The service identifiers a request carries: P-Preferred-Service, P-Asserted-Service,
/// Accept-Contact `+g.3gpp.icsi-ref` and Contact `+g.3gpp.icsi-ref` values (TS 24.229 7.2A.8).
pub fn service_ids(req: &Request) -> Vec<String> {
    let h = &req.headers;
    let mut out: Vec<String> = Vec::new();
    out.extend(h.p_preferred_service().unwrap_or_default());
    out.extend(h.p_asserted_service().unwrap_or_default());
    for ac in h.accept_contact().unwrap_or_default() {
        out.extend(ac.feature_values("+g.3gpp.icsi-ref"));
    }
    if let Ok(Some(cpm_sip::Contact::Addresses(list))) = h.contact() {
        for a in list {
            if let Some(v) = a.param("+g.3gpp.icsi-ref").and_then(|p| p.unquoted_value()) {
                out.extend(feature_list(&v));
            }
        }
    }
    out
}

/// The service identifiers a request requires of the target's devices: `+g.3gpp.icsi-ref`
/// values of Accept-Contact entries marked `require` (RFC 3841 section 9.2), each with its
/// `explicit` flag.
fn required_services(req: &Request) -> Vec<(Vec<String>, bool)> {
    // Most requests require nothing: look at the raw values before parsing any.
    let any_require = req.headers.get_all(&HeaderName::AcceptContact).any(|h| {
        h.raw()
            .windows(7)
            .any(|w| w.eq_ignore_ascii_case(b"require"))
    });
    if !any_require {
        return Vec::new();
    }
    req.headers
        .accept_contact()
        .unwrap_or_default()
        .into_iter()
        .filter(|ac| {
            ac.params
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case("require"))
        })
        .map(|ac| {
            let explicit = ac
                .params
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case("explicit"));
            (ac.feature_values("+g.3gpp.icsi-ref"), explicit)
        })
        .filter(|(v, _)| !v.is_empty())
        .collect()
}

/// RFC 3841 section 7.2 for the ICSI feature tag: a device that registered ICSIs matches a
/// required entry when it registered all of its values; a device that registered none
/// matches implicitly unless the entry is `explicit`.
fn accepts(b: &Binding, required: &[(Vec<String>, bool)]) -> bool {
    if required.is_empty() {
        return true;
    }
    let registered: Vec<String> = b
        .contact
        .param("+g.3gpp.icsi-ref")
        .and_then(|p| p.unquoted_value())
        .map(|v| feature_list(&v))
        .unwrap_or_default();
    required.iter().all(|(values, explicit)| {
        if registered.is_empty() {
            return !explicit;
        }
        values
            .iter()
            .all(|v| registered.iter().any(|r| r.eq_ignore_ascii_case(v)))
    })
}

/// Whether a request is a CPM request (carries a CPM ICSI).
pub fn is_cpm(req: &Request) -> bool {
    service_ids(req).iter().any(|s| {
        s.len() >= CPM_ICSI_PREFIX.len()
            && s[..CPM_ICSI_PREFIX.len()].eq_ignore_ascii_case(CPM_ICSI_PREFIX)
    })
}

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

/// Never send to these: RFC 4475 section 3.3.10 (a broadcast Via must not be answered).
fn is_sendable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    !(ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
        || addr.port() == 0)
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

    /// Feeds one input.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Message { peer, message } => {
                if let Some(conn) = peer.conn {
                    self.crlf_run.remove(&conn);
                }
                match message {
                    Message::Request(r) => self.on_request(now, r, peer),
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
            let Some(ev) = self.tx.poll_event() else {
                break;
            };
            match ev {
                TxEvent::Timeout(ckey) => {
                    // RFC 3261 16.8: a timed-out branch counts as a 408 response.
                    let synthetic = self
                        .branch_fork
                        .get(&ckey)
                        .and_then(|server| self.forks.get(server))
                        .and_then(|fork| fork.request.as_ref())
                        .map(|req| {
                            response_to(req, StatusCode::REQUEST_TIMEOUT, Some("cpm-timeout"))
                        });
                    if let Some(r) = synthetic {
                        self.branch_final(now, &ckey, r, true);
                    }
                }
                TxEvent::CancelSent(_) | TxEvent::AckTimeout(_) => {}
            }
        }
    }

    fn send_stateless(&mut self, peer: Peer, resp: &Response) {
        self.outputs.push_back(Output::Transmit(Transmit {
            peer,
            payload: resp.to_bytes(),
        }));
    }

    /// Answers on a server transaction.
    fn reply(&mut self, now: Instant, key: &ServerKey, resp: Response) {
        if resp.status.class() >= 4 {
            self.stats.local_failures += 1;
        }
        // The transaction may already be gone (e.g. CANCEL raced a final): nothing to send.
        let _ = self.tx.respond(now, key, &resp);
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

    fn on_request(&mut self, now: Instant, mut req: Request, peer: Peer) {
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

    fn is_us(&self, uri: &SipUri) -> bool {
        let port = uri.port.unwrap_or(if uri.secure { 5061 } else { 5060 });
        if port != self.cfg.advertised.port() {
            return false;
        }
        match &uri.host {
            cpm_sip::Host::Ipv4(a) => IpAddr::V4(*a) == self.cfg.advertised.ip(),
            cpm_sip::Host::Ipv6(a) => a.parse::<IpAddr>().ok() == Some(self.cfg.advertised.ip()),
            cpm_sip::Host::Domain(d) => {
                self.cfg.is_local_domain(d)
                    || (d.eq_ignore_ascii_case("localhost")
                        && self.cfg.advertised.ip().is_loopback())
            }
        }
    }

    /// Removes the Route values that name us from the top of the route set (RFC 3261 16.4),
    /// leaving the other fields in place. Returns how many were removed, the `cpm` phase
    /// parameter of the last one, and whether one carried our dialog token for this
    /// Call-ID; `Err` for a Route that does not parse.
    fn pop_own_routes(&self, req: &mut Request) -> Result<(usize, Option<String>, bool), ()> {
        let mut popped = 0;
        let mut phase = None;
        let mut dialog = false;
        let call_id = req
            .headers
            .call_id()
            .ok()
            .flatten()
            .map(|c| c.0)
            .unwrap_or_default();
        loop {
            let Some(first) = req.headers.get(&HeaderName::Route).cloned() else {
                break;
            };
            let value = first.value().map_err(|_| ())?;
            let list = NameAddr::parse_list(&value, false).ok_or(())?;
            let Some(Uri::Sip(u)) = list.first().map(|r| &r.uri) else {
                break;
            };
            if !self.is_us(u) {
                break;
            }
            if let Some(p) = u.param("cpm").and_then(|p| p.value.clone()) {
                phase = Some(p);
            }
            dialog |= self.has_dialog_token(u, &call_id);
            popped += 1;
            let rest: Vec<String> = list.iter().skip(1).map(ToString::to_string).collect();
            let replacement =
                (!rest.is_empty()).then(|| Header::new(HeaderName::Route, &rest.join(", ")));
            replace_first(&mut req.headers, &HeaderName::Route, replacement);
        }
        Ok((popped, phase, dialog))
    }

    /// Whether the URI names one of our domains (a user there is ours to locate).
    fn is_local_target(&self, uri: &SipUri) -> bool {
        match &uri.host {
            cpm_sip::Host::Domain(d) if self.cfg.is_local_domain(d) => true,
            _ => self.is_us(uri),
        }
    }

    fn local_aor(&self, uri: &SipUri) -> Option<String> {
        let user = uri.user.as_deref()?;
        let domain = match &uri.host {
            cpm_sip::Host::Domain(d) if self.cfg.is_local_domain(d) => normalize_domain(d),
            _ if self.is_us(uri) => self.cfg.default_domain().to_owned(),
            _ => return None,
        };
        let user = String::from_utf8_lossy(&cpm_sip::unescape(user)).into_owned();
        Some(format!("{user}@{domain}"))
    }

    fn our_uri(&self, params: &str) -> String {
        format!("<sip:{};lr{params}>", self.cfg.advertised)
    }

    /// RFC 3261 16.3 (validation) and 16.4 (route information), then identity, then targets.
    fn route_request(&mut self, now: Instant, key: ServerKey, mut req: Request, peer: Peer) {
        let initial = req
            .headers
            .to()
            .ok()
            .flatten()
            .is_some_and(|t| t.tag().is_none());
        // 16.4: strict router upstream (Request-URI is a URI we put in Record-Route).
        if let Uri::Sip(u) = &req.uri
            && u.user.is_none()
            && self.is_us(u)
            && req.headers.contains(&HeaderName::Route)
            && let Ok(routes) = req.headers.route()
            && let Some(last) = routes.last()
        {
            req.uri = last.uri.clone();
            let mut all: Vec<String> = routes.iter().map(ToString::to_string).collect();
            all.pop();
            req.headers.remove_all(&HeaderName::Route);
            for r in all {
                req.headers.push(Header::new(HeaderName::Route, &r));
            }
        }
        let mut ctx = RouteCtx {
            // The Participating Function is our own application server: inside the trust domain.
            trusted: self.cfg.is_trusted(peer.addr.ip())
                || self.cfg.participating_function == Some(peer.addr),
            ..RouteCtx::default()
        };
        // Loose routing: pop every Route that names us.
        match self.pop_own_routes(&mut req) {
            Ok((popped, phase, dialog)) => {
                ctx.routed_via_us = popped > 0;
                ctx.phase = phase;
                ctx.dialog = dialog && !initial;
            }
            Err(()) => {
                return self.reply_status(now, &key, &req, StatusCode::BAD_REQUEST, "Bad Route");
            }
        }
        let routed = req.headers.contains(&HeaderName::Route);

        // 16.3 step 3 and 6: Max-Forwards, Proxy-Require.
        let to_registrar = req.method == Method::Register
            && !routed
            && matches!(&req.uri, Uri::Sip(u) if self.is_local_target(u));
        if !to_registrar && req.headers.max_forwards().ok().flatten() == Some(0) {
            return self.reply_status(now, &key, &req, StatusCode::TOO_MANY_HOPS, "Too Many Hops");
        }
        let proxy_require = req.headers.proxy_require().unwrap_or_default();
        if !proxy_require.is_empty() {
            return self.bad_extension(now, &key, &req, &proxy_require);
        }
        ctx.initial = initial;
        ctx.hash = self.request_hash(&req, &ctx);
        // 16.3 step 4: loop detection.
        if self.is_loop(&req, &ctx) {
            return self.reply_status(now, &key, &req, StatusCode::LOOP_DETECTED, "Loop Detected");
        }
        // 16.3 step 2: URI scheme.
        match &req.uri {
            Uri::Sip(_) => {}
            Uri::Tel(_) => {
                return self.reply_status(
                    now,
                    &key,
                    &req,
                    StatusCode::NOT_FOUND,
                    "No Route For tel URI",
                );
            }
            _ => {
                return self.reply_status(
                    now,
                    &key,
                    &req,
                    StatusCode::UNSUPPORTED_URI_SCHEME,
                    "Unsupported URI Scheme",
                );
            }
        }
        if to_registrar {
            return self.on_register(now, key, req, peer, None);
        }
        if let Uri::Sip(u) = &req.uri
            && u.user.is_none()
            && self.is_us(u)
            && !routed
        {
            return self.answer_for_self(now, &key, &req);
        }
        if !ctx.trusted {
            // RFC 3325: only the trust domain asserts identities.
            req.headers.remove_all(&HeaderName::PAssertedIdentity);
        }
        // A trusted peer (a P-CSCF or SBC in front) asserts who sends: the originating
        // services run for that user as for one of our own clients (TS 24.229 5.4.3.2). Not
        // for the PF itself, whose requests are already served.
        if initial
            && ctx.trusted
            && self.cfg.participating_function != Some(peer.addr)
            && let Some(aor) = req.headers.p_asserted_identity().ok().and_then(|ids| {
                ids.into_iter()
                    .find_map(|a| a.uri.as_sip().and_then(|u| self.local_aor(u)))
            })
        {
            ctx.origin = Some(aor);
        }
        if !ctx.trusted {
            match self.sender_verdict(now, &req, &peer, &ctx, initial) {
                SenderVerdict::Origin(aor) => ctx.origin = Some(aor),
                SenderVerdict::Pass => {}
                SenderVerdict::Challenge => {
                    return self.authenticate_request(now, key, req, peer, ctx);
                }
                SenderVerdict::Refuse { reason, relay } => {
                    if relay {
                        self.stats.relay_refused += 1;
                    } else {
                        self.stats.sender_refused += 1;
                    }
                    return self.reply_status(now, &key, &req, StatusCode::FORBIDDEN, reason);
                }
            }
        }
        self.continue_request(now, key, req, peer, ctx);
    }

    /// RFC 3261 16.3 step 4: a request that carries a Via of ours whose branch hash equals the
    /// one we would compute now has looped; a different hash is a spiral.
    fn is_loop(&self, req: &Request, ctx: &RouteCtx) -> bool {
        // Most requests carry no Via of ours at all: look at the raw bytes before parsing.
        let ours = |raw: &[u8]| {
            raw.windows(BRANCH_PREFIX.len())
                .any(|w| w == BRANCH_PREFIX.as_bytes())
        };
        if !req.headers.get_all(&HeaderName::Via).any(|h| ours(h.raw())) {
            return false;
        }
        let Ok(vias) = req.headers.via() else {
            return false;
        };
        let hash = format!("{:016x}", ctx.hash);
        vias.iter().any(|v| {
            v.branch()
                .and_then(|b| b.strip_prefix(BRANCH_PREFIX))
                .is_some_and(|rest| rest.starts_with(&hash))
                && v.port.unwrap_or(5060) == self.cfg.advertised.port()
        })
    }

    /// The branch hash of RFC 3261 16.6 step 8: Request-URI, To tag, From tag, Call-ID, CSeq
    /// number, the Route set, and the CPM routing phase.
    fn request_hash(&self, req: &Request, ctx: &RouteCtx) -> u64 {
        let h = &req.headers;
        let to_tag = h
            .to()
            .ok()
            .flatten()
            .and_then(|t| t.tag().map(str::to_owned))
            .unwrap_or_default();
        let from_tag = h
            .from()
            .ok()
            .flatten()
            .and_then(|t| t.tag().map(str::to_owned))
            .unwrap_or_default();
        let call_id = h.call_id().ok().flatten().map(|c| c.0).unwrap_or_default();
        let cseq = h.cseq().ok().flatten().map(|c| c.seq).unwrap_or_default();
        let routes: Vec<Bytes> = h
            .get_all(&HeaderName::Route)
            .map(|r| r.raw().clone())
            .collect();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(8 + routes.len());
        let ruri = req.uri.to_string();
        let cseq = cseq.to_string();
        parts.extend([
            ruri.as_bytes(),
            to_tag.as_bytes(),
            from_tag.as_bytes(),
            call_id.as_bytes(),
            cseq.as_bytes(),
            ctx.phase.as_deref().unwrap_or("").as_bytes(),
        ]);
        parts.extend(routes.iter().map(|r| &r[..]));
        fnv(&parts)
    }

    fn answer_for_self(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        if req.method == Method::Options {
            let tag = self.tag();
            let mut resp = response_to(req, StatusCode::OK, Some(&tag));
            resp.headers.push(Header::new(
                HeaderName::Allow,
                "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE, PRACK",
            ));
            resp.headers.push(Header::new(
                HeaderName::Accept,
                "application/sdp, message/cpim",
            ));
            return self.reply(now, key, resp);
        }
        let tag = self.tag();
        let mut resp = response_to(req, StatusCode::METHOD_NOT_ALLOWED, Some(&tag));
        resp.headers
            .push(Header::new(HeaderName::Allow, "OPTIONS, REGISTER"));
        self.reply(now, key, resp);
    }

    fn challenge(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Request,
        proxy: bool,
        stale: bool,
    ) {
        self.stats.auth_challenges += 1;
        let realm = self.realm_for(req);
        let salt = self.random();
        let nonce = self.nonce_key.make_nonce(self.unix(now), &realm, salt);
        let (status, name) = if proxy {
            (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                HeaderName::ProxyAuthenticate,
            )
        } else {
            (StatusCode::UNAUTHORIZED, HeaderName::WwwAuthenticate)
        };
        let tag = self.tag();
        let mut resp = response_to(req, status, Some(&tag));
        // RFC 8760 2.4: one challenge per algorithm, in the configured order.
        for alg in self.cfg.digest_algorithms.clone() {
            resp.headers.push(Header::new(
                name.clone(),
                &digest::challenge(&realm, &nonce, alg, stale, None),
            ));
        }
        self.reply(now, key, resp);
    }

    /// The realm for a request: the local domain of the From (proxy auth) or To (REGISTER).
    fn realm_for(&self, req: &Request) -> String {
        let addr = if req.method == Method::Register {
            req.headers.to().ok().flatten()
        } else {
            req.headers.from().ok().flatten()
        };
        addr.and_then(|a| match a.uri {
            Uri::Sip(u) => match u.host {
                cpm_sip::Host::Domain(d) if self.cfg.is_local_domain(&d) => {
                    Some(d.to_ascii_lowercase())
                }
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_else(|| self.cfg.default_domain().to_owned())
    }

    /// Picks our credentials out of Authorization / Proxy-Authorization (ignoring other
    /// realms, RFC 3261 22.3) and checks the nonce. `Err(stale)` asks for a new challenge.
    fn credentials(
        &self,
        now: Instant,
        req: &Request,
        name: &HeaderName,
    ) -> Result<Credentials, bool> {
        let realm = self.realm_for(req);
        for h in req.headers.get_all(name) {
            let Ok(v) = h.value() else { continue };
            let Ok(c) = Credentials::parse(&v) else {
                continue;
            };
            if !c.realm.eq_ignore_ascii_case(&realm) {
                continue;
            }
            return match self.nonce_key.check_nonce(
                &c.nonce,
                &realm,
                self.unix(now),
                self.cfg.nonce_ttl.as_secs(),
            ) {
                NonceCheck::Valid => Ok(c),
                NonceCheck::Stale => Err(true),
                NonceCheck::Invalid => Err(false),
            };
        }
        Err(false)
    }

    fn park(&mut self, parked: Parked, username: String, realm: String) {
        let query = QueryId(self.next_query);
        self.next_query += 1;
        self.parked.insert(query, parked);
        self.outputs.push_back(Output::LookupUser {
            query,
            username,
            realm,
        });
    }

    fn on_register(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        peer: Peer,
        user: Option<UserRecord>,
    ) {
        // RFC 3261 10.3 step 2: Require.
        let unsupported: Vec<String> = req
            .headers
            .require()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| {
                !["path", "outbound", "gruu"]
                    .iter()
                    .any(|s| t.eq_ignore_ascii_case(s))
            })
            .collect();
        if !unsupported.is_empty() {
            return self.bad_extension(now, &key, &req, &unsupported);
        }
        // Step 5: To must be a SIP/SIPS address-of-record of ours.
        let Some(to_aor) = req.headers.to().ok().flatten().and_then(|t| match &t.uri {
            Uri::Sip(u) => self.local_aor(u),
            _ => None,
        }) else {
            return self.reply_status(
                now,
                &key,
                &req,
                StatusCode::BAD_REQUEST,
                "To Must Be A Local SIP AOR",
            );
        };
        let trusted = self.cfg.is_trusted(peer.addr.ip());
        let authed_aor = if trusted {
            match user {
                Some(u) => u.aor,
                None => {
                    let realm = self.realm_for(&req);
                    return self.park(
                        Parked {
                            key,
                            req,
                            peer,
                            purpose: Purpose::TargetExists,
                            ctx: RouteCtx {
                                trusted,
                                ..RouteCtx::default()
                            },
                        },
                        to_aor,
                        realm,
                    );
                }
            }
        } else {
            // A user whose password is being guessed is closed to new devices for a while;
            // its registered ones keep refreshing.
            if user.is_none() && self.user_blocked(now, &key, &req, &peer, &to_aor) {
                return;
            }
            // Step 3: authenticate (RFC 3261 22.4; RFC 8760).
            let creds = match self.credentials(now, &req, &HeaderName::Authorization) {
                Ok(c) => c,
                Err(stale) => return self.challenge(now, &key, &req, false, stale),
            };
            match user {
                None => {
                    let (username, realm) = (creds.username.clone(), creds.realm.clone());
                    return self.park(
                        Parked {
                            key,
                            req,
                            peer,
                            purpose: Purpose::RegisterAuth(creds),
                            ctx: RouteCtx::default(),
                        },
                        username,
                        realm,
                    );
                }
                Some(u) => u.aor,
            }
        };
        // Step 4: the authenticated user may only register its own address.
        if !authed_aor.eq_ignore_ascii_case(&to_aor) {
            return self.reply_status(now, &key, &req, StatusCode::FORBIDDEN, "Not Your Address");
        }
        let before: Vec<String> = self
            .registrar
            .lookup(&to_aor, now)
            .filter(|b| b.is_durable())
            .map(Binding::key)
            .collect();
        match self
            .registrar
            .apply(now, &to_aor, &req, peer, &self.cfg.registrar)
        {
            Ok(bindings) => {
                self.persist_bindings(now, &to_aor, &before, &bindings);
                self.stats.registrations_accepted += 1;
                let resp = self.register_ok(now, &req, &bindings);
                self.reply(now, &key, resp);
                let expires = bindings.iter().map(|b| b.remaining(now)).max();
                if let Some(expires) = expires.filter(|e| *e > 0) {
                    self.third_party_register(now, &to_aor, expires);
                }
            }
            Err(e) => {
                let tag = self.tag();
                let mut resp = response_to(&req, e.status, Some(&tag));
                resp.reason = e.reason.to_owned();
                if let Some(m) = e.min_expires {
                    resp.headers
                        .push(Header::new(HeaderName::MinExpires, &m.to_string()));
                }
                self.reply(now, &key, resp);
            }
        }
    }

    /// Emits the store operations that make the store's bindings of `aor` equal to
    /// `bindings` (the durable ones), given the keys it held before.
    fn persist_bindings(
        &mut self,
        now: Instant,
        aor: &str,
        before: &[String],
        bindings: &[Binding],
    ) {
        let unix_ms = self.unix_ms(now);
        let durable: Vec<&Binding> = bindings.iter().filter(|b| b.is_durable()).collect();
        for key in before {
            if !durable.iter().any(|b| b.key() == *key) {
                self.outputs.push_back(Output::Persist(Box::new(
                    cpm_store::StoreOp::RemoveBinding {
                        aor: aor.to_owned(),
                        key: key.clone(),
                    },
                )));
            }
        }
        for b in durable {
            self.outputs
                .push_back(Output::Persist(Box::new(cpm_store::StoreOp::SaveBinding(
                    b.to_record(aor, now, unix_ms),
                ))));
        }
    }

    /// Puts back the bindings a previous run stored (`LoadBindings`), and tells the
    /// Participating Function about each user that has one again, so that deferred messages
    /// go out without waiting for the devices to refresh. `unix_ms` is the wall clock at
    /// `now`. Records that do not parse or have lapsed are skipped; returns how many came back.
    pub fn restore_bindings(
        &mut self,
        now: Instant,
        unix_ms: u64,
        records: &[cpm_store::BindingRecord],
    ) -> usize {
        let mut restored = 0;
        let mut users: Vec<(String, u64)> = Vec::new();
        for r in records {
            if let Some(b) = Binding::from_record(r, now, unix_ms) {
                let left = b.remaining(now);
                self.registrar.restore(&r.aor, b);
                restored += 1;
                match users.iter_mut().find(|(a, _)| *a == r.aor) {
                    Some((_, l)) => *l = (*l).max(left),
                    None => users.push((r.aor.clone(), left)),
                }
            }
        }
        for (aor, left) in users {
            self.third_party_register(now, &aor, left);
        }
        self.drain_tx(now);
        restored
    }

    /// Tells the Participating Function that a user registered (3GPP TS 24.229 5.4.1.7,
    /// third-party REGISTER from the S-CSCF to the AS): the PF then delivers the user's deferred
    /// messages. Sent on every successful registration or refresh that leaves the user with a
    /// binding; its answer only ends the client transaction.
    fn third_party_register(&mut self, now: Instant, aor: &str, expires: u64) {
        let Some(pf) = self.cfg.participating_function else {
            return;
        };
        let branch = format!("{BRANCH_PREFIX}3p-{:016x}", self.random());
        let tag = self.tag();
        let call_id = format!("{:016x}-3p@{}", self.random(), self.cfg.advertised);
        let me = self.cfg.advertised;
        let transport = self.cfg.pf_transport.as_via_token();
        let text = format!(
            "REGISTER sip:{pf} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {me};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{me}>;tag={tag}\r\n\
             To: <sip:{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:{me}>\r\n\
             Expires: {expires}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let Ok(Message::Request(req)) =
            Message::parse_datagram(Bytes::from(text), &cpm_sip::Limits::default())
        else {
            // Only an AOR that does not fit a SIP URI gets here; the PF then learns of the
            // user at its next registration.
            return;
        };
        let dest = Peer {
            transport: self.cfg.pf_transport,
            addr: pf,
            conn: None,
        };
        if self.tx.send_request(now, req, dest).is_ok() {
            self.stats.third_party_registers += 1;
        }
    }

    /// Step 8: 200 with every current binding, Date, and Path/Service-Route (RFC 3327, 3608).
    fn register_ok(&mut self, now: Instant, req: &Request, bindings: &[Binding]) -> Response {
        let tag = self.tag();
        let mut resp = response_to(req, StatusCode::OK, Some(&tag));
        for b in bindings {
            let mut c = b.contact.clone();
            c.params
                .push(Param::new("expires", Some(b.remaining(now).to_string())));
            resp.headers
                .push(Header::new(HeaderName::Contact, &c.to_string()));
        }
        for p in req.headers.get_all(&HeaderName::Path) {
            resp.headers.push(p.clone());
        }
        let route = self.our_uri("");
        resp.headers
            .push(Header::new(HeaderName::ServiceRoute, &route));
        resp.headers
            .push(Header::new(HeaderName::Date, &http_date(self.unix(now))));
        resp
    }

    fn authenticate_request(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        peer: Peer,
        ctx: RouteCtx,
    ) {
        let from = req.headers.from().ok().flatten();
        if let Some(Sender::Local(aor)) = from.map(|f| self.cfg.sender(&f.uri))
            && self.user_blocked(now, &key, &req, &peer, &aor)
        {
            return;
        }
        let creds = match self.credentials(now, &req, &HeaderName::ProxyAuthorization) {
            Ok(c) => c,
            Err(stale) => return self.challenge(now, &key, &req, true, stale),
        };
        let (username, realm) = (creds.username.clone(), creds.realm.clone());
        self.park(
            Parked {
                key,
                req,
                peer,
                purpose: Purpose::ProxyAuth(creds),
                ctx,
            },
            username,
            realm,
        );
    }

    fn on_user(&mut self, now: Instant, query: QueryId, user: Option<UserRecord>) {
        let Some(p) = self.parked.remove(&query) else {
            return;
        };
        // The transaction may have ended while we waited (CANCEL, timer).
        if !self.tx.is_proceeding(&p.key) {
            return;
        }
        let Parked {
            key,
            mut req,
            peer,
            purpose,
            mut ctx,
        } = p;
        match purpose {
            Purpose::RegisterAuth(creds) | Purpose::ProxyAuth(creds) => {
                let is_register = req.method == Method::Register;
                let ok = user.as_ref().is_some_and(|u| {
                    let ha1 = match creds.algorithm {
                        Algorithm::Sha256 => &u.ha1_sha256,
                        _ => &u.ha1_md5,
                    };
                    // The digest signs a URI: this request's Request-URI, or (as SIPp and
                    // some UAs do) the address of the server it was sent to. Any other URI is
                    // a credential lifted from another request.
                    let same_uri = match (Uri::parse(&creds.uri), &req.uri) {
                        (Ok(Uri::Sip(a)), Uri::Sip(b)) => {
                            a.equivalent(b) || (a.user.is_none() && self.is_local_target(&a))
                        }
                        (Ok(a), b) => &a == b,
                        (Err(_), _) => false,
                    };
                    same_uri && digest::verify(&creds, req.method.as_str(), ha1)
                });
                // Wrong user and wrong password get the same fresh challenge (no enumeration),
                // and count the same towards a block.
                let Some(u) = user.filter(|_| ok) else {
                    self.auth_failed(now, &peer, &creds);
                    return self.challenge(now, &key, &req, !is_register, false);
                };
                // Right credentials seen before are a replay: a fresh challenge, never a 2xx.
                if !self.fresh_nonce(now, &peer, &creds) {
                    return self.challenge(now, &key, &req, !is_register, true);
                }
                if is_register {
                    return self.on_register(now, key, req, peer, Some(u));
                }
                // The authenticated user must be the From user.
                let from_aor = match req.headers.from().ok().flatten() {
                    Some(f) => match self.cfg.sender(&f.uri) {
                        Sender::Local(aor) => Some(aor),
                        _ => None,
                    },
                    None => None,
                };
                if from_aor
                    .as_deref()
                    .is_none_or(|f| !f.eq_ignore_ascii_case(&u.aor))
                {
                    return self.reply_status(
                        now,
                        &key,
                        &req,
                        StatusCode::FORBIDDEN,
                        "From Is Not You",
                    );
                }
                // Our own credentials are consumed here (RFC 3261 22.3 allows it).
                req.headers.remove_all(&HeaderName::ProxyAuthorization);
                ctx.origin = Some(u.aor);
                self.continue_request(now, key, req, peer, ctx);
            }
            Purpose::TermUserExists => {
                if user.is_none() {
                    return self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Not Found");
                }
                ctx.target_exists = true;
                self.continue_request(now, key, req, peer, ctx);
            }
            Purpose::TargetExists => {
                if req.method == Method::Register {
                    return match user {
                        Some(u) => self.on_register(now, key, req, peer, Some(u)),
                        None => {
                            self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Not Found")
                        }
                    };
                }
                let (status, reason) = if user.is_some() {
                    (
                        StatusCode::TEMPORARILY_UNAVAILABLE,
                        "Temporarily Unavailable",
                    )
                } else {
                    (StatusCode::NOT_FOUND, "Not Found")
                };
                self.reply_status(now, &key, &req, status, reason);
            }
        }
    }

    /// After identity: CPM routing, then target determination and forwarding.
    fn continue_request(
        &mut self,
        now: Instant,
        key: ServerKey,
        mut req: Request,
        peer: Peer,
        ctx: RouteCtx,
    ) {
        if let Some(aor) = &ctx.origin
            && !req.headers.contains(&HeaderName::PAssertedIdentity)
        {
            req.headers.push(Header::new(
                HeaderName::PAssertedIdentity,
                &format!("<sip:{aor}>"),
            ));
            req.headers.remove_all(&HeaderName::PPreferredIdentity);
        }
        let initial = ctx.initial;
        let routed = req.headers.contains(&HeaderName::Route);
        let local_target = match &req.uri {
            Uri::Sip(u) => self.local_aor(u),
            _ => None,
        };
        // CPM enabler usage indication routing (outline 5.2.3.2).
        if let Some(pf) = self.cfg.participating_function
            && initial
            && !routed
            // A new request the PF itself originates (no phase of ours) is already served.
            && (pf != peer.addr || ctx.phase.is_some())
            && (self.cfg.pf_methods.is_empty() || self.cfg.pf_methods.contains(&req.method))
            && is_cpm(&req)
        {
            // RFC 6050: the network asserts the service the user asked for.
            if ctx.origin.is_some() {
                let preferred = req.headers.p_preferred_service().unwrap_or_default();
                if !preferred.is_empty() {
                    req.headers.remove_all(&HeaderName::PPreferredService);
                    req.headers
                        .set(HeaderName::PAssertedService, &preferred.join(","));
                }
            }
            let phase = if ctx.origin.is_some() && ctx.phase.is_none() {
                Some("orig")
            } else if local_target.is_some() && ctx.phase.as_deref() != Some("term") {
                Some("term")
            } else {
                None
            };
            if let Some(phase) = phase {
                // Only an existing user has a PF to serve it; a user with a binding exists.
                if phase == "term"
                    && !ctx.target_exists
                    && let Some(aor) = &local_target
                    && self.registrar.lookup(aor, now).next().is_none()
                {
                    let realm = aor
                        .rsplit_once('@')
                        .map_or_else(String::new, |(_, d)| d.to_owned());
                    let aor = aor.clone();
                    return self.park(
                        Parked {
                            key,
                            req,
                            peer,
                            purpose: Purpose::TermUserExists,
                            ctx,
                        },
                        aor,
                        realm,
                    );
                }
                let target = Target {
                    ruri: req.uri.clone(),
                    dest: Peer {
                        transport: self.cfg.pf_transport,
                        addr: pf,
                        conn: None,
                    },
                    routes: vec![
                        format!("<sip:{pf};lr>"),
                        self.our_uri(&format!(";cpm={phase}")),
                    ],
                };
                return self.forward(now, key, req, vec![target], &ctx);
            }
        }
        // Target determination (RFC 3261 16.5).
        if routed {
            let next = req.headers.route().ok().and_then(|r| r.into_iter().next());
            let dest = next.as_ref().and_then(|n| self.resolve(&n.uri));
            return match dest {
                Some(dest) if !self.may_send(&ctx, &dest) => {
                    self.stats.relay_refused += 1;
                    self.reply_status(now, &key, &req, StatusCode::FORBIDDEN, "Route Not Allowed")
                }
                Some(dest) => {
                    let target = Target {
                        ruri: req.uri.clone(),
                        dest,
                        routes: Vec::new(),
                    };
                    self.forward(now, key, req, vec![target], &ctx)
                }
                None => self.reply_status(
                    now,
                    &key,
                    &req,
                    StatusCode::NOT_FOUND,
                    "No Route To Next Hop",
                ),
            };
        }
        if let Some(aor) = local_target {
            let required = required_services(&req);
            let targets: Vec<Target> = self
                .registrar
                .lookup(&aor, now)
                .filter(|b| accepts(b, &required))
                .map(|b| Target {
                    ruri: b.contact.uri.clone(),
                    dest: self.binding_destination(b),
                    routes: b.path.clone(),
                })
                .collect();
            if targets.is_empty() {
                let realm = aor
                    .rsplit_once('@')
                    .map_or_else(String::new, |(_, d)| d.to_owned());
                return self.park(
                    Parked {
                        key,
                        req,
                        peer,
                        purpose: Purpose::TargetExists,
                        ctx,
                    },
                    aor,
                    realm,
                );
            }
            return self.forward(now, key, req, targets, &ctx);
        }
        let Uri::Sip(u) = &req.uri else {
            return self.reply_status(
                now,
                &key,
                &req,
                StatusCode::UNSUPPORTED_URI_SCHEME,
                "Unsupported URI Scheme",
            );
        };
        // No open relay: only a local user, the trust domain or a dialog of ours may send to
        // other domains.
        let may_relay = ctx.origin.is_some() || ctx.trusted || ctx.dialog;
        let peer_domain = match &u.host {
            cpm_sip::Host::Domain(d) => self
                .cfg
                .peer_domains
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(d))
                .map(|(_, a)| *a),
            _ => None,
        };
        match peer_domain {
            Some(addr) if may_relay => {
                let target = Target {
                    ruri: req.uri.clone(),
                    dest: Peer::udp(addr),
                    routes: Vec::new(),
                };
                self.forward(now, key, req, vec![target], &ctx)
            }
            Some(_) => {
                self.stats.relay_refused += 1;
                self.reply_status(now, &key, &req, StatusCode::FORBIDDEN, "Relaying Denied")
            }
            // In-dialog requests that came along our Record-Route go to the remote target
            // (its Contact); without a route through us they are not ours to relay (this is
            // how Kamailio's reference configuration answers them too).
            None if ctx.dialog => match self.resolve(&req.uri) {
                Some(dest) => {
                    let target = Target {
                        ruri: req.uri.clone(),
                        dest,
                        routes: Vec::new(),
                    };
                    self.forward(now, key, req, vec![target], &ctx)
                }
                None => self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Not Found"),
            },
            None if !initial => {
                self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Not Here")
            }
            None => self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Domain Not Served"),
        }
    }

    /// Where a request for a registered device goes: over its own connection when it
    /// registered over a stream (connection reuse) or as an RFC 5626 outbound flow (`reg-id`);
    /// otherwise to its Contact URI (RFC 3261 16.5), falling back to the flow's address for
    /// names we cannot resolve.
    fn binding_destination(&self, b: &Binding) -> Peer {
        if b.flow.conn.is_some() || b.reg_id.is_some() {
            return b.flow;
        }
        self.resolve(&b.contact.uri).unwrap_or(b.flow)
    }

    /// The transport address of a URI: IP literals (and `localhost`), our peer domains, with
    /// the `transport` parameter. Other names would need DNS (RFC 3263), not done yet.
    fn resolve(&self, uri: &Uri) -> Option<Peer> {
        let Uri::Sip(u) = uri else { return None };
        let transport = match u.param("transport").and_then(|p| p.value.as_deref()) {
            Some(t) => TransportKind::from_via_token(t)?,
            None => TransportKind::Udp,
        };
        let port = u.port.unwrap_or(5060);
        let ip = match &u.host {
            cpm_sip::Host::Ipv4(a) => IpAddr::V4(*a),
            cpm_sip::Host::Ipv6(a) => a.parse().ok()?,
            cpm_sip::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
                IpAddr::V4(core::net::Ipv4Addr::LOCALHOST)
            }
            cpm_sip::Host::Domain(d) => {
                let addr = self
                    .cfg
                    .peer_domains
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(d))
                    .map(|(_, a)| *a)?;
                return Some(Peer {
                    transport,
                    addr,
                    conn: None,
                });
            }
        };
        let addr = SocketAddr::new(ip, port);
        is_sendable(&addr).then_some(Peer {
            transport,
            addr,
            conn: None,
        })
    }

    /// RFC 3261 16.6: copy, Request-URI, Max-Forwards, Record-Route, Route, Via; one client
    /// transaction per target, all in parallel.
    fn forward(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        targets: Vec<Target>,
        ctx: &RouteCtx,
    ) {
        let hash = ctx.hash;
        let initial = ctx.initial;
        let record_route = initial
            && matches!(
                req.method,
                Method::Invite | Method::Subscribe | Method::Refer
            );
        let invite = req.method == Method::Invite;
        let dialog_token = if record_route {
            let call_id = req.headers.call_id().ok().flatten().map(|c| c.0);
            self.dialog_token(&call_id.unwrap_or_default())
        } else {
            String::new()
        };
        let mut fork = Fork {
            request: Some(req.clone()),
            invite,
            branches: Vec::new(),
            pending: 0,
            best: None,
            answered: false,
            cancelled: false,
            done_at: None,
        };
        let max_forwards = req
            .headers
            .max_forwards()
            .ok()
            .flatten()
            .map_or(70, |m| m.saturating_sub(1));
        for (i, t) in targets.into_iter().enumerate() {
            let mut out = req.clone();
            out.uri = t.ruri;
            out.headers
                .set(HeaderName::MaxForwards, &max_forwards.to_string());
            if record_route {
                let rr = format!(
                    "<sip:{};transport={};lr;{DIALOG_PARAM}={}>",
                    self.cfg.advertised,
                    t.dest.transport.as_via_token().to_ascii_lowercase(),
                    dialog_token
                );
                out.headers
                    .push_front(Header::new(HeaderName::RecordRoute, &rr));
            }
            for r in t.routes.iter().rev() {
                out.headers.push_front(Header::new(HeaderName::Route, r));
            }
            let salt = self.random() & 0xffff;
            let via = format!(
                "SIP/2.0/{} {};branch={BRANCH_PREFIX}{hash:016x}-{i}{salt:x}",
                t.dest.transport.as_via_token(),
                self.cfg.advertised
            );
            out.headers.push_front(Header::new(HeaderName::Via, &via));
            // Keep the header order readable: our Via first, then the rest.
            match self.tx.send_request(now, out, t.dest) {
                Ok(ck) => {
                    self.stats.requests_forwarded += 1;
                    if req.method == Method::Message {
                        self.stats.messages_forwarded += 1;
                    }
                    self.branch_fork.insert(ck.clone(), key.clone());
                    fork.branches.push(ck);
                    fork.pending += 1;
                }
                Err(_) => continue,
            }
        }
        if fork.pending == 0 {
            return self.reply_status(
                now,
                &key,
                &req,
                StatusCode::SERVER_INTERNAL_ERROR,
                "No Branch Sent",
            );
        }
        self.forks.insert(key, fork);
    }

    fn on_response(&mut self, now: Instant, mut resp: Response) {
        self.stats.responses_received += 1;
        match self.tx.handle_response(now, &resp) {
            ResponseDisposition::Pass(ckey) => {
                if !pop_top_via(&mut resp.headers) || !resp.headers.contains(&HeaderName::Via) {
                    return;
                }
                if resp.status.is_provisional() {
                    if resp.status == StatusCode::TRYING {
                        return;
                    }
                    if let Some(server) = self.branch_fork.get(&ckey).cloned() {
                        let _ = self.tx.respond(now, &server, &resp);
                    }
                    return;
                }
                self.branch_final(now, &ckey, resp, false);
            }
            ResponseDisposition::Absorbed => {}
            // RFC 6026 keeps 2xx retransmissions matched (the Accepted state): a response with
            // no client transaction is not one we must pass on, and forwarding it to whatever
            // its second Via names would relay for anyone who writes a Via of ours.
            ResponseDisposition::Stray => {}
        }
    }

    /// A branch got a final response (or timed out): RFC 3261 16.7 steps 4-10.
    fn branch_final(&mut self, now: Instant, ckey: &ClientKey, resp: Response, timeout: bool) {
        let Some(server) = self.branch_fork.get(ckey).cloned() else {
            return;
        };
        let Some(fork) = self.forks.get_mut(&server) else {
            return;
        };
        if resp.status.is_success() {
            // 2xx (and its retransmissions from other forks) go upstream at once.
            let first = !fork.answered;
            fork.answered = true;
            if first {
                fork.pending = fork.pending.saturating_sub(1);
            }
            let (invite, branches) = (fork.invite, fork.branches.clone());
            let _ = self.tx.respond(now, &server, &resp);
            if invite && first {
                for b in branches.iter().filter(|b| *b != ckey) {
                    self.tx.cancel(now, b);
                }
            }
            self.finish_fork_if_done(now, &server);
            return;
        }
        if !timeout || fork.pending > 0 {
            fork.pending = fork.pending.saturating_sub(1);
        }
        let better = match &fork.best {
            None => true,
            Some(b) => rank(resp.status) < rank(b.status),
        };
        let six = resp.status.class() == 6;
        if better {
            fork.best = Some(resp);
        }
        if six && fork.invite && !fork.cancelled {
            fork.cancelled = true;
            let branches = fork.branches.clone();
            for b in branches.iter().filter(|b| *b != ckey) {
                self.tx.cancel(now, b);
            }
        }
        self.finish_fork_if_done(now, &server);
    }

    fn finish_fork_if_done(&mut self, now: Instant, server: &ServerKey) {
        let Some(fork) = self.forks.get_mut(server) else {
            return;
        };
        if fork.pending > 0 || fork.done_at.is_some() {
            return;
        }
        fork.done_at = Some(now);
        if !fork.answered
            && let Some(mut best) = fork.best.take()
        {
            // 16.7 step 6: a 503 from downstream becomes 500 (it is not our overload).
            if best.status == StatusCode::SERVICE_UNAVAILABLE {
                best.status = StatusCode::SERVER_INTERNAL_ERROR;
                best.reason = "Server Internal Error".to_owned();
            }
            let _ = self.tx.respond(now, server, &best);
        }
        fork.request = None;
        if !fork.invite {
            // Nothing maps to a finished non-INVITE fork any more.
            if let Some(f) = self.forks.remove(server) {
                for b in f.branches {
                    self.branch_fork.remove(&b);
                }
            }
            return;
        }
        // Keep an INVITE fork a while: 2xx retransmissions still map to it (RFC 6026).
        let at = now + 64 * self.cfg.timers.t1 + Duration::from_secs(1);
        self.done_forks.push_back((at, server.clone()));
        if self.sweep_at.is_none() {
            self.sweep_at = Some(at);
        }
    }

    fn sweep(&mut self, now: Instant) {
        // `done_forks` is in deadline order: `now` only grows.
        while let Some((at, _)) = self.done_forks.front() {
            if *at > now {
                break;
            }
            let Some((_, key)) = self.done_forks.pop_front() else {
                break;
            };
            if let Some(f) = self.forks.remove(&key) {
                for b in f.branches {
                    self.branch_fork.remove(&b);
                }
            }
        }
        self.sweep_at = self.done_forks.front().map(|(at, _)| *at);
        // Parked queries whose transaction is gone are dropped too.
        let tx = &self.tx;
        self.parked.retain(|_, p| tx.is_proceeding(&p.key));
    }

    fn on_cancel(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        // RFC 3261 16.10: answer the CANCEL, then cancel every pending branch.
        let Some(invite_key) = self.tx.invite_for_cancel(key) else {
            return self.reply_status(
                now,
                key,
                req,
                StatusCode::CALL_DOES_NOT_EXIST,
                "Call/Transaction Does Not Exist",
            );
        };
        let ok = response_to(req, StatusCode::OK, None);
        self.reply(now, key, ok);
        match self.forks.get_mut(&invite_key) {
            Some(fork) => {
                fork.cancelled = true;
                let branches = fork.branches.clone();
                for b in &branches {
                    self.tx.cancel(now, b);
                }
            }
            None => {
                // Not forwarded yet (waiting for the user directory): answer 487 ourselves.
                self.parked.retain(|_, p| p.key != invite_key);
                let mut fake = req.clone();
                fake.method = Method::Invite;
                fake.headers.set(
                    HeaderName::CSeq,
                    &format!(
                        "{} INVITE",
                        req.headers.cseq().ok().flatten().map_or(0, |c| c.seq)
                    ),
                );
                let tag = self.tag();
                let resp = response_to(&fake, StatusCode::REQUEST_TERMINATED, Some(&tag));
                self.reply(now, &invite_key, resp);
            }
        }
    }

    /// ACK for a 2xx (and other requests outside transactions) is forwarded statelessly along
    /// its Route set or to its Request-URI (RFC 3261 16.11).
    ///
    /// The relay rule holds here too: an ACK goes where it names only inside a dialog of ours
    /// (our Record-Route's token), from the trust domain, to a known next hop, or to a
    /// registered device of a local user.
    fn forward_stateless_ack(&mut self, now: Instant, mut req: Request, peer: Peer) {
        let ctx = RouteCtx::default();
        let Ok((_, _, dialog)) = self.pop_own_routes(&mut req) else {
            return;
        };
        let allowed = dialog
            || self.cfg.is_trusted(peer.addr.ip())
            || self.cfg.participating_function == Some(peer.addr);
        let dest = match req.headers.route().ok().and_then(|r| r.into_iter().next()) {
            Some(next) => self
                .resolve(&next.uri)
                .filter(|d| allowed || self.cfg.is_known_next_hop(d)),
            None => match &req.uri {
                Uri::Sip(u) => match self.local_aor(u) {
                    Some(aor) => self
                        .registrar
                        .lookup(&aor, now)
                        .next()
                        .map(|b| self.binding_destination(b)),
                    // Not along our route and not for our users: not ours to relay.
                    None if allowed => self.resolve(&req.uri),
                    None => None,
                },
                _ => None,
            },
        };
        let Some(dest) = dest else {
            self.stats.relay_refused += 1;
            return;
        };
        let mf = req.headers.max_forwards().ok().flatten().unwrap_or(70);
        if mf == 0 {
            return;
        }
        req.headers
            .set(HeaderName::MaxForwards, &(mf - 1).to_string());
        // A stateless branch must be the same for retransmissions (RFC 3261 16.11).
        let hash = self.request_hash(&req, &ctx);
        let via = format!(
            "SIP/2.0/{} {};branch={BRANCH_PREFIX}{hash:016x}-a",
            dest.transport.as_via_token(),
            self.cfg.advertised
        );
        req.headers.push_front(Header::new(HeaderName::Via, &via));
        self.stats.requests_forwarded += 1;
        self.outputs.push_back(Output::Transmit(Transmit {
            peer: dest,
            payload: req.to_bytes(),
        }));
    }
}

/// Response preference for best-response selection (RFC 3261 16.7 step 6): 6xx first, then
/// the lowest class; within 4xx, 401/407/415/420/484 carry information and beat the rest;
/// 408 (our own timeout) and 503 come last.
fn rank(s: StatusCode) -> u32 {
    let code = u32::from(s.as_u16());
    match code {
        600..=699 => 0,
        300..=399 => 100 + code,
        401 | 407 | 415 | 420 | 484 => 200 + code,
        408 => 900,
        400..=499 => 300 + code,
        503 => 950,
        _ => 500 + code,
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
