//! `cpm serve`: the node. One loop per shard (`--threads`) owns that shard's [`Node`]; it
//! feeds the node what the transport dispatched to the shard, runs its timer, answers its
//! user-directory queries from the store, passes its messages for other shards on, and sends
//! what it outputs. No SIP decision is made here: which shard gets what is the node's
//! [`cpm_node::Router`].

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use cpm_node::{Event, Input, Node, Output, ShardHop};
use cpm_proxy::{
    ApplicationServer, Input as CoreInput, ProxyConfig, RegistrarConfig, Service, TrustedPeer,
};
use cpm_runtime::store::StoreExecutor;
use cpm_runtime::{
    MsrpHandle, MsrpTransport, MsrpTransportConfig, NetEvent, SipTransport, SipTransportConfig,
    SipTransportHandle,
};
use cpm_sip::Limits;
use cpm_sip_core::Peer;
use cpm_sip_core::digest::Algorithm;
use cpm_store::{
    Backend, OpId, Outcome, SqliteBackend, SqliteOptions, Store, StoreOp, Synchronous,
};
use tokio::sync::watch;

use crate::config::NodeConfig;

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
    pc.overload = cfg.overload.config();
    pc.max_transactions = cfg.overload.max_transactions;
    pc.max_store_in_flight = cfg.overload.max_store_in_flight;
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

/// The node's configuration from the file's: the SIP/IP Core, and the node's own
/// Participating Function unless an external one is configured (then the core's
/// application-server table names it, over UDP).
fn node_config(
    cfg: &NodeConfig,
    advertised: std::net::SocketAddr,
    secret: [u8; 32],
) -> Result<cpm_node::NodeConfig, String> {
    let mut core = proxy_config(cfg, advertised, secret)?;
    if let Some(addr) = cfg.participating_function {
        core.application_servers.push(ApplicationServer {
            service: Service::Any,
            server: Peer::udp(addr),
        });
        return Ok(cpm_node::NodeConfig {
            core,
            participating: None,
            trace_hops: false,
            shards: cpm_node::Shards::default(),
        });
    }
    let mut node = cpm_node::NodeConfig::new(core);
    node.trace_hops = tracing::enabled!(target: "cpm::hop", tracing::Level::TRACE);
    if let Some(c) = &mut node.participating {
        c.delivery_timeout = Duration::from_millis(cfg.pf.delivery_timeout_ms);
        c.deferred_ttl =
            (cfg.pf.deferred_ttl_secs > 0).then(|| Duration::from_secs(cfg.pf.deferred_ttl_secs));
        c.expiry_interval = Duration::from_millis(cfg.pf.expiry_interval_ms);
        c.max_in_progress = cfg.pf.max_in_progress;
        c.max_pager_message = cfg.pf.max_pager_bytes;
        c.deferred_quota = Some(cpm_store::DeferredQuota {
            max_messages: cfg.pf.max_deferred_per_recipient,
            max_bytes: cfg.pf.max_deferred_bytes_per_recipient,
            max_per_sender: cfg.pf.max_deferred_per_sender,
        });
        c.rng_seed = os_random().map_or(1, |b| {
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        });
    }
    Ok(node)
}

/// What a shard's outputs go to: the SIP transport, the store executor, the user
/// directory, the other shards. It carries them out and decides nothing.
struct Io {
    /// The shard it serves.
    shard: usize,
    net: SipTransportHandle,
    msrp: MsrpHandle,
    executor: Arc<StoreExecutor>,
    directory: crate::directory::Directory,
    /// To each shard's loop (FIFO per pair of shards, as the node requires).
    shards: Vec<tokio::sync::mpsc::UnboundedSender<ShardHop>>,
}

impl Io {
    /// Carries out every output the node has (the match is exhaustive on purpose: a new
    /// output fails to compile here until it is handled).
    fn drain(&self, node: &mut Node) {
        let mut transmits = Vec::new();
        while let Some(out) = node.poll_output() {
            match out {
                Output::Transmit(t) => transmits.push(t),
                Output::Close(conn) => {
                    // What was answered on the connection goes out before it closes.
                    self.net.send_batch(std::mem::take(&mut transmits));
                    self.net.close(conn);
                }
                Output::Store { id, op } => self.executor.submit(id, op),
                Output::Msrp(cmd) => self.msrp.execute(self.shard, cmd),
                Output::LookupUser {
                    query,
                    username,
                    realm,
                } => self.directory.ask(self.shard, query, username, realm),
                Output::Shard(hop) => match self.shards.get(usize::from(hop.shard)) {
                    // Unbounded: every hop is work a shard already admitted (the overload
                    // control bounds it at the entry), and two shards must never wait on
                    // each other.
                    Some(to) => {
                        let _ = to.send(hop);
                    }
                    None => {
                        tracing::error!(shard = hop.shard, "a hop to a shard that does not run")
                    }
                },
                Output::Event(event) => match event {
                    Event::Security(e) => crate::security::log(&e, "sip"),
                    Event::PersistFailed(e) => {
                        // The registration itself stands (it is in memory); only a restart
                        // loses it.
                        tracing::warn!(error = %e, "could not store a registration");
                    }
                    Event::Hop { from, to, message } => {
                        tracing::trace!(target: "cpm::hop", from = from.name(), to = to.name(), "{}", first_line(&message));
                    }
                    Event::NoSuchFunction(f) => {
                        tracing::error!(
                            function = f.name(),
                            "a message for a function this node does not run"
                        );
                    }
                },
            }
        }
        // In the order the node produced them, in one batch (one wake-up of the send task).
        self.net.send_batch(transmits);
    }
}

/// The start line of a message, for traces.
fn first_line(m: &cpm_sip::Message) -> String {
    match m {
        cpm_sip::Message::Request(r) => format!("{} {}", r.method, r.uri),
        cpm_sip::Message::Response(r) => format!("{} {}", r.status.as_u16(), r.reason),
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
    rt.block_on(run(cfg, threads))
}

/// How many node shards: one per thread, at most [`MAX_SHARDS`]; one with an external
/// Participating Function (its terminating requests come back over the network with no
/// shard of ours to name, and the user state they need is on the target's shard).
fn shard_count(cfg: &NodeConfig, threads: usize) -> u16 {
    if cfg.participating_function.is_some() {
        return 1;
    }
    u16::try_from(threads.clamp(1, usize::from(MAX_SHARDS))).unwrap_or(1)
}

/// The most node shards (the store's operation ids keep 16 bits for the shard).
const MAX_SHARDS: u16 = 256;

/// A limit of the whole node shared out between its shards (rounded up).
fn per_shard(total: usize, shards: u16) -> usize {
    total.div_ceil(usize::from(shards)).max(1)
}

async fn run(cfg: NodeConfig, threads: usize) -> Result<(), String> {
    let shards = shard_count(&cfg, threads);
    // Opening the store first creates and migrates it; this connection reads the user
    // directory on a thread of its own.
    let (directory, user_answers) =
        crate::directory::Directory::spawn(&cfg.data_dir, usize::from(shards))?;
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
    // The router needs only the node's names and addresses, known before the port is (a
    // port 0 changes no address): the transport dispatches with it from the first datagram.
    let router = cpm_node::Router::new(
        &proxy_config(&cfg, cfg.advertise.unwrap_or(cfg.sip_listen), secret)?,
        shards,
    );
    let sip_router = router.clone();
    let dispatch: cpm_runtime::Dispatcher = Arc::new(move |ev: &NetEvent| match ev {
        NetEvent::Message { peer, message } => {
            Some(usize::from(sip_router.shard_of(message, peer.addr)))
        }
        NetEvent::ParseError { peer, .. } | NetEvent::KeepAlive { peer } => {
            Some(usize::from(sip_router.shard_of_source(peer.addr)))
        }
        // Every shard forgets the flows of a closed connection.
        NetEvent::ConnectionClosed { .. } => None,
        // Only counted.
        NetEvent::SendFailed { .. } => Some(0),
    });
    let (transports, handle) =
        SipTransport::bind_sharded(tcfg, usize::from(shards), Some(dispatch))
            .await
            .map_err(|e| format!("cannot listen for SIP on {}: {e}", cfg.sip_listen))?;
    let sip_addr = handle.local_addr();
    let advertised = cfg.advertise.unwrap_or(sip_addr);
    // The MSRP listener of the sessions the PF anchors; each head goes to the shard whose PF
    // wrote the session id it names.
    let msrp_listen = cfg.msrp_listen.unwrap_or_else(|| {
        let port = if cfg.sip_listen.port() == 0 { 0 } else { 2855 };
        std::net::SocketAddr::new(cfg.sip_listen.ip(), port)
    });
    let msrp_router = router.clone();
    let msrp_dispatch: cpm_runtime::MsrpDispatcher =
        Arc::new(move |head| usize::from(msrp_router.msrp_shard(head)));
    let mut msrp_cfg = MsrpTransportConfig::new(msrp_listen);
    msrp_cfg.max_connections = cfg.transport.msrp_max_connections;
    // What the SDP names when bound to a wildcard: connections to it stay in process.
    msrp_cfg.own_ips.push(advertised.ip());
    let (msrp_transports, msrp) =
        MsrpTransport::bind_sharded(msrp_cfg, usize::from(shards), msrp_dispatch)
            .await
            .map_err(|e| format!("cannot listen for MSRP on {msrp_listen}: {e}"))?;
    // What the SDP names: the bound port, on the advertised address when bound to a wildcard.
    let msrp_addr = {
        let bound = msrp.local_addr();
        if bound.ip().is_unspecified() {
            std::net::SocketAddr::new(advertised.ip(), bound.port())
        } else {
            bound
        }
    };

    let http_guard = Arc::new(std::sync::Mutex::new(crate::api::HttpGuard::new(
        cfg.auth.nonce_table_size,
        cfg.auth.throttle(),
        os_random().map_or(1, |b| {
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        }),
    )));
    let metrics = Arc::new(
        crate::metrics::Metrics::new(Some(http_guard.clone()), Some(handle.clone()))
            .with_shards(usize::from(shards)),
    );
    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", cfg.http_listen))?;
    let http_addr = listener
        .local_addr()
        .map_err(|e| format!("HTTP listener: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
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
        .route("/metrics", get(crate::metrics::handler))
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
    let mut node_cfg = node_config(&cfg, advertised, secret)?;
    if let Some(pf) = &mut node_cfg.participating {
        pf.msrp = Some(msrp_addr);
    }
    // The node's limits are the node's: each shard takes its share.
    node_cfg.core.max_transactions = per_shard(node_cfg.core.max_transactions, shards);
    node_cfg.core.max_store_in_flight = per_shard(node_cfg.core.max_store_in_flight, shards);
    node_cfg.core.max_pending_lookups = per_shard(node_cfg.core.max_pending_lookups, shards);
    let in_process_pf = node_cfg.participating.is_some();
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
    let (executor, results) = StoreExecutor::spawn_sharded(
        Box::new(backend),
        cfg.store.max_batch,
        usize::from(shards),
        |id| usize::from(cpm_node::shard_of_op(id)),
    );
    let executor = Arc::new(executor);
    let router = cpm_node::Router::new(&node_cfg.core, shards);
    let mut by_shard: Vec<Vec<_>> = vec![Vec::new(); usize::from(shards)];
    for r in records {
        by_shard[usize::from(router.shard_of_aor(&r.aor))].push(r);
    }
    let delays: Arc<Vec<AtomicU64>> = Arc::new((0..shards).map(|_| AtomicU64::new(0)).collect());
    let (hop_tx, hop_rx): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let mut loops = Vec::new();
    let mut restored = 0;
    for ((((index, transport), msrp_events), (results, answers)), (hops, records)) in (0..shards)
        .zip(transports)
        .zip(msrp_transports)
        .zip(results.into_iter().zip(user_answers))
        .zip(hop_rx.into_iter().zip(by_shard))
    {
        let mut c = node_cfg.clone();
        c.shards = cpm_node::Shards {
            index,
            count: shards,
        };
        let mut node = Node::new(c, start, unix);
        restored += node.restore_bindings(start, unix, &records);
        let io = Io {
            shard: usize::from(index),
            net: handle.clone(),
            msrp: msrp.clone(),
            executor: Arc::clone(&executor),
            directory: directory.clone(),
            shards: hop_tx.clone(),
        };
        let shard = Shard {
            node,
            io,
            transport,
            msrp: msrp_events,
            results,
            answers,
            hops,
            metrics: Arc::clone(&metrics),
            delays: Arc::clone(&delays),
            stop: stop_rx.clone(),
        };
        loops.push(tokio::spawn(shard.run()));
    }
    drop((hop_tx, directory));
    if restored > 0 {
        tracing::info!(bindings = restored, "registrations restored from the store");
    }
    tracing::info!(
        sip = %sip_addr, msrp = %msrp_addr, http = %http_addr, domains = ?cfg.domains, data_dir = %cfg.data_dir.display(),
        participating_function = if in_process_pf { "in process" } else { "external" },
        shards,
        "cpm serve: listening (SIP UDP+TCP, MSRP TCP, admin HTTP)"
    );
    for l in loops {
        if let Err(e) = l.await {
            tracing::error!(error = %e, "a shard's loop ended abnormally");
        }
    }
    // Every shard's node is gone: the store finishes what they asked for before the process
    // ends (the last reference joins its thread).
    drop(executor);
    tracing::info!("cpm serve: shutting down");
    handle.shutdown();
    msrp.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    Ok(())
}

/// One shard of the node and what its loop reads from.
struct Shard {
    node: Node,
    io: Io,
    /// What the transport dispatched to this shard.
    transport: SipTransport,
    /// What the MSRP transport dispatched to this shard.
    msrp: MsrpTransport,
    results: cpm_runtime::StoreResults,
    answers: crate::directory::Answers,
    /// Messages from the other shards' functions.
    hops: tokio::sync::mpsc::UnboundedReceiver<ShardHop>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Each shard's standing queue delay (µs) as its loop last saw it: a shard refuses new
    /// requests while another's stands above the target, or the node would keep taking work
    /// one shard cannot do (the terminating half of a message is its target's shard's).
    delays: Arc<Vec<AtomicU64>>,
    stop: watch::Receiver<bool>,
}

impl Shard {
    /// The loop: until the stop signal.
    async fn run(mut self) {
        let Self {
            node,
            io,
            transport,
            msrp,
            results,
            answers,
            hops,
            metrics,
            delays,
            stop,
        } = &mut self;
        let mut send_failures = 0u64;
        let me = io.shard;
        // What the restore produced (third-party REGISTERs to the PF) goes out now.
        io.drain(node);
        loop {
            let others = delays
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != me)
                .map(|(_, d)| d.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            node.set_remote_delay(Duration::from_micros(others));
            // How long what this turn handled had waited (the last of the batch).
            let mut waited = Duration::ZERO;
            let deadline = node.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = transport.recv_stamped() => {
                    // Handle the whole burst that is already queued before draining: fewer
                    // wake-ups per message under load.
                    let mut next = Some(ev);
                    let mut budget = 256;
                    while let Some((received, ev)) = next.take() {
                        let now = Instant::now();
                        waited = now.saturating_duration_since(received);
                        if let Some(input) = to_input(ev, &mut send_failures) {
                            node.handle_input(now, Input::Network { received, input });
                        }
                        budget -= 1;
                        if budget > 0 {
                            next = transport.try_recv_stamped();
                        }
                    }
                }
                Some(ev) = msrp.recv() => {
                    let mut next = Some(ev);
                    let mut budget = 256;
                    while let Some(ev) = next.take() {
                        node.handle_input(Instant::now(), Input::Msrp(ev));
                        budget -= 1;
                        if budget > 0 {
                            next = msrp.try_recv();
                        }
                    }
                }
                res = results.recv() => {
                    let mut next = res;
                    let mut budget = 4096;
                    while let Some((id, result)) = next.take() {
                        node.handle_input(Instant::now(), Input::Stored { id, result });
                        budget -= 1;
                        if budget > 0 {
                            next = results.try_recv();
                        }
                    }
                }
                Some((query, user)) = answers.recv() => {
                    node.handle_input(Instant::now(), Input::Core(CoreInput::User { query, user }));
                    while let Ok((query, user)) = answers.try_recv() {
                        node.handle_input(Instant::now(), Input::Core(CoreInput::User { query, user }));
                    }
                }
                Some(hop) = hops.recv() => {
                    let mut next = Some(hop);
                    let mut budget = 256;
                    while let Some(hop) = next.take() {
                        let now = Instant::now();
                        waited = now.saturating_duration_since(hop.sent);
                        node.handle_input(now, Input::Shard(hop));
                        budget -= 1;
                        if budget > 0 {
                            next = hops.try_recv().ok();
                        }
                    }
                }
                () = sleep => {
                    // Decide expiry by the clock, not by trusting the wake-up (STYLE 3.4).
                    node.handle_timeout(Instant::now());
                }
                _ = stop.wait_for(|s| *s) => break,
            }
            io.drain(node);
            // A queue that is still standing after this turn: how long its last item waited;
            // a drained one: none.
            let standing = if transport.queued() > 0 || !hops.is_empty() {
                waited
            } else {
                Duration::ZERO
            };
            delays[me].store(
                u64::try_from(standing.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            let stats = node.stats();
            metrics.publish(
                io.shard,
                crate::metrics::Snapshot {
                    proxy: stats.core,
                    registrations: stats.registrations,
                    transactions: stats.transactions,
                    pf: stats.participating.map(|pf| (pf, stats.pf_in_progress)),
                    store: io.executor.stats(),
                    user_lookups: stats.user_lookups,
                    send_failures,
                    load: stats.load,
                    store_in_flight: stats.store_in_flight,
                },
            );
        }
    }
}

/// A transport event as a core input (a failed send is only counted: the transaction timers
/// cover the loss).
fn to_input(ev: NetEvent, send_failures: &mut u64) -> Option<CoreInput> {
    Some(match ev {
        NetEvent::Message { peer, message } => CoreInput::Message { peer, message },
        NetEvent::ParseError {
            peer,
            error,
            raw_head,
        } => {
            tracing::debug!(%error, peer = %peer.addr, "unparsable message");
            CoreInput::ParseError {
                peer,
                error,
                raw: raw_head,
            }
        }
        NetEvent::KeepAlive { peer } => CoreInput::KeepAlive { peer },
        NetEvent::ConnectionClosed { conn, .. } => CoreInput::ConnectionClosed { conn },
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
