//! What the stream transports share (SIP over TCP in `sip::tcp`, MSRP in `msrp::conn`): the
//! shutdown wait, each connection's activity clock for the idle timeout, and the linger that
//! reads a closed connection until the peer closes too.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, warn};

/// How long a closed connection flushes what is queued, and then reads until the peer closes.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// How long an accept loop pauses after an error of the listener itself (out of descriptors,
/// out of memory) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What an accept loop does after `accept` failed: an error of one connection (reset, aborted
/// before it was taken) is skipped at once; an error of the listener pauses the loop for
/// [`ACCEPT_BACKOFF`]. Returns `false` when the transport is shutting down meanwhile.
pub(crate) async fn accept_failed(
    e: &io::Error,
    what: &str,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let per_connection = matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    );
    if per_connection {
        debug!(error = %e, "{what} accept error");
        return true;
    }
    warn!(error = %e, "{what} accept error, pausing");
    tokio::select! {
        biased;
        () = stopped(stop) => false,
        () = sleep(ACCEPT_BACKOFF) => true,
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: stop as well.
    let _ = stop.wait_for(|&s| s).await;
}

/// Milliseconds from `epoch` to now.
pub(crate) fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A connection's last read or write, in milliseconds since the transport's epoch (shared by
/// its read and write tasks without a lock).
#[derive(Debug, Default)]
pub(crate) struct Activity(AtomicU64);

impl Activity {
    /// Something was read or written now.
    pub(crate) fn touch(&self, epoch: Instant) {
        self.0.store(millis_since(epoch), Ordering::Relaxed);
    }

    /// The last activity, in milliseconds since the epoch.
    pub(crate) fn millis(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// When the connection has been idle for `idle`.
    pub(crate) fn idle_deadline(&self, epoch: Instant, idle: Duration) -> Instant {
        let last = Duration::from_millis(self.millis());
        epoch
            .checked_add(last)
            .and_then(|t| t.checked_add(idle))
            // An idle timeout too large to represent never fires.
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    }
}

/// After we closed: read and discard until the peer closes too, for at most [`CLOSE_LINGER`].
pub(crate) async fn drain_until_eof<R: AsyncRead + Unpin>(
    mut rd: R,
    stop: &mut watch::Receiver<bool>,
) {
    let deadline = Instant::now() + CLOSE_LINGER;
    let mut sink = [0u8; 2048];
    loop {
        tokio::select! {
            biased;
            () = stopped(stop) => return,
            () = sleep_until(deadline) => return,
            read = rd.read(&mut sink) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}
