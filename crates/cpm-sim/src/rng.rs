//! The simulator's seeded random numbers: link faults and the seeds of every core.

use cpm_sip_core::rng::SplitMix64;

/// `cpm_sip_core`'s SplitMix64, with the draws fault injection needs.
#[derive(Clone, Debug)]
pub(crate) struct SimRng(SplitMix64);

impl SimRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A uniform number in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (no draw when `p` is 0, so an ideal link does not move the
    /// sequence).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// A uniform duration in `[0, max]` (no draw when `max` is zero).
    pub(crate) fn up_to(&mut self, max: std::time::Duration) -> std::time::Duration {
        let nanos = max.as_nanos() as u64;
        if nanos == 0 {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_nanos(self.next_u64() % (nanos + 1))
    }
}

/// A seed for one core, derived from the network's seed and a label (stable: adding a client
/// does not change the seeds of the others).
pub(crate) fn derive_seed(seed: u64, label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in label.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    SimRng::new(h).next_u64()
}
