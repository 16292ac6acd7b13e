//! The client's seeded random numbers: branches, tags, Call-IDs, cnonces, UUIDs and message
//! ids all come from here, so a client with a fixed seed replays byte for byte.

/// `cpm_sip_core`'s SplitMix64 with the identifier shapes the client needs. It is not a
/// cryptographic generator; the driver seeds it from the OS, so the identifiers are
/// unpredictable to peers.
#[derive(Clone, Debug)]
pub(crate) struct Rng(SplitMix64);

use cpm_sip_core::rng::SplitMix64;

const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// `n` lowercase hex digits.
    pub(crate) fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            let v = self.next_u64();
            for i in 0..16 {
                if s.len() == n {
                    break;
                }
                let d = ((v >> (i * 4)) & 0xf) as u32;
                s.push(char::from_digit(d, 16).unwrap_or('0'));
            }
        }
        s
    }

    /// `n` characters from `[0-9A-Za-z]` (an `imdn.Message-ID`).
    pub(crate) fn token(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(ALNUM[(self.next_u64() % ALNUM.len() as u64) as usize]))
            .collect()
    }

    /// A random (version 4) UUID in its text form.
    pub(crate) fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        format_uuid(b, 4)
    }
}

/// Formats 16 bytes as a UUID with the RFC 9562 variant bits and the given version.
pub(crate) fn format_uuid(mut b: [u8; 16], version: u8) -> String {
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
