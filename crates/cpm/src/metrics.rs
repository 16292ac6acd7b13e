//! `/metrics` of `cpm serve`: the node's counters and gauges in a `prometheus-client` registry,
//! served in the Prometheus text format 0.0.4.
//!
//! - The cores keep cumulative counters of their own; the node loop hands a [`Snapshot`] of
//!   them to [`Metrics::update`] after each turn, which sets the registered metrics to it.
//! - What other tasks count (the HTTP API's guards, the SIP transport's connections, the HTTP
//!   server's connections) is read when `/metrics` is rendered.
//! - The names, types, labels and help texts are the scrapers' interface (the tests and
//!   `bench/sipbench.py` read them): they are written here as they are exposed, `_total` and
//!   all; the helpers below take away what the library adds back (`_total`, the final period).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use cpm_conversation::PfStats;
use cpm_runtime::{SipTransportHandle, StoreStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use crate::api::HttpGuard;
use crate::http::HttpStats;

/// A gauge of a count (never negative).
type CountGauge = Gauge<u64, AtomicU64>;
/// A counter of seconds.
type SecondsCounter = Counter<f64, AtomicU64>;

/// The label of the guards' metrics, which count for SIP and for the HTTP API.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProtoLabel {
    /// `sip` or `http`.
    proto: &'static str,
}

const SIP: ProtoLabel = ProtoLabel { proto: "sip" };
const HTTP: ProtoLabel = ProtoLabel { proto: "http" };

/// What the cores have counted so far (cumulative counters, current gauges).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Snapshot {
    /// The proxy's counters.
    pub(crate) proxy: cpm_proxy::Stats,
    /// Live registration bindings.
    pub(crate) registrations: u64,
    /// Live SIP transactions.
    pub(crate) transactions: u64,
    /// The in-process PF's counters and its message requests in progress, when it runs.
    pub(crate) pf: Option<(PfStats, u64)>,
    /// The store executor's counters.
    pub(crate) store: StoreStats,
    /// User directory reads.
    pub(crate) user_lookups: u64,
    /// Messages the transport could not send.
    pub(crate) send_failures: u64,
    /// What overload control did.
    pub(crate) load: cpm_sip_core::overload::LoadStats,
    /// Store operations asked for and not answered yet.
    pub(crate) store_in_flight: u64,
}

impl core::ops::AddAssign for Snapshot {
    /// Adds another shard's counters (the store's are the one executor's: the later wins).
    fn add_assign(&mut self, o: Self) {
        self.proxy += o.proxy;
        self.registrations += o.registrations;
        self.transactions += o.transactions;
        self.pf = match (self.pf, o.pf) {
            (Some((mut a, n)), Some((b, m))) => {
                a += b;
                Some((a, n + m))
            }
            (a, b) => a.or(b),
        };
        if o.store.batches >= self.store.batches {
            self.store = o.store;
        }
        self.user_lookups += o.user_lookups;
        self.send_failures += o.send_failures;
        self.load += o.load;
        self.store_in_flight += o.store_in_flight;
    }
}

/// One metric per protocol of a labelled family.
struct ByProto<M> {
    sip: M,
    http: M,
}

/// The metrics' handles (each shares its value with the registry's copy).
struct Handles {
    requests_received: Counter,
    responses_received: Counter,
    parse_errors: Counter,
    transactions_started: Counter,
    transactions: CountGauge,
    requests_forwarded: Counter,
    messages_forwarded: Counter,
    registrations: CountGauge,
    registrations_accepted: Counter,
    auth_challenges: Counter,
    local_failures: Counter,
    user_lookups: Counter,
    send_failures: Counter,
    pf_messages_sent: Counter,
    pf_messages_received: Counter,
    pf_delivered: Counter,
    pf_deferred: Counter,
    pf_deferred_delivered: Counter,
    pf_expired: Counter,
    pf_imdns: Counter,
    pf_duplicates: Counter,
    pf_store_failures: Counter,
    pf_deferred_refused: Counter,
    pf_cpim_from_corrected: Counter,
    pf_in_progress: CountGauge,
    store_batches: Counter,
    store_ops: Counter,
    store_queue: CountGauge,
    auth_failures: ByProto<Counter>,
    auth_refused: ByProto<Counter>,
    auth_blocks: ByProto<Counter>,
    auth_blocked_sources: ByProto<CountGauge>,
    auth_blocked_users: ByProto<CountGauge>,
    replays_refused: Counter,
    rate_limited: Counter,
    relay_refused: Counter,
    sender_refused: Counter,
    udp_flood_dropped: Counter,
    tcp_connections: CountGauge,
    tcp_refused_per_source: Counter,
    tcp_refused_full: Counter,
    tcp_evicted: Counter,
    tcp_message_timeouts: Counter,
    tcp_idle_closed: Counter,
    http_connections: CountGauge,
    http_refused_full: Counter,
    http_refused_per_source: Counter,
    http_connection_errors: Counter,
    store_commit_seconds: SecondsCounter,
    store_failed_batches: Counter,
    overload_refused: Counter,
    overload_periods: Counter,
    overload_shedding: CountGauge,
    queue_delay_us: CountGauge,
    store_latency_us: CountGauge,
    store_in_flight: CountGauge,
}

/// The node's metrics, shared by the node loop (which updates them) and the HTTP endpoint.
pub(crate) struct Metrics {
    registry: Registry,
    m: Handles,
    /// Held while metrics are set from cumulative values (by [`Self::update`] and at render),
    /// so that two writers never add the same difference twice.
    write: Mutex<()>,
    /// The HTTP API's guards, read when `/metrics` is rendered.
    http_guard: Option<Arc<Mutex<HttpGuard>>>,
    /// The SIP transport, whose counters are read when `/metrics` is rendered.
    transport: Option<SipTransportHandle>,
    /// The HTTP server's connection counters, read when `/metrics` is rendered.
    pub(crate) http: Arc<HttpStats>,
    /// The last snapshot of each node shard ([`Metrics::publish`]), added up at render: a
    /// shard only touches its own slot, so the shards never wait for each other.
    shards: Vec<Mutex<Snapshot>>,
}

impl Metrics {
    /// Registers every metric (at zero); `http_guard` and `transport` are read at render.
    pub(crate) fn new(
        http_guard: Option<Arc<Mutex<HttpGuard>>>,
        transport: Option<SipTransportHandle>,
    ) -> Self {
        let mut r = Reg(Registry::default());
        // Registration order is the order of the page.
        let m = Handles {
            requests_received: r.counter(
                "cpm_sip_requests_received_total",
                "SIP requests received and parsed.",
            ),
            responses_received: r.counter(
                "cpm_sip_responses_received_total",
                "SIP responses received and parsed.",
            ),
            parse_errors: r.counter(
                "cpm_sip_parse_errors_total",
                "Messages that failed to parse.",
            ),
            transactions_started: r.counter(
                "cpm_sip_transactions_started_total",
                "Server transactions created.",
            ),
            transactions: r.gauge("cpm_sip_transactions", "Live SIP transactions."),
            requests_forwarded: r.counter(
                "cpm_sip_requests_forwarded_total",
                "Requests forwarded (each fork counts).",
            ),
            messages_forwarded: r.counter(
                "cpm_messages_forwarded_total",
                "SIP MESSAGE requests forwarded.",
            ),
            registrations: r.gauge("cpm_registrations", "Live registration bindings."),
            registrations_accepted: r.counter(
                "cpm_registrations_accepted_total",
                "REGISTER requests accepted.",
            ),
            auth_challenges: r.counter(
                "cpm_auth_challenges_total",
                "401/407 digest challenges sent.",
            ),
            local_failures: r.counter(
                "cpm_sip_local_failures_total",
                "4xx-6xx responses generated by the node.",
            ),
            user_lookups: r.counter("cpm_user_lookups_total", "User directory reads."),
            send_failures: r.counter(
                "cpm_sip_send_failures_total",
                "Messages the transport could not send.",
            ),
            pf_messages_sent: r.counter(
                "cpm_pf_messages_sent_total",
                "Messages stored in a sender's history.",
            ),
            pf_messages_received: r.counter(
                "cpm_pf_messages_received_total",
                "Messages stored in a recipient's history.",
            ),
            pf_delivered: r.counter(
                "cpm_pf_delivered_total",
                "Messages a device accepted at once.",
            ),
            pf_deferred: r.counter(
                "cpm_pf_deferred_total",
                "Messages answered 202 and queued for deferred delivery.",
            ),
            pf_deferred_delivered: r.counter(
                "cpm_pf_deferred_delivered_total",
                "Deferred messages delivered after a registration.",
            ),
            pf_expired: r.counter("cpm_pf_expired_total", "Deferred messages that expired."),
            pf_imdns: r.counter("cpm_pf_imdns_total", "IMDNs passed through the PF."),
            pf_duplicates: r.counter(
                "cpm_pf_duplicates_total",
                "Messages recognised as already stored.",
            ),
            pf_store_failures: r.counter(
                "cpm_pf_store_failures_total",
                "Store operations that failed.",
            ),
            pf_deferred_refused: r.counter(
                "cpm_pf_deferred_refused_total",
                "Messages refused because the recipient's deferred queue was full.",
            ),
            pf_cpim_from_corrected: r.counter(
                "cpm_pf_cpim_from_corrected_total",
                "CPIM bodies whose From named another than the sender, set to the sender.",
            ),
            pf_in_progress: r.gauge(
                "cpm_pf_in_progress",
                "Message requests in progress in the PF.",
            ),
            store_batches: r.counter(
                "cpm_store_batches_total",
                "Store transactions committed (group commit).",
            ),
            store_ops: r.counter("cpm_store_ops_total", "Store operations executed."),
            store_queue: r.gauge(
                "cpm_store_queue_depth",
                "Store operations waiting for the writer.",
            ),
            // The guards of SIP (the core's counters) and of the HTTP API, labelled by protocol.
            auth_failures: r.by_proto(
                "cpm_auth_failures_total",
                "Failed authentications (wrong password or unknown user).",
            ),
            auth_refused: r.by_proto(
                "cpm_auth_refused_total",
                "Requests refused because their source or user was blocked after failures.",
            ),
            auth_blocks: r.by_proto(
                "cpm_auth_blocks_total",
                "Blocks started after failed authentications (sources and users).",
            ),
            auth_blocked_sources: r.by_proto(
                "cpm_auth_blocked_sources",
                "Source addresses blocked now (updated every few seconds).",
            ),
            auth_blocked_users: r.by_proto(
                "cpm_auth_blocked_users",
                "Users blocked now for new devices (updated every few seconds).",
            ),
            replays_refused: r.counter(
                "cpm_auth_replays_refused_total",
                "SIP credentials refused as replays (RFC 7616 nonce count).",
            ),
            rate_limited: r.counter(
                "cpm_sip_rate_limited_total",
                "Out-of-dialog SIP requests over their source's rate (dropped or 503).",
            ),
            relay_refused: r.counter(
                "cpm_sip_relay_refused_total",
                "Requests refused by the relay rule (preloaded Route, foreign target, no dialog of ours).",
            ),
            sender_refused: r.counter(
                "cpm_sip_sender_refused_total",
                "Requests refused because their sender could not be who it said.",
            ),
            // The transports' connections.
            udp_flood_dropped: r.counter(
                "cpm_udp_flood_dropped_total",
                "UDP datagrams dropped unparsed for their source's datagram budget.",
            ),
            tcp_connections: r.gauge("cpm_tcp_connections", "SIP TCP connections open."),
            tcp_refused_per_source: r.counter(
                "cpm_tcp_refused_per_source_total",
                "SIP TCP connections closed at once: their address had its limit open.",
            ),
            tcp_refused_full: r.counter(
                "cpm_tcp_refused_full_total",
                "SIP TCP connections closed at once: the total limit, nothing to evict.",
            ),
            tcp_evicted: r.counter(
                "cpm_tcp_evicted_total",
                "SIP TCP connections closed to make room (silent or longest idle first).",
            ),
            tcp_message_timeouts: r.counter(
                "cpm_tcp_message_timeouts_total",
                "SIP TCP connections closed: a message (or the first) did not arrive in time.",
            ),
            tcp_idle_closed: r.counter(
                "cpm_tcp_idle_closed_total",
                "SIP TCP connections closed by the idle timeout.",
            ),
            http_connections: r.gauge("cpm_http_connections", "HTTP connections open."),
            http_refused_full: r.counter(
                "cpm_http_refused_full_total",
                "HTTP connections closed at once: the total limit.",
            ),
            http_refused_per_source: r.counter(
                "cpm_http_refused_per_source_total",
                "HTTP connections closed at once: their address had its limit open.",
            ),
            http_connection_errors: r.counter(
                "cpm_http_connection_errors_total",
                "HTTP connections that ended with an error (header timeouts among them).",
            ),
            // Seconds as a float: the time the writer spent in transactions (with the batch
            // count this gives the commit latency).
            store_commit_seconds: r.counter(
                "cpm_store_commit_seconds_total",
                "Time spent running store transactions.",
            ),
            store_failed_batches: r.counter(
                "cpm_store_failed_batches_total",
                "Store transactions that failed (nothing acknowledged).",
            ),
            overload_refused: r.counter(
                "cpm_overload_refused_total",
                "New requests answered 503 because the node was overloaded.",
            ),
            overload_periods: r.counter(
                "cpm_overload_periods_total",
                "Times the node started refusing new requests for load.",
            ),
            overload_shedding: r.gauge(
                "cpm_overload_shedding",
                "1 while the node refuses new requests for load.",
            ),
            queue_delay_us: r.gauge(
                "cpm_sip_queue_delay_microseconds",
                "How long the last message waited between the socket and the core.",
            ),
            store_latency_us: r.gauge(
                "cpm_store_latency_microseconds",
                "How long the last store operation took from request to answer.",
            ),
            store_in_flight: r.gauge(
                "cpm_store_in_flight",
                "Store operations asked for and not answered yet.",
            ),
        };
        Self {
            registry: r.0,
            m,
            write: Mutex::new(()),
            http_guard,
            transport,
            http: Arc::default(),
            shards: Vec::new(),
        }
    }

    /// Metrics for a node of `n` shards, each publishing its own snapshot.
    pub(crate) fn with_shards(mut self, n: usize) -> Self {
        self.shards = (0..n).map(|_| Mutex::new(Snapshot::default())).collect();
        self
    }

    /// Keeps shard `shard`'s counters for the next render.
    pub(crate) fn publish(&self, shard: usize, s: Snapshot) {
        if let Some(slot) = self.shards.get(shard) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = s;
        }
    }

    /// The shards' snapshots added up, if the node publishes per shard.
    fn shards_sum(&self) -> Option<Snapshot> {
        let mut slots = self.shards.iter();
        let mut sum = *slots.next()?.lock().unwrap_or_else(PoisonError::into_inner);
        for slot in slots {
            sum += *slot.lock().unwrap_or_else(PoisonError::into_inner);
        }
        Some(sum)
    }

    /// Sets the cores' metrics to `s`.
    pub(crate) fn update(&self, s: &Snapshot) {
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let m = &self.m;
        let p = &s.proxy;
        set(&m.requests_received, p.requests_received);
        set(&m.responses_received, p.responses_received);
        set(&m.parse_errors, p.parse_errors);
        set(&m.transactions_started, p.transactions_started);
        m.transactions.set(s.transactions);
        set(&m.requests_forwarded, p.requests_forwarded);
        set(&m.messages_forwarded, p.messages_forwarded);
        m.registrations.set(s.registrations);
        set(&m.registrations_accepted, p.registrations_accepted);
        set(&m.auth_challenges, p.auth_challenges);
        set(&m.local_failures, p.local_failures);
        set(&m.user_lookups, s.user_lookups);
        set(&m.send_failures, s.send_failures);
        if let Some((f, in_progress)) = &s.pf {
            set(&m.pf_messages_sent, f.messages_sent);
            set(&m.pf_messages_received, f.messages_received);
            set(&m.pf_delivered, f.delivered);
            set(&m.pf_deferred, f.deferred);
            set(&m.pf_deferred_delivered, f.deferred_delivered);
            set(&m.pf_expired, f.expired);
            set(&m.pf_imdns, f.imdns);
            set(&m.pf_duplicates, f.duplicates);
            set(&m.pf_store_failures, f.store_failures);
            set(&m.pf_deferred_refused, f.deferred_refused);
            set(&m.pf_cpim_from_corrected, f.cpim_from_corrected);
            m.pf_in_progress.set(*in_progress);
        }
        let st = &s.store;
        set(&m.store_batches, st.batches);
        set(&m.store_ops, st.ops);
        m.store_queue.set(st.queue_depth);
        set_seconds(&m.store_commit_seconds, st.execute_nanos as f64 / 1e9);
        set(&m.store_failed_batches, st.failed_batches);
        set(&m.auth_failures.sip, p.auth_failures);
        set(&m.auth_refused.sip, p.auth_refused);
        set(&m.auth_blocks.sip, p.auth_blocks);
        m.auth_blocked_sources.sip.set(p.auth_blocked_sources);
        m.auth_blocked_users.sip.set(p.auth_blocked_users);
        set(&m.replays_refused, p.replays_refused);
        set(&m.rate_limited, p.rate_limited);
        set(&m.relay_refused, p.relay_refused);
        set(&m.sender_refused, p.sender_refused);
        set(&m.overload_refused, s.load.refused);
        set(&m.overload_periods, s.load.overload_periods);
        m.overload_shedding.set(u64::from(s.load.shedding));
        m.queue_delay_us.set(s.load.last_queue_delay_us);
        m.store_latency_us.set(s.load.last_store_latency_us);
        m.store_in_flight.set(s.store_in_flight);
    }

    /// Reads what other tasks count: the HTTP API's guards, the transports' connections (read
    /// now: the transport's table lock is not taken per loop turn) and the HTTP server's.
    fn read_others(&self) {
        let http = self
            .http_guard
            .as_ref()
            .map(|g| g.lock().unwrap_or_else(PoisonError::into_inner).stats())
            .unwrap_or_default();
        let (tcp, udp_dropped) = self
            .transport
            .as_ref()
            .map(|t| (t.tcp_stats(), t.udp_flood_dropped()))
            .unwrap_or_default();
        let h = &self.http;
        let g = |a: &AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let m = &self.m;
        set(&m.auth_failures.http, http.failures);
        set(&m.auth_refused.http, http.refused);
        set(&m.auth_blocks.http, http.blocks);
        m.auth_blocked_sources.http.set(http.blocked_sources);
        m.auth_blocked_users.http.set(http.blocked_users);
        set(&m.udp_flood_dropped, udp_dropped);
        m.tcp_connections.set(tcp.open);
        set(&m.tcp_refused_per_source, tcp.refused_per_source);
        set(&m.tcp_refused_full, tcp.refused_full);
        set(&m.tcp_evicted, tcp.evicted);
        set(&m.tcp_message_timeouts, tcp.message_timeouts);
        set(&m.tcp_idle_closed, tcp.idle_closed);
        m.http_connections.set(g(&h.open));
        set(&m.http_refused_full, g(&h.refused_full));
        set(&m.http_refused_per_source, g(&h.refused_per_source));
        set(&m.http_connection_errors, g(&h.errors));
    }

    /// The page: Prometheus text exposition format 0.0.4.
    pub(crate) fn render(&self) -> String {
        if let Some(sum) = self.shards_sum() {
            self.update(&sum);
        }
        self.read_others();
        let mut out = String::new();
        // Writing to a String cannot fail, nor can encoding these metrics.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// `GET /metrics`.
pub(crate) async fn handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        m.render(),
    )
}

/// Sets a counter to a cumulative value (one that never goes back).
fn set(c: &Counter, v: u64) {
    c.inc_by(v.saturating_sub(c.get()));
}

/// Sets a counter of seconds to a cumulative value.
fn set_seconds(c: &SecondsCounter, v: f64) {
    let d = v - c.get();
    if d > 0.0 {
        c.inc_by(d);
    }
}

/// The registry being built.
struct Reg(Registry);

impl Reg {
    /// Registers `metric` as `name` (the exposed name: counters with their `_total`, which the
    /// encoder adds) with `help` (ending with a period, which the registry adds).
    fn register<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        let help = help.strip_suffix('.').unwrap_or(help);
        self.0.register(name, help, metric.clone());
        metric
    }

    fn counter<N, A>(&mut self, name: &str, help: &str) -> Counter<N, A>
    where
        Counter<N, A>: Metric + Clone + Default,
    {
        let base = name.strip_suffix("_total");
        debug_assert!(base.is_some(), "counter {name} without _total");
        self.register(base.unwrap_or(name), help, Counter::default())
    }

    fn gauge(&mut self, name: &str, help: &str) -> CountGauge {
        self.register(name, help, CountGauge::default())
    }

    /// A family labelled `proto`, with its two members (created now, so both show at zero).
    fn by_proto<M>(&mut self, name: &str, help: &str) -> ByProto<M>
    where
        M: Default + Clone + prometheus_client::metrics::TypedMetric,
        Family<ProtoLabel, M>: Metric,
    {
        let family = Family::<ProtoLabel, M>::default();
        let name = if M::TYPE == prometheus_client::metrics::MetricType::Counter {
            let base = name.strip_suffix("_total");
            debug_assert!(base.is_some(), "counter {name} without _total");
            base.unwrap_or(name)
        } else {
            name
        };
        let family = self.register(name, help, family);
        ByProto {
            sip: family.get_or_create_owned(&SIP),
            http: family.get_or_create_owned(&HTTP),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_types_and_labels_are_those_scrapers_read() {
        let m = Metrics::new(None, None);
        m.update(&Snapshot {
            proxy: cpm_proxy::Stats {
                requests_received: 7,
                auth_failures: 3,
                ..Default::default()
            },
            registrations: 2,
            store: StoreStats {
                execute_nanos: 1_500_000_000,
                ..Default::default()
            },
            ..Default::default()
        });
        // A counter that is set again to a value it already has does not move.
        m.update(&Snapshot {
            proxy: cpm_proxy::Stats {
                requests_received: 7,
                auth_failures: 3,
                ..Default::default()
            },
            registrations: 1,
            store: StoreStats {
                execute_nanos: 1_500_000_000,
                ..Default::default()
            },
            ..Default::default()
        });
        let page = m.render();
        for line in [
            "# HELP cpm_sip_requests_received_total SIP requests received and parsed.",
            "# TYPE cpm_sip_requests_received_total counter",
            "cpm_sip_requests_received_total 7",
            "# HELP cpm_registrations Live registration bindings.",
            "# TYPE cpm_registrations gauge",
            "cpm_registrations 1",
            "cpm_pf_in_progress 0",
            "# HELP cpm_auth_failures_total Failed authentications (wrong password or unknown user).",
            "# TYPE cpm_auth_failures_total counter",
            "cpm_auth_failures_total{proto=\"sip\"} 3",
            "cpm_auth_failures_total{proto=\"http\"} 0",
            "# TYPE cpm_auth_blocked_users gauge",
            "cpm_auth_blocked_users{proto=\"sip\"} 0",
            "cpm_auth_blocked_users{proto=\"http\"} 0",
            "cpm_tcp_connections 0",
            "cpm_http_connection_errors_total 0",
            "# TYPE cpm_store_commit_seconds_total counter",
            "cpm_store_commit_seconds_total 1.5",
            "cpm_store_failed_batches_total 0",
        ] {
            assert!(page.lines().any(|l| l == line), "{line:?} not in\n{page}");
        }
        // Every metric once, each with its help and type, no help without its period.
        let types = page.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = page.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!((types, helps), (56, 56));
        assert!(!page.contains("_total_total") && !page.contains(".."));
        assert!(!page.contains("# EOF"));
    }
}
