//! `cpm serve`: the node. One loop owns the SIP/IP Core; it feeds the core what the transport
//! receives, runs its timer, answers its user-directory queries from the store, and sends what
//! it outputs. No SIP decision is made here.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cpm_conversation::{ParticipatingFunction, PfConfig};
use cpm_proxy::{Input, Output, Proxy, ProxyConfig, RegistrarConfig, TrustedPeer, UserRecord};
use cpm_runtime::store::StoreExecutor;
use cpm_runtime::{NetEvent, SipTransport, SipTransportConfig, SipTransportHandle};
use cpm_sip::{Limits, Message};
use cpm_sip_core::digest::Algorithm;
use cpm_sip_core::{Peer, Transmit, TransportKind};
use cpm_store::{
    Backend, OpError, OpId, Outcome, SqliteBackend, SqliteOptions, Store, StoreOp, Synchronous,
};
use tokio::sync::watch;

use crate::config::NodeConfig;

/// Counters and gauges shared with the HTTP endpoint; written by the core loop.
#[derive(Default)]
struct Metrics {
    requests_received: AtomicU64,
    responses_received: AtomicU64,
    parse_errors: AtomicU64,
    transactions_started: AtomicU64,
    requests_forwarded: AtomicU64,
    messages_forwarded: AtomicU64,
    registrations_accepted: AtomicU64,
    auth_challenges: AtomicU64,
    local_failures: AtomicU64,
    registrations: AtomicU64,
    transactions: AtomicU64,
    user_lookups: AtomicU64,
    send_failures: AtomicU64,
    pf_messages_sent: AtomicU64,
    pf_messages_received: AtomicU64,
    pf_delivered: AtomicU64,
    pf_deferred: AtomicU64,
    pf_deferred_delivered: AtomicU64,
    pf_expired: AtomicU64,
    pf_imdns: AtomicU64,
    pf_duplicates: AtomicU64,
    pf_store_failures: AtomicU64,
    pf_in_progress: AtomicU64,
    pf_cpim_from_corrected: AtomicU64,
    pf_deferred_refused: AtomicU64,
    store_batches: AtomicU64,
    store_ops: AtomicU64,
    store_queue: AtomicU64,
    store_execute_nanos: AtomicU64,
    store_failed_batches: AtomicU64,
    auth_failures: AtomicU64,
    auth_refused: AtomicU64,
    auth_blocks: AtomicU64,
    auth_blocked_sources: AtomicU64,
    auth_blocked_users: AtomicU64,
    replays_refused: AtomicU64,
    rate_limited: AtomicU64,
    relay_refused: AtomicU64,
    sender_refused: AtomicU64,
    /// The HTTP API's guards, read when `/metrics` is rendered.
    http_guard: Option<Arc<std::sync::Mutex<crate::api::HttpGuard>>>,
    /// The SIP transport, whose counters are read when `/metrics` is rendered.
    transport: Option<SipTransportHandle>,
    /// The HTTP server's connection counters.
    http: Arc<crate::http::HttpStats>,
}

impl Metrics {
    fn update(&self, cores: &Cores) {
        let p = &cores.proxy;
        self.user_lookups.store(cores.lookups, Ordering::Relaxed);
        if let Some(pf) = &cores.pf {
            let f = pf.stats();
            let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
            set(&self.pf_messages_sent, f.messages_sent);
            set(&self.pf_messages_received, f.messages_received);
            set(&self.pf_delivered, f.delivered);
            set(&self.pf_deferred, f.deferred);
            set(&self.pf_deferred_delivered, f.deferred_delivered);
            set(&self.pf_expired, f.expired);
            set(&self.pf_imdns, f.imdns);
            set(&self.pf_duplicates, f.duplicates);
            set(&self.pf_store_failures, f.store_failures);
            set(&self.pf_cpim_from_corrected, f.cpim_from_corrected);
            set(&self.pf_deferred_refused, f.deferred_refused);
            set(&self.pf_in_progress, pf.in_progress() as u64);
        }
        let st = cores.executor.stats();
        self.store_batches.store(st.batches, Ordering::Relaxed);
        self.store_ops.store(st.ops, Ordering::Relaxed);
        self.store_queue.store(st.queue_depth, Ordering::Relaxed);
        self.store_execute_nanos
            .store(st.execute_nanos, Ordering::Relaxed);
        self.store_failed_batches
            .store(st.failed_batches, Ordering::Relaxed);
        let s = p.stats();
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.requests_received, s.requests_received);
        set(&self.responses_received, s.responses_received);
        set(&self.parse_errors, s.parse_errors);
        set(&self.transactions_started, s.transactions_started);
        set(&self.requests_forwarded, s.requests_forwarded);
        set(&self.messages_forwarded, s.messages_forwarded);
        set(&self.registrations_accepted, s.registrations_accepted);
        set(&self.auth_challenges, s.auth_challenges);
        set(&self.local_failures, s.local_failures);
        set(&self.registrations, p.registrations() as u64);
        set(&self.auth_failures, s.auth_failures);
        set(&self.auth_refused, s.auth_refused);
        set(&self.auth_blocks, s.auth_blocks);
        set(&self.auth_blocked_sources, s.auth_blocked_sources);
        set(&self.auth_blocked_users, s.auth_blocked_users);
        set(&self.replays_refused, s.replays_refused);
        set(&self.rate_limited, s.rate_limited);
        set(&self.relay_refused, s.relay_refused);
        set(&self.sender_refused, s.sender_refused);
        set(&self.transactions, p.transactions() as u64);
    }

    /// Prometheus text exposition format 0.0.4.
    fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        metric(
            "cpm_sip_requests_received_total",
            "counter",
            "SIP requests received and parsed.",
            g(&self.requests_received),
        );
        metric(
            "cpm_sip_responses_received_total",
            "counter",
            "SIP responses received and parsed.",
            g(&self.responses_received),
        );
        metric(
            "cpm_sip_parse_errors_total",
            "counter",
            "Messages that failed to parse.",
            g(&self.parse_errors),
        );
        metric(
            "cpm_sip_transactions_started_total",
            "counter",
            "Server transactions created.",
            g(&self.transactions_started),
        );
        metric(
            "cpm_sip_transactions",
            "gauge",
            "Live SIP transactions.",
            g(&self.transactions),
        );
        metric(
            "cpm_sip_requests_forwarded_total",
            "counter",
            "Requests forwarded (each fork counts).",
            g(&self.requests_forwarded),
        );
        metric(
            "cpm_messages_forwarded_total",
            "counter",
            "SIP MESSAGE requests forwarded.",
            g(&self.messages_forwarded),
        );
        metric(
            "cpm_registrations",
            "gauge",
            "Live registration bindings.",
            g(&self.registrations),
        );
        metric(
            "cpm_registrations_accepted_total",
            "counter",
            "REGISTER requests accepted.",
            g(&self.registrations_accepted),
        );
        metric(
            "cpm_auth_challenges_total",
            "counter",
            "401/407 digest challenges sent.",
            g(&self.auth_challenges),
        );
        metric(
            "cpm_sip_local_failures_total",
            "counter",
            "4xx-6xx responses generated by the node.",
            g(&self.local_failures),
        );
        metric(
            "cpm_user_lookups_total",
            "counter",
            "User directory reads.",
            g(&self.user_lookups),
        );
        metric(
            "cpm_sip_send_failures_total",
            "counter",
            "Messages the transport could not send.",
            g(&self.send_failures),
        );
        for (name, kind, help, v) in [
            (
                "cpm_pf_messages_sent_total",
                "counter",
                "Messages stored in a sender's history.",
                &self.pf_messages_sent,
            ),
            (
                "cpm_pf_messages_received_total",
                "counter",
                "Messages stored in a recipient's history.",
                &self.pf_messages_received,
            ),
            (
                "cpm_pf_delivered_total",
                "counter",
                "Messages a device accepted at once.",
                &self.pf_delivered,
            ),
            (
                "cpm_pf_deferred_total",
                "counter",
                "Messages answered 202 and queued for deferred delivery.",
                &self.pf_deferred,
            ),
            (
                "cpm_pf_deferred_delivered_total",
                "counter",
                "Deferred messages delivered after a registration.",
                &self.pf_deferred_delivered,
            ),
            (
                "cpm_pf_expired_total",
                "counter",
                "Deferred messages that expired.",
                &self.pf_expired,
            ),
            (
                "cpm_pf_imdns_total",
                "counter",
                "IMDNs passed through the PF.",
                &self.pf_imdns,
            ),
            (
                "cpm_pf_duplicates_total",
                "counter",
                "Messages recognised as already stored.",
                &self.pf_duplicates,
            ),
            (
                "cpm_pf_store_failures_total",
                "counter",
                "Store operations that failed.",
                &self.pf_store_failures,
            ),
            (
                "cpm_pf_deferred_refused_total",
                "counter",
                "Messages refused because the recipient's deferred queue was full.",
                &self.pf_deferred_refused,
            ),
            (
                "cpm_pf_cpim_from_corrected_total",
                "counter",
                "CPIM bodies whose From named another than the sender, set to the sender.",
                &self.pf_cpim_from_corrected,
            ),
            (
                "cpm_pf_in_progress",
                "gauge",
                "Message requests in progress in the PF.",
                &self.pf_in_progress,
            ),
            (
                "cpm_store_batches_total",
                "counter",
                "Store transactions committed (group commit).",
                &self.store_batches,
            ),
            (
                "cpm_store_ops_total",
                "counter",
                "Store operations executed.",
                &self.store_ops,
            ),
            (
                "cpm_store_queue_depth",
                "gauge",
                "Store operations waiting for the writer.",
                &self.store_queue,
            ),
        ] {
            metric(name, kind, help, g(v));
        }
        // The guards of SIP (the core's counters) and of the HTTP API, labelled by protocol.
        let http = self
            .http_guard
            .as_ref()
            .map(|g| {
                g.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .stats()
            })
            .unwrap_or_default();
        let mut labelled = |name: &str, kind: &str, help: &str, sip: u64, http: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{proto=\"sip\"}} {sip}\n{name}{{proto=\"http\"}} {http}\n"
            ));
        };
        labelled(
            "cpm_auth_failures_total",
            "counter",
            "Failed authentications (wrong password or unknown user).",
            g(&self.auth_failures),
            http.failures,
        );
        labelled(
            "cpm_auth_refused_total",
            "counter",
            "Requests refused because their source or user was blocked after failures.",
            g(&self.auth_refused),
            http.refused,
        );
        labelled(
            "cpm_auth_blocks_total",
            "counter",
            "Blocks started after failed authentications (sources and users).",
            g(&self.auth_blocks),
            http.blocks,
        );
        labelled(
            "cpm_auth_blocked_sources",
            "gauge",
            "Source addresses blocked now (updated every few seconds).",
            g(&self.auth_blocked_sources),
            http.blocked_sources,
        );
        labelled(
            "cpm_auth_blocked_users",
            "gauge",
            "Users blocked now for new devices (updated every few seconds).",
            g(&self.auth_blocked_users),
            http.blocked_users,
        );
        for (name, help, v) in [
            (
                "cpm_auth_replays_refused_total",
                "SIP credentials refused as replays (RFC 7616 nonce count).",
                &self.replays_refused,
            ),
            (
                "cpm_sip_rate_limited_total",
                "Out-of-dialog SIP requests over their source's rate (dropped or 503).",
                &self.rate_limited,
            ),
            (
                "cpm_sip_relay_refused_total",
                "Requests refused by the relay rule (preloaded Route, foreign target, no dialog of ours).",
                &self.relay_refused,
            ),
            (
                "cpm_sip_sender_refused_total",
                "Requests refused because their sender could not be who it said.",
                &self.sender_refused,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                g(v)
            ));
        }
        // The transports' connections (read now: the table lock is not taken per loop turn).
        let (tcp, udp_dropped) = self
            .transport
            .as_ref()
            .map(|t| (t.tcp_stats(), t.udp_flood_dropped()))
            .unwrap_or_default();
        let h = &self.http;
        for (name, kind, help, v) in [
            (
                "cpm_udp_flood_dropped_total",
                "counter",
                "UDP datagrams dropped unparsed for their source's datagram budget.",
                udp_dropped,
            ),
            (
                "cpm_tcp_connections",
                "gauge",
                "SIP TCP connections open.",
                tcp.open,
            ),
            (
                "cpm_tcp_refused_per_source_total",
                "counter",
                "SIP TCP connections closed at once: their address had its limit open.",
                tcp.refused_per_source,
            ),
            (
                "cpm_tcp_refused_full_total",
                "counter",
                "SIP TCP connections closed at once: the total limit, nothing to evict.",
                tcp.refused_full,
            ),
            (
                "cpm_tcp_evicted_total",
                "counter",
                "SIP TCP connections closed to make room (silent or longest idle first).",
                tcp.evicted,
            ),
            (
                "cpm_tcp_message_timeouts_total",
                "counter",
                "SIP TCP connections closed: a message (or the first) did not arrive in time.",
                tcp.message_timeouts,
            ),
            (
                "cpm_tcp_idle_closed_total",
                "counter",
                "SIP TCP connections closed by the idle timeout.",
                tcp.idle_closed,
            ),
            (
                "cpm_http_connections",
                "gauge",
                "HTTP connections open.",
                g(&h.open),
            ),
            (
                "cpm_http_refused_full_total",
                "counter",
                "HTTP connections closed at once: the total limit.",
                g(&h.refused_full),
            ),
            (
                "cpm_http_refused_per_source_total",
                "counter",
                "HTTP connections closed at once: their address had its limit open.",
                g(&h.refused_per_source),
            ),
            (
                "cpm_http_connection_errors_total",
                "counter",
                "HTTP connections that ended with an error (header timeouts among them).",
                g(&h.errors),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
        // Seconds as a float: the time the writer spent in transactions (with the batch count
        // this gives the commit latency).
        let secs = g(&self.store_execute_nanos) as f64 / 1e9;
        out.push_str(&format!(
            "# HELP cpm_store_commit_seconds_total Time spent running store transactions.\n\
             # TYPE cpm_store_commit_seconds_total counter\ncpm_store_commit_seconds_total {secs}\n"
        ));
        out.push_str(&format!(
            "# HELP cpm_store_failed_batches_total Store transactions that failed (nothing acknowledged).\n\
             # TYPE cpm_store_failed_batches_total counter\ncpm_store_failed_batches_total {}\n",
            g(&self.store_failed_batches)
        ));
        out
    }
}

/// Reads 32 random bytes from the OS.
fn os_random() -> std::io::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// The digest nonce secret, kept in the data directory so nonces survive a restart.
fn nonce_secret(data_dir: &Path) -> Result<[u8; 32], String> {
    let path = data_dir.join("nonce.secret");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(secret) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(secret);
    }
    let secret = os_random().map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    std::fs::write(&path, secret).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(secret)
}

fn proxy_config(
    cfg: &NodeConfig,
    advertised: std::net::SocketAddr,
    secret: [u8; 32],
) -> Result<ProxyConfig, String> {
    let mut pc = ProxyConfig::new(&cfg.domains[0], advertised);
    pc.domains = cfg.domains.iter().map(|d| d.to_ascii_lowercase()).collect();
    pc.trusted_peers = cfg
        .trusted_peers
        .iter()
        .map(|t| TrustedPeer::parse(t).ok_or_else(|| format!("bad trusted peer {t}")))
        .collect::<Result<_, _>>()?;
    pc.participating_function = cfg.participating_function;
    pc.peer_domains = cfg
        .peer_domains
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    pc.registrar = RegistrarConfig {
        min_expires: cfg.registrar.min_expires,
        max_expires: cfg.registrar.max_expires,
        default_expires: cfg.registrar.default_expires,
        max_bindings_per_aor: cfg.registrar.max_devices_per_user,
    };
    pc.nonce_ttl = Duration::from_secs(cfg.auth.nonce_ttl_secs);
    pc.digest_algorithms = cfg
        .auth
        .digest_algorithms
        .iter()
        .map(|a| Algorithm::parse(a).ok_or_else(|| format!("unknown digest algorithm {a}")))
        .collect::<Result<_, _>>()?;
    pc.nonce_secret = secret;
    pc.nonce_table_size = cfg.auth.nonce_table_size;
    pc.auth_throttle = cfg.auth.throttle();
    pc.source_rate = cfg.limits.requests_per_sec_per_source;
    pc.source_burst = cfg.limits.burst_per_source;
    pc.tracked_sources = cfg.limits.tracked_sources;
    // Our own addresses name our domain in URIs (look-alike senders must authenticate).
    pc.own_addresses = vec![cfg.sip_listen.ip(), advertised.ip()];
    let seed = os_random().map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    pc.rng_seed = u64::from_le_bytes([
        seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6], seed[7],
    ]);
    Ok(pc)
}

/// The transport's datagram budget per source, with the sources that have none: the trust
/// domain, the peer domains' cores and an external Participating Function.
fn udp_flood_guard(cfg: &NodeConfig) -> Result<cpm_runtime::UdpFloodGuard, String> {
    let host = |ip: std::net::IpAddr| (ip, if ip.is_ipv4() { 32 } else { 128 });
    let mut exempt: Vec<(std::net::IpAddr, u8)> = cfg
        .trusted_peers
        .iter()
        .map(|t| {
            TrustedPeer::parse(t)
                .map(|p| (p.addr, p.prefix))
                .ok_or_else(|| format!("bad trusted peer {t}"))
        })
        .collect::<Result<_, _>>()?;
    exempt.extend(cfg.peer_domains.values().map(|a| host(a.ip())));
    exempt.extend(cfg.participating_function.map(|a| host(a.ip())));
    Ok(cpm_runtime::UdpFloodGuard {
        packets_per_sec: cfg.limits.udp_packets_per_sec_per_source,
        burst: cfg.limits.udp_burst_per_source.max(1),
        exempt,
    })
}

fn lookup(store: &Store, username: &str, realm: &str) -> Option<UserRecord> {
    match store.user_credentials(username, realm) {
        Ok(Some(c)) => Some(UserRecord {
            aor: c.aor.clone(),
            ha1_md5: c.ha1(Algorithm::Md5).to_owned(),
            ha1_sha256: c.ha1(Algorithm::Sha256).to_owned(),
        }),
        Ok(None) => None,
        Err(e) => {
            // A store failure must not look like "no such user" forever; it is logged, and the
            // request is answered as for an unknown user (a challenge or 404), never accepted.
            tracing::error!(error = %e, "user directory read failed");
            None
        }
    }
}

/// The address of the in-process Participating Function. Port 1 (tcpmux) is never a SIP
/// peer's source port, so it cannot be mistaken for a real peer; nothing is ever sent to it
/// on a socket.
const INTERNAL_PF_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// The cores of one node and the wiring between them: the SIP/IP Core (proxy), the node's
/// own Participating Function, the user directory and the store executor. It moves messages
/// and store outcomes between them and decides nothing itself.
struct Cores {
    proxy: Proxy,
    pf: Option<ParticipatingFunction>,
    pf_addr: std::net::SocketAddr,
    core_addr: std::net::SocketAddr,
    store: Store,
    executor: StoreExecutor,
    lookups: u64,
    /// Operation ids of the proxy's registration writes, kept apart from the PF's.
    next_persist: u64,
}

/// The proxy's store operations carry this bit in their id (the PF's ids count from 1).
const PERSIST_OP_BIT: u64 = 1 << 63;

impl Cores {
    fn poll_timeout(&self) -> Option<Instant> {
        let p = self.proxy.poll_timeout();
        let f = self
            .pf
            .as_ref()
            .and_then(ParticipatingFunction::poll_timeout);
        match (p, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.proxy.handle_timeout(now);
        if let Some(pf) = &mut self.pf {
            pf.handle_timeout(now);
        }
    }

    fn stored(&mut self, now: Instant, id: OpId, result: Result<Outcome, OpError>) {
        if id.0 & PERSIST_OP_BIT != 0 {
            if let Err(e) = result {
                // The registration itself stands (it is in memory); only a restart loses it.
                tracing::warn!(error = %e, "could not store a registration");
            }
            return;
        }
        if let Some(pf) = &mut self.pf {
            pf.handle_input(now, cpm_conversation::Input::Stored { id, result });
        }
    }

    /// Drains every core's outputs until none has any: the network gets its transmits, the
    /// store its operations, and messages between the proxy and the PF go straight across.
    fn flush(&mut self, net: &SipTransportHandle) {
        let now = Instant::now();
        loop {
            let mut moved = false;
            while let Some(out) = self.proxy.poll_output() {
                moved = true;
                match out {
                    Output::Transmit(t) if self.pf.is_some() && t.peer.addr == self.pf_addr => {
                        if let Some(message) = internal_message(&t) {
                            let peer = Peer::tcp(self.core_addr, None);
                            if let Some(pf) = &mut self.pf {
                                pf.handle_input(
                                    now,
                                    cpm_conversation::Input::Message { peer, message },
                                );
                            }
                        }
                    }
                    Output::Transmit(t) => net.send(t),
                    Output::Close(conn) => net.close(conn),
                    Output::Persist(op) => {
                        self.next_persist += 1;
                        self.executor
                            .submit(OpId(PERSIST_OP_BIT | self.next_persist), *op);
                    }
                    Output::LookupUser {
                        query,
                        username,
                        realm,
                    } => {
                        self.lookups += 1;
                        let user = lookup(&self.store, &username, &realm);
                        self.proxy.handle_input(now, Input::User { query, user });
                    }
                    Output::Security(event) => crate::security::log(&event, "sip"),
                    _ => {}
                }
            }
            if let Some(pf) = &mut self.pf {
                while let Some(out) = pf.poll_output() {
                    moved = true;
                    match out {
                        cpm_conversation::Output::Transmit(t) if t.peer.addr == self.core_addr => {
                            if let Some(message) = internal_message(&t) {
                                let peer = Peer::tcp(self.pf_addr, None);
                                self.proxy
                                    .handle_input(now, Input::Message { peer, message });
                            }
                        }
                        cpm_conversation::Output::Transmit(t) => net.send(t),
                        cpm_conversation::Output::Store { id, op } => self.executor.submit(id, op),
                        _ => {}
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
}

/// A message between two cores of this node, parsed again as it would be off the wire.
fn internal_message(t: &Transmit) -> Option<Message> {
    match Message::parse_datagram(t.payload.clone(), &Limits::default()) {
        Ok(m) => Some(m),
        Err(e) => {
            // A core produced a message its own parser refuses: a bug, logged, not fatal.
            tracing::error!(error = %e, "internal message does not parse");
            None
        }
    }
}

/// Runs the node until SIGINT/SIGTERM. Returns an error message for the CLI.
pub(crate) fn serve(cfg: NodeConfig) -> Result<(), String> {
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", cfg.data_dir.display()))?;
    let _lock = crate::lock::DataDirLock::acquire(&cfg.data_dir)?;
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(2, usize::from)
    } else {
        cfg.threads
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(run(cfg))
}

async fn run(cfg: NodeConfig) -> Result<(), String> {
    let store = Store::open(&cfg.data_dir).map_err(|e| format!("cannot open the store: {e}"))?;
    let secret = nonce_secret(&cfg.data_dir)?;
    let mut tcfg = SipTransportConfig::new(cfg.sip_listen);
    tcfg.tcp_idle_timeout = Duration::from_secs(cfg.transport.tcp_idle_timeout_secs);
    tcfg.max_connections = cfg.transport.max_connections;
    tcfg.max_connections_per_source = cfg.transport.tcp_max_connections_per_source;
    tcfg.tcp_message_timeout = Duration::from_secs(cfg.transport.tcp_message_timeout_secs);
    tcfg.limits = Limits {
        max_body_len: cfg.transport.max_message_bytes,
        ..Limits::default()
    };
    if cfg.limits.udp_packets_per_sec_per_source > 0 {
        tcfg.udp_flood_guard = Some(udp_flood_guard(&cfg)?);
    }
    let (mut transport, handle) = SipTransport::bind(tcfg)
        .await
        .map_err(|e| format!("cannot listen for SIP on {}: {e}", cfg.sip_listen))?;
    let sip_addr = transport.local_addr();
    let advertised = cfg.advertise.unwrap_or(sip_addr);

    let http_guard = Arc::new(std::sync::Mutex::new(crate::api::HttpGuard::new(
        cfg.auth.nonce_table_size,
        cfg.auth.throttle(),
        os_random().map_or(1, |b| {
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        }),
    )));
    let metrics = Arc::new(Metrics {
        http_guard: Some(http_guard.clone()),
        transport: Some(handle.clone()),
        ..Metrics::default()
    });
    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", cfg.http_listen))?;
    let http_addr = listener
        .local_addr()
        .map_err(|e| format!("HTTP listener: {e}"))?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let api_state = crate::api::ApiState {
        store: Arc::new(std::sync::Mutex::new(
            Store::open(&cfg.data_dir).map_err(|e| format!("cannot open the store: {e}"))?,
        )),
        realm: cfg.domains[0].to_ascii_lowercase(),
        nonce_key: cpm_sip_core::digest::NonceKey::new(secret),
        nonce_ttl_secs: cfg.auth.nonce_ttl_secs,
        algorithms: cfg
            .auth
            .digest_algorithms
            .iter()
            .filter_map(|a| Algorithm::parse(a))
            .collect(),
        guard: http_guard,
    };
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .with_state(metrics.clone())
        .merge(
            Router::new()
                .route("/api/v1/history", get(crate::api::history))
                .with_state(api_state),
        );
    let http_limits = crate::http::HttpLimits {
        max_connections: cfg.http.max_connections,
        max_connections_per_source: cfg.http.max_connections_per_source,
        idle_timeout: Duration::from_secs(cfg.http.idle_timeout_secs),
    };
    let http = tokio::spawn(crate::http::serve(
        listener,
        app,
        http_limits,
        metrics.http.clone(),
        stop_rx.clone(),
    ));

    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });

    let start = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // The node's own PF, unless an external one is configured. It has an address of its own
    // that never reaches a socket: the loop below hands what the proxy sends there to the PF,
    // and what the PF sends to the proxy's address back to the proxy.
    let in_process_pf = cfg.participating_function.is_none();
    let mut pcfg = proxy_config(&cfg, advertised, secret)?;
    if in_process_pf {
        pcfg.participating_function = Some(INTERNAL_PF_ADDR);
        pcfg.pf_transport = TransportKind::Tcp;
        // The PF serves pager mode; CPM sessions (INVITE) are relayed until it anchors them.
        pcfg.pf_methods = vec![cpm_sip::Method::Message];
    }
    let proxy = Proxy::new(pcfg, start, unix / 1000);
    let pf = in_process_pf.then(|| {
        let mut c = PfConfig::new(INTERNAL_PF_ADDR, advertised);
        // The link to the proxy is a hand-off inside this loop: lossless and ordered.
        c.core_transport = TransportKind::Tcp;
        c.delivery_timeout = Duration::from_millis(cfg.pf.delivery_timeout_ms);
        c.deferred_ttl =
            (cfg.pf.deferred_ttl_secs > 0).then(|| Duration::from_secs(cfg.pf.deferred_ttl_secs));
        c.expiry_interval = Duration::from_millis(cfg.pf.expiry_interval_ms);
        c.max_in_progress = cfg.pf.max_in_progress;
        c.deferred_quota = Some(cpm_store::DeferredQuota {
            max_messages: cfg.pf.max_deferred_per_recipient,
            max_bytes: cfg.pf.max_deferred_bytes_per_recipient,
            max_per_sender: cfg.pf.max_deferred_per_sender,
        });
        c.rng_seed = os_random().map_or(1, |b| {
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        });
        ParticipatingFunction::new(c, start, unix)
    });
    let sync = if cfg.store.synchronous == "normal" {
        Synchronous::Normal
    } else {
        Synchronous::Full
    };
    let mut backend = SqliteBackend::open_with(
        &cfg.data_dir,
        SqliteOptions::default().with_synchronous(sync),
    )
    .map_err(|e| format!("cannot open the message store: {e}"))?;
    // The registrations of the previous run, read before anything else runs (STYLE 3.5:
    // recovery reads happen at start, not lazily from inside a core).
    let loaded = backend.execute(vec![(OpId(0), StoreOp::LoadBindings { now_ms: unix })]);
    let records = match loaded.into_iter().next() {
        Some((_, Ok(Outcome::Bindings(r)))) => r,
        Some((_, Err(e))) => return Err(format!("cannot read the stored registrations: {e}")),
        _ => Vec::new(),
    };
    let (executor, mut results) = StoreExecutor::spawn(Box::new(backend), cfg.store.max_batch);
    let mut proxy = proxy;
    let restored = proxy.restore_bindings(start, unix, &records);
    if restored > 0 {
        tracing::info!(bindings = restored, "registrations restored from the store");
    }
    let mut cores = Cores {
        proxy,
        pf,
        pf_addr: INTERNAL_PF_ADDR,
        core_addr: advertised,
        store,
        executor,
        lookups: 0,
        next_persist: 0,
    };
    tracing::info!(
        sip = %sip_addr, http = %http_addr, domains = ?cfg.domains, data_dir = %cfg.data_dir.display(),
        participating_function = if in_process_pf { "in process" } else { "external" },
        "cpm serve: listening (SIP UDP+TCP, admin HTTP)"
    );
    let mut send_failures = 0u64;
    // What the restore produced (third-party REGISTERs to the PF) goes out now.
    cores.flush(&handle);
    loop {
        let deadline = cores.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = transport.recv() => {
                // Handle the whole burst that is already queued before flushing: fewer
                // wake-ups per message under load.
                let mut next = Some(ev);
                let mut budget = 256;
                while let Some(ev) = next.take() {
                    let now = Instant::now();
                    if let Some(input) = to_input(ev, &mut send_failures) {
                        cores.proxy.handle_input(now, input);
                    }
                    budget -= 1;
                    if budget > 0 {
                        next = transport.try_recv();
                    }
                }
            }
            res = results.recv() => {
                let mut next = res;
                let mut budget = 4096;
                while let Some((id, result)) = next.take() {
                    cores.stored(Instant::now(), id, result);
                    budget -= 1;
                    if budget > 0 {
                        next = results.try_recv();
                    }
                }
            }
            () = sleep => {
                // Decide expiry by the clock, not by trusting the wake-up (STYLE 3.4).
                cores.handle_timeout(Instant::now());
            }
            _ = stop_rx.wait_for(|s| *s) => break,
        }
        cores.flush(&handle);
        metrics.update(&cores);
        metrics
            .send_failures
            .store(send_failures, Ordering::Relaxed);
    }
    // Let the store finish what the cores asked for before the process ends.
    drop(cores);
    tracing::info!("cpm serve: shutting down");
    handle.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    Ok(())
}

/// A transport event as a core input (a failed send is only counted: the transaction timers
/// cover the loss).
fn to_input(ev: NetEvent, send_failures: &mut u64) -> Option<Input> {
    Some(match ev {
        NetEvent::Message { peer, message } => Input::Message { peer, message },
        NetEvent::ParseError {
            peer,
            error,
            raw_head,
        } => {
            tracing::debug!(%error, peer = %peer.addr, "unparsable message");
            Input::ParseError {
                peer,
                error,
                raw: raw_head,
            }
        }
        NetEvent::KeepAlive { peer } => Input::KeepAlive { peer },
        NetEvent::ConnectionClosed { conn, .. } => Input::ConnectionClosed { conn },
        NetEvent::SendFailed {
            transmit_peer,
            reason,
        } => {
            *send_failures += 1;
            tracing::debug!(peer = %transmit_peer.addr, %reason, "send failed");
            return None;
        }
    })
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
