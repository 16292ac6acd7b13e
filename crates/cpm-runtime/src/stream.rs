//! What the stream transports share (SIP over TCP in `sip::tcp`, MSRP in `msrp::conn`): the
//! shutdown wait, each connection's activity clock for the idle timeout, and the linger that
//! reads a closed connection until the peer closes too.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// How long a closed connection flushes what is queued, and then reads until the peer closes.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(5);

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
