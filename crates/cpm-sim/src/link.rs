//! Datagram links: latency, jitter, loss, duplication and reordering, all drawn from the
//! network's seeded generator.

use std::time::Duration;

/// How a link between two hosts treats each datagram (both directions alike).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Base one-way delay.
    pub latency: Duration,
    /// A uniform extra delay in `[0, jitter]` per datagram (reorders close datagrams too).
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice (the copy with its own delay).
    pub duplicate: f64,
    /// Probability that a datagram is held back by up to [`LinkConfig::reorder_delay`], so that
    /// later datagrams overtake it.
    pub reorder: f64,
    /// The longest hold-back of a reordered datagram.
    pub reorder_delay: Duration,
}

impl LinkConfig {
    /// A perfect link with `latency`: no jitter, loss, duplication or reordering.
    pub fn ideal(latency: Duration) -> Self {
        Self {
            latency,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
        }
    }

    /// A bad link: `loss`, `duplicate` and `reorder` probabilities, 10 ms latency with 5 ms
    /// jitter, reordered datagrams held back up to 200 ms.
    pub fn lossy(loss: f64, duplicate: f64, reorder: f64) -> Self {
        Self {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            loss,
            duplicate,
            reorder,
            reorder_delay: Duration::from_millis(200),
        }
    }

    /// A link that loses everything (a partition).
    pub fn cut() -> Self {
        Self {
            loss: 1.0,
            ..Self::default()
        }
    }
}

impl Default for LinkConfig {
    /// [`LinkConfig::ideal`] with 10 ms.
    fn default() -> Self {
        Self::ideal(Duration::from_millis(10))
    }
}
