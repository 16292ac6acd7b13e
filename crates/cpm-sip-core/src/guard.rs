//! Guards against abuse from the open internet, sans-IO: a digest nonce-count table that
//! refuses replayed credentials (RFC 7616 section 3.4), a throttle for failed authentications
//! per source address and per user with a growing back-off, and a per-source token bucket for
//! request floods.
//!
//! Each is a plain data structure with bounded memory: time comes in as `now`, decisions come
//! out as values, and the caller (the SIP/IP Core, the HTTP API) turns them into answers and
//! log lines. Every table is bounded; when one is full it forgets in the direction that keeps
//! the guard closed (a forgotten nonce is refused, a forgotten failure record is the oldest
//! unblocked one).

use core::hash::Hash;
use core::net::IpAddr;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use foldhash::fast::FixedState;

/// What [`NonceTracker::accept`] decided about one use of a nonce.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum NonceUse {
    /// First use of this nonce count: the credentials may be accepted.
    Fresh,
    /// The nonce count is not above the highest one accepted for this nonce: a replay of
    /// captured credentials (RFC 7616 section 3.4). Answer with a fresh challenge.
    Replayed,
    /// The nonce is older than what the table still remembers (it had to forget to stay
    /// bounded): treated as stale, so the client retries with a fresh nonce at once.
    Forgotten,
}

/// The nonce counts accepted per nonce, so that a captured `Authorization` header cannot be
/// used again (RFC 7616 section 3.4: "the server ... can detect replays" by the `nc` value).
///
/// Nonces stay stateless to issue ([`crate::digest::NonceKey`]); only nonces that carried
/// valid credentials are entered here, with the highest `nc` accepted. A request without
/// `qop` (the RFC 2069 form) has no `nc`: its nonce is good for one use. Entries leave when
/// their nonce is past its lifetime; when the table is full the oldest-issued nonce is
/// forgotten and every nonce issued at or before it is refused from then on, so forgetting
/// never lets a replay through.
#[derive(Debug)]
pub struct NonceTracker {
    capacity: usize,
    used: HashMap<String, u32, FixedState>,
    by_issue: BTreeSet<(u64, String)>,
    /// Nonces issued at or before this Unix second are refused.
    floor: Option<u64>,
}

impl NonceTracker {
    /// A table remembering at most `capacity` nonces.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            used: HashMap::with_hasher(FixedState::with_seed(seed)),
            by_issue: BTreeSet::new(),
            floor: None,
        }
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// Records one use of `nonce` (issued at `issued`, Unix seconds) with nonce count `nc`
    /// (the 8 hex digits of the credentials; `None` without `qop`), after its digest was
    /// verified. `now` and `ttl` (seconds) let expired entries go.
    pub fn accept(
        &mut self,
        nonce: &str,
        issued: u64,
        nc: Option<&str>,
        now: u64,
        ttl: u64,
    ) -> NonceUse {
        self.expire(now, ttl);
        if self.floor.is_some_and(|f| issued <= f) {
            return NonceUse::Forgotten;
        }
        // `Credentials::parse` checked the 8 hex digits; anything else counts as zero, which
        // is never above a count already accepted.
        let count = nc
            .and_then(|n| u32::from_str_radix(n, 16).ok())
            .unwrap_or(0);
        if let Some(highest) = self.used.get_mut(nonce) {
            if count <= *highest {
                return NonceUse::Replayed;
            }
            *highest = count;
            return NonceUse::Fresh;
        }
        self.used.insert(nonce.to_owned(), count);
        self.by_issue.insert((issued, nonce.to_owned()));
        while self.used.len() > self.capacity {
            let Some((at, oldest)) = self.by_issue.pop_first() else {
                break;
            };
            self.used.remove(&oldest);
            self.floor = Some(self.floor.map_or(at, |f| f.max(at)));
        }
        NonceUse::Fresh
    }

    fn expire(&mut self, now: u64, ttl: u64) {
        while let Some((at, _)) = self.by_issue.first() {
            if at.saturating_add(ttl) >= now {
                break;
            }
            if let Some((_, nonce)) = self.by_issue.pop_first() {
                self.used.remove(&nonce);
            }
        }
    }
}

/// Limits of an [`AuthThrottle`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ThrottleConfig {
    /// Failed authentications from one source address within `window` that start a block.
    pub max_source_failures: u32,
    /// Failed authentications for one user (from any source) within `window` that start a
    /// block of that user for new devices.
    pub max_user_failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// The first block; each further block of the same key doubles it.
    pub block: Duration,
    /// The longest block.
    pub max_block: Duration,
    /// At most this many sources and this many users are tracked.
    pub capacity: usize,
    /// While a key is blocked, at most one refusal report per this interval.
    pub report_interval: Duration,
}

impl Default for ThrottleConfig {
    /// 10 failures per source or 20 per user in 60 s block for 60 s, doubling up to an hour.
    fn default() -> Self {
        Self {
            max_source_failures: 10,
            max_user_failures: 20,
            window: Duration::from_secs(60),
            block: Duration::from_secs(60),
            max_block: Duration::from_secs(3600),
            capacity: 100_000,
            report_interval: Duration::from_secs(10),
        }
    }
}

/// A key of the throttle is blocked: refuse the request.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Blocked {
    /// When the block ends.
    pub until: Instant,
    /// Refusals since the last report, when this refusal should be reported (logged); at
    /// most one report per key per [`ThrottleConfig::report_interval`].
    pub report: Option<u64>,
}

/// Blocks that a failure started, to report.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct NewBlocks {
    /// The source address is now blocked for this long.
    pub source: Option<Duration>,
    /// The user is now blocked (for sources that are not its registered devices) this long.
    pub user: Option<Duration>,
}

/// Counters of an [`AuthThrottle`].
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct ThrottleStats {
    /// Failed authentications counted.
    pub failures: u64,
    /// Requests refused because their source or user was blocked.
    pub refused: u64,
    /// Blocks started (sources and users).
    pub blocks: u64,
    /// Sources blocked at the last [`AuthThrottle::sweep`].
    pub blocked_sources: u64,
    /// Users blocked at the last [`AuthThrottle::sweep`].
    pub blocked_users: u64,
}

/// Counts failed authentications per source address and per user; past a threshold within a
/// window the key is blocked for a back-off that doubles with every block, up to a maximum.
///
/// The caller asks [`AuthThrottle::check_source`] before any digest work, and
/// [`AuthThrottle::check_user`] for requests that do not come from one of the user's
/// registered devices (a guessing attack on a user must not cut off devices that are already
/// in). A wrong password and an unknown user are the same failure (no enumeration).
#[derive(Debug)]
pub struct AuthThrottle {
    cfg: ThrottleConfig,
    sources: Table<IpAddr>,
    users: Table<String>,
    stats: ThrottleStats,
}

impl AuthThrottle {
    /// A throttle with these limits; `seed` keys its hash maps.
    pub fn new(cfg: ThrottleConfig, seed: u64) -> Self {
        Self {
            cfg,
            sources: Table::new(seed),
            users: Table::new(seed ^ 0x5bd1_e995),
            stats: ThrottleStats::default(),
        }
    }

    /// The limits.
    pub fn config(&self) -> &ThrottleConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> ThrottleStats {
        self.stats
    }

    /// Whether requests from `ip` are refused now.
    pub fn check_source(&mut self, now: Instant, ip: IpAddr) -> Option<Blocked> {
        let blocked = self
            .sources
            .check(now, &source_key(ip), self.cfg.report_interval);
        if blocked.is_some() {
            self.stats.refused += 1;
        }
        blocked
    }

    /// Whether authentication as `user` (an address-of-record, lowercase) is refused now for
    /// a source that is not one of its registered devices.
    pub fn check_user(&mut self, now: Instant, user: &str) -> Option<Blocked> {
        let blocked = self
            .users
            .check(now, &user.to_owned(), self.cfg.report_interval);
        if blocked.is_some() {
            self.stats.refused += 1;
        }
        blocked
    }

    /// Counts one failed authentication from `ip` as `user`; returns the blocks it started.
    pub fn failure(&mut self, now: Instant, ip: IpAddr, user: &str) -> NewBlocks {
        self.stats.failures += 1;
        let c = self.cfg;
        let source = self
            .sources
            .fail(now, source_key(ip), c.max_source_failures, &c);
        let user = self
            .users
            .fail(now, user.to_owned(), c.max_user_failures, &c);
        self.stats.blocks += u64::from(source.is_some()) + u64::from(user.is_some());
        NewBlocks { source, user }
    }

    /// Forgets what no longer matters (unblocked keys quiet for `max_block`) and counts the
    /// keys blocked now. Call it every few seconds; it walks the tables.
    pub fn sweep(&mut self, now: Instant) {
        let quiet = self.cfg.max_block.max(self.cfg.window);
        self.stats.blocked_sources = self.sources.sweep(now, quiet);
        self.stats.blocked_users = self.users.sweep(now, quiet);
    }

    /// Whether anything is tracked (the caller need not sweep otherwise).
    pub fn is_empty(&self) -> bool {
        self.sources.map.is_empty() && self.users.map.is_empty()
    }
}

#[derive(Debug)]
struct Record {
    failures: u32,
    window_start: Instant,
    last_failure: Instant,
    blocked_until: Option<Instant>,
    /// Blocks so far: the next one lasts `block * 2^strikes`.
    strikes: u32,
    refused_unreported: u64,
    reported_at: Option<Instant>,
}

/// One table of the throttle: records by key, and the order they came in (for eviction).
#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Record, FixedState>,
    order: VecDeque<K>,
}

impl<K: Clone + Eq + Hash> Table<K> {
    fn new(seed: u64) -> Self {
        Self {
            map: HashMap::with_hasher(FixedState::with_seed(seed)),
            order: VecDeque::new(),
        }
    }

    fn check(&mut self, now: Instant, key: &K, interval: Duration) -> Option<Blocked> {
        let r = self.map.get_mut(key)?;
        let until = r.blocked_until.filter(|u| *u > now)?;
        r.refused_unreported += 1;
        let due = r.reported_at.is_none_or(|at| now >= at + interval);
        let report = due.then(|| {
            r.reported_at = Some(now);
            core::mem::take(&mut r.refused_unreported)
        });
        Some(Blocked { until, report })
    }

    fn fail(
        &mut self,
        now: Instant,
        key: K,
        threshold: u32,
        cfg: &ThrottleConfig,
    ) -> Option<Duration> {
        if !self.map.contains_key(&key) {
            self.make_room(now, cfg.capacity);
            self.order.push_back(key.clone());
            self.map.insert(
                key.clone(),
                Record {
                    failures: 0,
                    window_start: now,
                    last_failure: now,
                    blocked_until: None,
                    strikes: 0,
                    refused_unreported: 0,
                    reported_at: None,
                },
            );
        }
        let r = self.map.get_mut(&key)?;
        if now.saturating_duration_since(r.window_start) > cfg.window {
            r.failures = 0;
            r.window_start = now;
        }
        r.failures += 1;
        r.last_failure = now;
        if r.failures < threshold.max(1) || r.blocked_until.is_some_and(|u| u > now) {
            return None;
        }
        // 2^strikes, saturating: the cap below bounds it anyway.
        let factor = 1u32.checked_shl(r.strikes.min(31)).unwrap_or(u32::MAX);
        let block = cfg.block.saturating_mul(factor).min(cfg.max_block);
        r.strikes = r.strikes.saturating_add(1);
        r.failures = 0;
        r.window_start = now;
        r.blocked_until = Some(now + block);
        r.reported_at = None;
        Some(block)
    }

    /// Keeps the table under `capacity` by forgetting the oldest records that are not
    /// blocked (blocked ones go to the back and stay).
    fn make_room(&mut self, now: Instant, capacity: usize) {
        let mut turns = self.order.len();
        while self.map.len() >= capacity.max(1) && turns > 0 {
            turns -= 1;
            let Some(key) = self.order.pop_front() else {
                return;
            };
            match self.map.get(&key) {
                Some(r) if r.blocked_until.is_some_and(|u| u > now) => self.order.push_back(key),
                Some(_) => {
                    self.map.remove(&key);
                }
                None => {}
            }
        }
    }

    /// Drops records unblocked and quiet for `quiet`; returns how many are blocked now.
    fn sweep(&mut self, now: Instant, quiet: Duration) -> u64 {
        self.map.retain(|_, r| {
            r.blocked_until.is_some_and(|u| u > now)
                || now.saturating_duration_since(r.last_failure) < quiet
        });
        let map = &self.map;
        self.order.retain(|k| map.contains_key(k));
        self.map
            .values()
            .filter(|r| r.blocked_until.is_some_and(|u| u > now))
            .count() as u64
    }
}

/// The key an address is counted under as a source: an IPv4 address as it is (also when
/// written IPv4-mapped, `::ffff:a.b.c.d`), an IPv6 address as its /64, since one host is
/// usually given a whole /64 and could otherwise take a fresh address for every attempt.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The account a digest username names, as the throttle counts it: `alice@realm` for
/// `alice`, lowercase, at most 256 bytes (a hostile username must not grow the keys).
pub fn account_key(username: &str, realm: &str) -> String {
    let mut user = if username.contains('@') {
        username.to_ascii_lowercase()
    } else {
        format!("{username}@{realm}").to_ascii_lowercase()
    };
    if user.len() > 256 {
        let mut cut = 256;
        while !user.is_char_boundary(cut) {
            cut -= 1;
        }
        user.truncate(cut);
    }
    user
}

/// What [`SourceLimiter::admit`] decided.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Admission {
    /// Within the source's rate.
    Admit,
    /// Over the source's rate: drop it (or answer 503 on a stream). `report` carries the
    /// requests refused since the last report when this one should be logged (at most one
    /// report per source per interval).
    Refuse {
        /// Refusals since the last report, when one is due.
        report: Option<u64>,
    },
}

/// Counters of a [`SourceLimiter`].
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct LimiterStats {
    /// Requests refused for going over their source's rate.
    pub refused: u64,
    /// Sources tracked now.
    pub sources: u64,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens in thousandths (integer arithmetic: the same result on every machine).
    milli: u64,
    at: Instant,
    refused_unreported: u64,
    reported_at: Option<Instant>,
}

/// A token bucket per source address: `rate` requests per second on average, `burst` at
/// once. Used for requests that open new work (out-of-dialog requests), before any
/// transaction state or store work is spent on them, so that one source cannot take the
/// whole node.
#[derive(Debug)]
pub struct SourceLimiter {
    rate: u64,
    burst: u64,
    capacity: usize,
    report_interval: Duration,
    buckets: HashMap<IpAddr, Bucket, FixedState>,
    order: VecDeque<IpAddr>,
    stats: LimiterStats,
}

impl SourceLimiter {
    /// `rate` per second, `burst` at once, at most `capacity` sources tracked; a refused
    /// source is reported at most once per `report_interval`.
    pub fn new(
        rate: u32,
        burst: u32,
        capacity: usize,
        report_interval: Duration,
        seed: u64,
    ) -> Self {
        Self {
            rate: u64::from(rate.max(1)),
            burst: u64::from(burst.max(1)),
            capacity: capacity.max(1),
            report_interval,
            buckets: HashMap::with_hasher(FixedState::with_seed(seed)),
            order: VecDeque::new(),
            stats: LimiterStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            sources: self.buckets.len() as u64,
            ..self.stats
        }
    }

    /// Takes one token for a request from `ip`.
    pub fn admit(&mut self, now: Instant, ip: IpAddr) -> Admission {
        let ip = source_key(ip);
        let full = self.burst * 1000;
        if !self.buckets.contains_key(&ip) {
            while self.buckets.len() >= self.capacity {
                // The oldest tracked source goes: its bucket refills as if it had been quiet,
                // which is the state it would reach soonest anyway.
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.buckets.remove(&old);
            }
            self.order.push_back(ip);
            self.buckets.insert(
                ip,
                Bucket {
                    milli: full,
                    at: now,
                    refused_unreported: 0,
                    reported_at: None,
                },
            );
        }
        let Some(b) = self.buckets.get_mut(&ip) else {
            return Admission::Admit;
        };
        let elapsed = now.saturating_duration_since(b.at);
        // rate tokens per second = rate milli-tokens per millisecond.
        let refill = (elapsed.as_micros() as u64).saturating_mul(self.rate) / 1000;
        if refill > 0 {
            b.milli = b.milli.saturating_add(refill).min(full);
            b.at = now;
        }
        if b.milli >= 1000 {
            b.milli -= 1000;
            return Admission::Admit;
        }
        self.stats.refused += 1;
        b.refused_unreported += 1;
        let due = b
            .reported_at
            .is_none_or(|at| now >= at + self.report_interval);
        let report = due.then(|| {
            b.reported_at = Some(now);
            core::mem::take(&mut b.refused_unreported)
        });
        Admission::Refuse { report }
    }

    /// Forgets sources whose bucket is full again (they cost nothing to recreate).
    pub fn sweep(&mut self, now: Instant) {
        let full = self.burst * 1000;
        let rate = self.rate;
        self.buckets.retain(|_, b| {
            let refill = (now.saturating_duration_since(b.at).as_micros() as u64)
                .saturating_mul(rate)
                / 1000;
            b.milli.saturating_add(refill) < full
        });
        let buckets = &self.buckets;
        self.order.retain(|ip| buckets.contains_key(ip));
    }

    /// Whether any source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    // The one clock read per test is the origin of virtual time.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    #[test]
    fn a_nonce_count_is_accepted_once_and_only_upwards() {
        let mut t = NonceTracker::new(10, 1);
        assert_eq!(
            t.accept("n1", 100, Some("00000001"), 100, 300),
            NonceUse::Fresh
        );
        assert_eq!(
            t.accept("n1", 100, Some("00000001"), 101, 300),
            NonceUse::Replayed
        );
        assert_eq!(
            t.accept("n1", 100, Some("00000003"), 101, 300),
            NonceUse::Fresh
        );
        assert_eq!(
            t.accept("n1", 100, Some("00000002"), 101, 300),
            NonceUse::Replayed
        );
        // Without qop (RFC 2069) a nonce is good once.
        assert_eq!(t.accept("n2", 100, None, 101, 300), NonceUse::Fresh);
        assert_eq!(t.accept("n2", 100, None, 101, 300), NonceUse::Replayed);
    }

    #[test]
    fn a_full_table_forgets_the_oldest_and_refuses_what_it_forgot() {
        let mut t = NonceTracker::new(2, 1);
        assert_eq!(
            t.accept("a", 10, Some("00000001"), 20, 300),
            NonceUse::Fresh
        );
        assert_eq!(
            t.accept("b", 11, Some("00000001"), 20, 300),
            NonceUse::Fresh
        );
        assert_eq!(
            t.accept("c", 12, Some("00000001"), 20, 300),
            NonceUse::Fresh
        );
        assert_eq!(t.len(), 2);
        // "a" was forgotten: its replay is refused all the same.
        assert_eq!(
            t.accept("a", 10, Some("00000001"), 20, 300),
            NonceUse::Forgotten
        );
        assert_eq!(
            t.accept("c", 12, Some("00000001"), 20, 300),
            NonceUse::Replayed
        );
    }

    #[test]
    fn expired_nonces_leave_the_table() {
        let mut t = NonceTracker::new(10, 1);
        t.accept("a", 10, Some("00000001"), 10, 300);
        t.accept("b", 400, Some("00000001"), 400, 300);
        assert_eq!(t.len(), 1);
    }

    fn cfg() -> ThrottleConfig {
        ThrottleConfig {
            max_source_failures: 3,
            max_user_failures: 5,
            window: Duration::from_secs(60),
            block: Duration::from_secs(10),
            max_block: Duration::from_secs(35),
            capacity: 100,
            report_interval: Duration::from_secs(5),
        }
    }

    #[test]
    fn failures_block_a_source_with_a_growing_back_off() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut th = AuthThrottle::new(cfg(), 1);
        assert_eq!(th.failure(t0, ip, "bob@x"), NewBlocks::default());
        th.failure(t0, ip, "bob@x");
        assert_eq!(th.check_source(t0, ip), None);
        let b = th.failure(t0, ip, "bob@x");
        assert_eq!(b.source, Some(Duration::from_secs(10)));
        let blocked = th.check_source(t0, ip).expect("blocked");
        assert_eq!(blocked.until, t0 + Duration::from_secs(10));
        assert_eq!(blocked.report, Some(1));
        // Reports are rate-limited.
        assert_eq!(th.check_source(t0, ip).unwrap().report, None);
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(th.check_source(t1, ip).unwrap().report, Some(2));
        let t2 = t0 + Duration::from_secs(11);
        assert_eq!(th.check_source(t2, ip), None);
        // The second block is twice as long, the third is capped.
        for _ in 0..3 {
            th.failure(t2, ip, "carol@x");
        }
        assert_eq!(
            th.check_source(t2, ip).unwrap().until,
            t2 + Duration::from_secs(20)
        );
        let t3 = t2 + Duration::from_secs(21);
        let mut last = NewBlocks::default();
        for _ in 0..3 {
            last = th.failure(t3, ip, "dave@x");
        }
        assert_eq!(last.source, Some(Duration::from_secs(35)));
        assert_eq!(th.stats().blocks, 3);
        assert_eq!(th.stats().failures, 9);
    }

    #[test]
    fn failures_for_one_user_from_many_sources_block_the_user() {
        let t0 = Instant::now();
        let mut th = AuthThrottle::new(cfg(), 1);
        let mut started = None;
        for i in 0..5u8 {
            let ip = IpAddr::from([198, 51, 100, i]);
            started = th.failure(t0, ip, "bob@x").user.or(started);
        }
        assert_eq!(started, Some(Duration::from_secs(10)));
        assert!(th.check_user(t0, "bob@x").is_some());
        assert!(th.check_user(t0, "alice@x").is_none());
        th.sweep(t0);
        assert_eq!(th.stats().blocked_users, 1);
        assert_eq!(th.stats().blocked_sources, 0);
        // Long after, everything is forgotten.
        th.sweep(t0 + Duration::from_secs(3600));
        assert!(th.is_empty());
    }

    #[test]
    fn a_full_throttle_forgets_the_oldest_unblocked_record() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.capacity = 2;
        let mut th = AuthThrottle::new(c, 1);
        let a = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            th.failure(t0, a, "u@x");
        }
        assert!(th.check_source(t0, a).is_some());
        for i in 2..20u8 {
            th.failure(t0, IpAddr::from([10, 0, 0, i]), "u@x");
        }
        // The blocked source is still blocked.
        assert!(th.check_source(t0, a).is_some());
    }

    #[test]
    fn sources_are_counted_by_host_or_ipv6_prefix() {
        let k = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(k("192.0.2.1"), k("::ffff:192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        // An attacker rotating addresses in its /64 shares one bucket.
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(1, 2, 100, Duration::from_secs(1), 1);
        assert_eq!(
            l.admit(t0, "2001:db8::1".parse().unwrap()),
            Admission::Admit
        );
        assert_eq!(
            l.admit(t0, "2001:db8::2".parse().unwrap()),
            Admission::Admit
        );
        assert!(matches!(
            l.admit(t0, "2001:db8::3".parse().unwrap()),
            Admission::Refuse { .. }
        ));
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let ip = IpAddr::from([10, 1, 1, 1]);
        let mut l = SourceLimiter::new(10, 5, 100, Duration::from_secs(1), 1);
        for _ in 0..5 {
            assert_eq!(l.admit(t0, ip), Admission::Admit);
        }
        assert_eq!(l.admit(t0, ip), Admission::Refuse { report: Some(1) });
        assert_eq!(l.admit(t0, ip), Admission::Refuse { report: None });
        // 100 ms at 10/s is one token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.admit(t1, ip), Admission::Admit);
        assert_eq!(l.admit(t1, ip), Admission::Refuse { report: None });
        // Another source has its own bucket.
        assert_eq!(l.admit(t1, IpAddr::from([10, 1, 1, 2])), Admission::Admit);
        assert_eq!(l.stats().refused, 3);
        l.sweep(t1 + Duration::from_secs(5));
        assert!(l.is_empty());
    }
}
