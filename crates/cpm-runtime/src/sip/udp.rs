//! UDP: one receive task parsing datagrams, and sends straight on the socket.

use core::sync::atomic::Ordering;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use cpm_sip::{Message, is_keepalive};
use cpm_sip_core::guard::{Admission, SourceLimiter};
use cpm_sip_core::{Peer, Transmit};
use tokio::time::{Duration, Instant};
use tracing::{debug, trace, warn};

use super::{NetEvent, Shared, stopped};

/// Largest UDP payload (RFC 768 length field).
const RECV_BUF: usize = 65535;
/// How often the flood guard forgets quiet sources.
const GUARD_SWEEP: Duration = Duration::from_secs(5);

/// Receives datagrams until shutdown. Parsing here, not in the core, spreads the CPU over the
/// runtime's threads.
pub(super) async fn recv_loop(shared: Arc<Shared>) {
    let mut stop = shared.shutdown.subscribe();
    let mut buf = vec![0u8; RECV_BUF];
    // The flood guard lives in this task alone: no lock on the receive path.
    let guard = shared.config.udp_flood_guard.clone();
    let mut limiter = guard.as_ref().map(|g| {
        let seed = shared.epoch.elapsed().as_nanos() as u64 ^ u64::from(shared.local_addr.port());
        SourceLimiter::new(
            g.packets_per_sec,
            g.burst,
            100_000,
            Duration::from_secs(10),
            seed,
        )
    });
    let mut swept_at = Instant::now();
    // Datagrams already queued in the socket are read without waiting again: one wake-up
    // per burst, not per datagram (a flood must cost as little as possible per datagram).
    let mut ready = false;
    // When the socket was last seen empty. A datagram read since has waited in the kernel's
    // buffer at most since then; when this task cannot keep up the buffer never empties and
    // that wait grows: each event is stamped with it, so the core's overload control sees
    // a standing queue here too (otherwise the kernel would drop what this task cannot read,
    // unseen, and the node would collapse instead of refusing with 503).
    let mut empty_at = std::time::Instant::now();
    loop {
        if !ready {
            let readable = tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                r = shared.udp.readable() => r,
            };
            if let Err(e) = readable {
                debug!(error = %e, "UDP socket not readable");
                continue;
            }
            ready = true;
            // The socket was empty all the time this task waited: what is in it now has just
            // arrived (the wake-up's own latency aside).
            empty_at = std::time::Instant::now();
        }
        let (len, src) = match shared.udp.try_recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready = false;
                empty_at = std::time::Instant::now();
                continue;
            }
            // ICMP errors from earlier sends (ECONNREFUSED) and other transient failures: the
            // socket stays usable.
            Err(e) => {
                debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        if let (Some(g), Some(limiter)) = (&guard, &mut limiter)
            && !g.is_exempt(src.ip())
        {
            let now = Instant::now();
            if now >= swept_at + GUARD_SWEEP {
                swept_at = now;
                limiter.sweep(now.into_std());
            }
            if let Admission::Refuse { report } = limiter.admit(now.into_std(), src.ip()) {
                shared.udp_flood_dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(refused) = report {
                    warn!(
                        target: "cpm::security", source = %src.ip(), refused, proto = %"sip",
                        "rate limited"
                    );
                }
                continue;
            }
        }
        let datagram = &buf[..len];
        if is_keepalive(datagram) {
            trace!(%src, len, "UDP keep-alive ignored");
            continue;
        }
        // One exact-size copy: the parsed message points into it, and must not pin the
        // 64 KiB receive buffer.
        let data = Bytes::copy_from_slice(datagram);
        let peer = Peer::udp(src);
        let event = match Message::parse_datagram(data.clone(), &shared.config.limits) {
            Ok(message) => {
                debug!(%src, len, "UDP message");
                NetEvent::Message { peer, message }
            }
            Err(error) => {
                debug!(%src, len, %error, "UDP datagram did not parse");
                NetEvent::ParseError {
                    peer,
                    error,
                    raw_head: data,
                }
            }
        };
        if !shared.emit_at(event, empty_at, &mut stop).await {
            return;
        }
    }
}

/// Sends the batches [`super::SipTransportHandle::send_batch`] queues, in order, until
/// shutdown: every batch already queued is sent before waiting again.
pub(super) async fn send_loop(
    shared: Arc<Shared>,
    mut batches: tokio::sync::mpsc::Receiver<Vec<Transmit>>,
) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        let batch = tokio::select! {
            biased;
            b = batches.recv() => b,
            () = stopped(&mut stop) => return,
        };
        let Some(batch) = batch else { return };
        for t in batch {
            send(&shared, t);
        }
        while let Ok(batch) = batches.try_recv() {
            for t in batch {
                send(&shared, t);
            }
        }
    }
}

/// Sends a datagram now; if the socket is busy, from a task (at most
/// `send_queue_per_conn` of them at a time).
pub(super) fn send(shared: &Arc<Shared>, transmit: Transmit) {
    let addr = transmit.peer.addr;
    match shared.udp.try_send_to(&transmit.payload, addr) {
        Ok(_) => debug!(%addr, len = transmit.payload.len(), "UDP sent"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let pending = shared.udp_pending.fetch_add(1, Ordering::Relaxed);
            if pending >= shared.config.send_queue_per_conn {
                shared.udp_pending.fetch_sub(1, Ordering::Relaxed);
                shared.report_send_failed(transmit.peer, "UDP send queue full".to_owned());
                return;
            }
            let task = Arc::clone(shared);
            shared.runtime.spawn(async move {
                let mut stop = task.shutdown.subscribe();
                let sent = tokio::select! {
                    biased;
                    () = stopped(&mut stop) => None,
                    r = task.udp.send_to(&transmit.payload, addr) => Some(r),
                };
                task.udp_pending.fetch_sub(1, Ordering::Relaxed);
                match sent {
                    Some(Ok(_)) => debug!(%addr, len = transmit.payload.len(), "UDP sent"),
                    Some(Err(e)) => {
                        let event = NetEvent::SendFailed {
                            transmit_peer: transmit.peer,
                            reason: format!("UDP send to {addr}: {e}"),
                        };
                        task.emit(event, &mut stop).await;
                    }
                    None => {}
                }
            });
        }
        Err(e) => shared.report_send_failed(transmit.peer, format!("UDP send to {addr}: {e}")),
    }
}
