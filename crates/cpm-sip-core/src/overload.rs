//! Overload control (RFC 5390's requirements): decide, for each new out-of-dialog request, whether
//! the element can take it now, from the delay the work is measured to wait, not from a fixed
//! count.
//!
//! The signal is the sojourn time of a message in the driver's input queue (how long it waited
//! between the socket and the core): while the core keeps up it is near zero whatever the
//! rate; when requests arrive faster than the core serves them it grows without bound, and
//! with it the response time, until clients retransmit (RFC 3261's T1, 500 ms) and the
//! retransmissions add load: the collapse this module prevents. The control law is CoDel's
//! (Nichols and Jacobson, RFC 8289) applied to admission instead of packet drops:
//!
//! - the element starts **shedding** once the sojourn has stayed above `target` for a whole
//!   `interval` (a burst that the queue absorbs within an interval costs nothing);
//! - while shedding, a new request that waited `target` or more is refused at once with
//!   `503 Service Unavailable` and `Retry-After` (RFC 3261 section 21.5.4), before any
//!   transaction state or store work, so the refusal costs a small part of what serving it
//!   would; requests that waited less are served, which keeps the queue at about `target` and
//!   the served rate at the element's capacity;
//! - shedding stops once the sojourn has stayed below `target` for a whole `interval`: the
//!   element returns to clean operation by itself when the load drops.
//!
//! A second signal covers work that waits after the core instead of before it: the latency of
//! the store operations the element asks for ([`LoadControl::store_latency`]). Past
//! `store_target` for an interval, every new request is refused until it has been back under
//! the target for an interval, except one per interval: with no new work the store would give
//! no new samples, and the element would never see it recover. In-dialog requests, ACK, CANCEL, responses and retransmissions
//! are never refused here (RFC 5390 requirement 10: work already accepted keeps priority).
//!
//! Sans-IO: time comes in as `now`, nothing is read from a clock.

use core::time::Duration;
use std::time::Instant;

/// Settings of [`LoadControl`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct OverloadConfig {
    /// Refuse new requests when overloaded; `false`: never.
    pub enabled: bool,
    /// The queue delay the element aims to stay under (CoDel's target).
    pub target: Duration,
    /// How long the delay must stay above (below) `target` before shedding starts (stops).
    pub interval: Duration,
    /// The store latency past which the element is overloaded even with an empty queue.
    pub store_target: Duration,
    /// The `Retry-After` of a refusal, in seconds; a jitter of up to as many seconds again
    /// is added per refusal so that refused clients do not all come back at once.
    pub retry_after_secs: u32,
}

impl Default for OverloadConfig {
    /// Enabled, 20 ms target, 100 ms interval, 250 ms store target, `Retry-After` 1–2 s.
    fn default() -> Self {
        Self {
            enabled: true,
            target: Duration::from_millis(20),
            interval: Duration::from_millis(100),
            store_target: Duration::from_millis(250),
            retry_after_secs: 1,
        }
    }
}

/// CoDel's state for one delay signal: above target since when, and whether shedding.
#[derive(Clone, Copy, Debug, Default)]
struct Detector {
    /// Set when the signal went above target (while not shedding) or below it (while
    /// shedding): the state flips once `interval` has passed since.
    since: Option<Instant>,
    shedding: bool,
}

impl Detector {
    /// One sample of the signal. Returns whether the state changed.
    fn sample(
        &mut self,
        now: Instant,
        delay: Duration,
        target: Duration,
        interval: Duration,
    ) -> bool {
        // While not shedding, we wait for a standing queue (above target all interval long);
        // while shedding, for a drained one (below target all interval long).
        let towards_flip = if self.shedding {
            delay < target
        } else {
            delay >= target
        };
        if !towards_flip {
            self.since = None;
            return false;
        }
        match self.since {
            None => {
                self.since = Some(now);
                false
            }
            Some(since) if now.saturating_duration_since(since) >= interval => {
                self.shedding = !self.shedding;
                self.since = None;
                true
            }
            Some(_) => false,
        }
    }
}

/// What [`LoadControl`] did, for metrics.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct LoadStats {
    /// New requests refused with 503.
    pub refused: u64,
    /// Times the element started shedding.
    pub overload_periods: u64,
    /// Whether it is shedding now (either signal).
    pub shedding: bool,
    /// The last input-queue delay measured, in microseconds.
    pub last_queue_delay_us: u64,
    /// The last store latency measured, in microseconds.
    pub last_store_latency_us: u64,
}

impl core::ops::AddAssign for LoadStats {
    /// Adds another element's counters (the shards of one node, for `/metrics`).
    fn add_assign(&mut self, o: Self) {
        self.refused += o.refused;
        self.overload_periods += o.overload_periods;
        self.shedding |= o.shedding;
        self.last_queue_delay_us = self.last_queue_delay_us.max(o.last_queue_delay_us);
        self.last_store_latency_us = self.last_store_latency_us.max(o.last_store_latency_us);
    }
}

/// Admission of new requests by measured delay: see the module docs.
#[derive(Clone, Debug)]
pub struct LoadControl {
    cfg: OverloadConfig,
    queue: Detector,
    store: Detector,
    stats: LoadStats,
    /// For the `Retry-After` jitter (a counter is enough: spreading, not secrecy).
    jitter: u32,
    /// When the last request was let through as a probe of a slow store.
    probe_at: Option<Instant>,
    /// The queue delay the rest of the node sees now (its other shards): the work a new
    /// request brings may have to wait there too.
    remote: Duration,
}

impl LoadControl {
    /// A controller with these settings, not shedding.
    pub fn new(cfg: OverloadConfig) -> Self {
        Self {
            cfg,
            queue: Detector::default(),
            store: Detector::default(),
            stats: LoadStats::default(),
            jitter: 0,
            probe_at: None,
            remote: Duration::ZERO,
        }
    }

    /// The settings.
    pub fn config(&self) -> OverloadConfig {
        self.cfg
    }

    /// A message from the network reached the core at `now` after waiting `sojourn` in the
    /// driver's queue. Call it for every message, in-dialog ones and responses included: they
    /// wait in the same queue.
    pub fn queue_delay(&mut self, now: Instant, sojourn: Duration) {
        self.stats.last_queue_delay_us = u64::try_from(sojourn.as_micros()).unwrap_or(u64::MAX);
        let was = self.shedding();
        // A standing queue anywhere in the node is this element's too (see `remote_delay`).
        self.queue.sample(
            now,
            sojourn.max(self.remote),
            self.cfg.target,
            self.cfg.interval,
        );
        self.count_period(was);
    }

    /// The queue delay the other parts of the node (its other shards) see now, as their
    /// drivers last measured it: the work a new request brings here is partly done there, so
    /// a standing queue there must make this element refuse new requests too, or the node
    /// keeps taking work one part of it cannot do. [`LoadControl::queue_delay`] and
    /// [`LoadControl::admit`] count the larger of the two; `Duration::ZERO` when the other
    /// parts have no queue (their [`LoadStats::last_queue_delay_us`] is their own only).
    pub fn remote_delay(&mut self, delay: Duration) {
        self.remote = delay;
    }

    /// A store operation the element asked for was answered at `now`, `latency` after it was
    /// asked for.
    pub fn store_latency(&mut self, now: Instant, latency: Duration) {
        self.stats.last_store_latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let was = self.shedding();
        self.store
            .sample(now, latency, self.cfg.store_target, self.cfg.interval);
        self.count_period(was);
    }

    fn count_period(&mut self, was: bool) {
        let is = self.shedding();
        if is && !was {
            self.stats.overload_periods += 1;
        }
        self.stats.shedding = is;
    }

    /// Whether either signal says the element is overloaded.
    pub fn shedding(&self) -> bool {
        self.cfg.enabled && (self.queue.shedding || self.store.shedding)
    }

    /// Whether a new out-of-dialog request that waited `sojourn` in the input queue may be
    /// served at `now`. `false`: refuse it now with [`LoadControl::refuse`]'s `Retry-After`.
    pub fn admit(&mut self, now: Instant, sojourn: Duration) -> bool {
        if !self.cfg.enabled {
            return true;
        }
        if self.store.shedding {
            let probe = self
                .probe_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.interval);
            if probe {
                self.probe_at = Some(now);
            }
            return probe;
        }
        !(self.queue.shedding && sojourn.max(self.remote) >= self.cfg.target)
    }

    /// Counts a refusal and returns the `Retry-After` to send with it, in seconds.
    pub fn refuse(&mut self) -> u32 {
        self.stats.refused += 1;
        self.jitter = self.jitter.wrapping_add(1);
        let base = self.cfg.retry_after_secs.max(1);
        base + self.jitter % (base + 1)
    }

    /// The counters.
    pub fn stats(&self) -> LoadStats {
        self.stats
    }
}

impl Default for LoadControl {
    fn default() -> Self {
        Self::new(OverloadConfig::default())
    }
}

#[cfg(test)]
mod tests {
    // The clock is read once, for an origin of virtual time; the code under test never reads it.
    #![allow(clippy::disallowed_methods)]
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn origin() -> Instant {
        // A fixed origin for virtual time; no clock is read by the code under test.
        Instant::now()
    }

    #[test]
    fn a_burst_shorter_than_the_interval_sheds_nothing() {
        let t0 = origin();
        let mut lc = LoadControl::default();
        for i in 0..9 {
            lc.queue_delay(t0 + i * 10 * MS, 50 * MS);
        }
        assert!(!lc.shedding());
        assert!(lc.admit(t0, 50 * MS));
        lc.queue_delay(t0 + 95 * MS, MS);
        lc.queue_delay(t0 + 200 * MS, 50 * MS);
        assert!(!lc.shedding(), "the burst ended before a whole interval");
    }

    #[test]
    fn a_standing_queue_sheds_the_requests_that_waited_and_serves_the_others() {
        let t0 = origin();
        let mut lc = LoadControl::default();
        for i in 0..=10 {
            lc.queue_delay(t0 + i * 10 * MS, 30 * MS);
        }
        assert!(lc.shedding());
        assert!(!lc.admit(t0, 30 * MS));
        assert!(
            lc.admit(t0, 5 * MS),
            "a request that did not wait is served"
        );
        let secs = lc.refuse();
        assert!((1..=2).contains(&secs));
        assert_eq!(lc.stats().refused, 1);
        assert_eq!(lc.stats().overload_periods, 1);
        // Around the target (the queue the shedding keeps): still shedding.
        for i in 11..30 {
            let d = if i % 2 == 0 { 25 * MS } else { 15 * MS };
            lc.queue_delay(t0 + i * 10 * MS, d);
        }
        assert!(lc.shedding());
    }

    #[test]
    fn shedding_stops_by_itself_once_the_queue_stays_drained() {
        let t0 = origin();
        let mut lc = LoadControl::default();
        for i in 0..=10 {
            lc.queue_delay(t0 + i * 10 * MS, 40 * MS);
        }
        assert!(lc.shedding());
        for i in 11..=21 {
            lc.queue_delay(t0 + i * 10 * MS, MS);
        }
        assert!(!lc.shedding());
        assert!(lc.admit(t0, 40 * MS));
        assert!(!lc.stats().shedding);
    }

    #[test]
    fn a_slow_store_refuses_every_new_request_until_it_recovers() {
        let t0 = origin();
        let mut lc = LoadControl::default();
        for i in 0..=10 {
            lc.store_latency(t0 + i * 10 * MS, 400 * MS);
        }
        assert!(lc.shedding());
        let t = t0 + 110 * MS;
        assert!(lc.admit(t, Duration::ZERO), "one probe per interval");
        assert!(!lc.admit(t, Duration::ZERO));
        assert!(!lc.admit(t + 50 * MS, Duration::ZERO));
        assert!(lc.admit(t + 100 * MS, Duration::ZERO), "the next probe");
        for i in 11..=21 {
            lc.store_latency(t0 + i * 10 * MS, 3 * MS);
        }
        assert!(!lc.shedding());
        assert!(lc.admit(t0 + 220 * MS, Duration::ZERO));
        assert!(lc.admit(t0 + 220 * MS, Duration::ZERO));
    }

    #[test]
    fn disabled_admits_everything() {
        let t0 = origin();
        let mut lc = LoadControl::new(OverloadConfig {
            enabled: false,
            ..OverloadConfig::default()
        });
        for i in 0..=20 {
            lc.queue_delay(t0 + i * 10 * MS, Duration::from_secs(1));
        }
        assert!(!lc.shedding());
        assert!(lc.admit(t0, Duration::from_secs(1)));
    }

    #[test]
    fn a_standing_queue_in_another_shard_makes_this_one_refuse_and_its_end_lets_it_admit() {
        let t0 = origin();
        let mut lc = LoadControl::default();
        let cfg = lc.config();
        // This shard's own queue is empty (every request waits 0), the other's stands.
        lc.remote_delay(cfg.target * 3);
        let mut now = t0;
        for _ in 0..20 {
            now += 10 * MS;
            lc.queue_delay(now, Duration::ZERO);
        }
        assert!(
            lc.shedding(),
            "the node's standing queue is this shard's overload"
        );
        assert!(!lc.admit(now, Duration::ZERO), "a new request is refused");
        assert_eq!(
            lc.stats().last_queue_delay_us,
            0,
            "its own delay is reported alone"
        );
        // The other shard drained: admitted again once the delay stayed low an interval.
        lc.remote_delay(Duration::ZERO);
        assert!(
            lc.admit(now, Duration::ZERO),
            "below target: admitted at once"
        );
        for _ in 0..20 {
            now += 10 * MS;
            lc.queue_delay(now, Duration::ZERO);
        }
        assert!(!lc.shedding());
    }
}
