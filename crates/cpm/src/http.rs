//! The HTTP server of `cpm serve` (`/health`, `/metrics`, the history API): axum's router on
//! an accept loop of our own, so that an idle or slow client cannot hold the server.
//!
//! - At most `max_connections` connections, and `max_connections_per_source` from one IP
//!   address (an IPv6 source counts as its /64); a connection past either is closed at once (counted).
//! - A connection must deliver a whole request header within `idle_timeout` of being opened
//!   or of its last response (hyper's header read timeout, which runs while a connection
//!   waits for its next request too), so idle keep-alive and slow-loris connections go.
//! - Each connection's requests carry its remote address (`ConnectInfo`), for the history
//!   API's failure throttle.
//! - On shutdown the loop stops accepting and every connection finishes its request in
//!   flight (hyper's graceful shutdown), for at most five seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// How long the connections may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error that is not about one connection (too many open files).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The server's limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HttpLimits {
    /// Most connections open at once.
    pub(crate) max_connections: usize,
    /// Most connections from one IP address.
    pub(crate) max_connections_per_source: usize,
    /// See the module doc.
    pub(crate) idle_timeout: Duration,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct HttpStats {
    /// Connections open now.
    pub(crate) open: AtomicU64,
    /// Connections closed at once: the total limit.
    pub(crate) refused_full: AtomicU64,
    /// Connections closed at once: their address's limit.
    pub(crate) refused_per_source: AtomicU64,
    /// Connections that ended with an error (among them the header timeouts).
    pub(crate) errors: AtomicU64,
}

/// The connections open, per address (the total is the sum, kept beside it).
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection's place in [`Open`], given back when it ends.
struct Slot {
    open: Arc<Mutex<Open>>,
    stats: Arc<HttpStats>,
    ip: IpAddr,
}

impl Slot {
    fn take(
        open: &Arc<Mutex<Open>>,
        stats: &Arc<HttpStats>,
        ip: IpAddr,
        limits: &HttpLimits,
    ) -> Option<Self> {
        let mut o = open.lock().unwrap_or_else(PoisonError::into_inner);
        if o.total >= limits.max_connections {
            stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let n = o.by_ip.entry(ip).or_insert(0);
        if *n >= limits.max_connections_per_source {
            stats.refused_per_source.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        o.total += 1;
        stats.open.store(o.total as u64, Ordering::Relaxed);
        Some(Self {
            open: Arc::clone(open),
            stats: Arc::clone(stats),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        o.total = o.total.saturating_sub(1);
        if let Some(n) = o.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.by_ip.remove(&self.ip);
            }
        }
        self.stats.open.store(o.total as u64, Ordering::Relaxed);
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `app` on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            // Reap finished connection tasks as we go (their results are nothing).
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                let per_connection = matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                );
                if !per_connection {
                    tracing::warn!(error = %e, "HTTP accept error, pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let source = cpm_sip_core::guard::source_key(addr.ip());
        let Some(slot) = Slot::take(&open, &stats, source, &limits) else {
            tracing::debug!(%addr, "HTTP connection limit reached, closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stats = Arc::clone(&stats);
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let _slot = slot;
            let service = tower::service_fn(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                app.clone().oneshot(req)
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout);
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%addr, error = %e, "HTTP connection ended");
            }
        });
    }
    // Stopped: let the connections finish what they are doing (bounded by their grace).
    while tasks.join_next().await.is_some() {}
}
