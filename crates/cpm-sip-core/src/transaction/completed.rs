//! Compact state of completed non-INVITE transactions (RFC 3261 sections 17.1.2.2, 17.2.2).
//!
//! A non-INVITE transaction in Completed does one thing until Timer K (client) or Timer J
//! (server) fires: it absorbs retransmissions. A client absorbs retransmitted responses, for
//! which it needs only its key; a server answers a retransmitted request with its final
//! response again, for which it needs its key, the response's bytes and where to send them.
//! So the layer replaces the whole transaction by an entry here at the final response.
//!
//! Both timers are constants of a layer (J = 64*T1, K = T4) and only run on unreliable
//! transports: on reliable ones RFC 3261 sets them to zero and nothing is kept at all. The
//! deadlines therefore come in the order the entries are made, and a FIFO queue per timer
//! replaces the ordered timer set: expiring is popping the front, O(1), with no tree node per
//! entry.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use foldhash::fast::FixedState;
use foldhash::quality::FixedState as QualityState;

/// A 128-bit fingerprint of a transaction key (see [`Fingerprinter`]).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub(super) struct Fingerprint(u64, u64);

/// Hashes transaction keys to [`Fingerprint`]s with two differently seeded hash functions,
/// seeded from the layer's seed (random in production).
///
/// Why a fingerprint and not the key: the key is two or three owned strings (three heap
/// blocks, about 100 bytes with the map entry); the fingerprint is 16 bytes inline.
///
/// Why collisions do not matter: a new key meets a stored one's fingerprint with probability
/// 2^-128 per pair; with a million completed transactions and 50,000 new requests a second
/// that is one expected collision in about 10^20 years. Were the two halves far from
/// independent, so that only 64 bits counted, it would be one in about ten years, and its
/// effect is benign: the
/// colliding new request is taken for a retransmission (absorbed; its sender retransmits and
/// after Timer J it is served, or its Timer F gives a 408), and the stored response goes
/// again to the peer of the *stored* transaction, which absorbs it, never to the new sender.
/// A sender that could aim a collision at a request it does not send would have to know that
/// request's branch and sent-by before it arrives, and with those it can already send the
/// request itself, exact key and all: fingerprints give an attacker nothing new.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Fingerprinter([QualityState; 2]);

impl Fingerprinter {
    /// Two hash functions from one seed (fixed, distinct offsets: the halves differ).
    pub(super) fn new(seed: u64) -> Self {
        Self([
            QualityState::with_seed(seed ^ 0x243f_6a88_85a3_08d3),
            QualityState::with_seed(seed ^ 0x1319_8a2e_0370_7344),
        ])
    }

    /// The fingerprint of `key`.
    pub(super) fn of<K: Hash>(&self, key: &K) -> Fingerprint {
        Fingerprint(self.0[0].hash_one(key), self.0[1].hash_one(key))
    }
}

/// What a completed server transaction sends again for a retransmitted request: its final
/// response, to the UDP address the request came from (the only transport that keeps one).
#[derive(Debug)]
pub(super) struct Resend {
    /// The final response, sharing its buffer with the transmitted payload.
    pub(super) payload: Bytes,
    /// The request's source address (the transaction's peer, as a live one resends to).
    pub(super) to: SocketAddr,
}

#[derive(Debug)]
struct Entry<V> {
    deadline: Instant,
    key: Fingerprint,
    value: V,
}

/// Entries that expire in the order they were made.
///
/// The index maps a fingerprint to the sequence number of its entry in the queue (the queue's
/// front has sequence `head`). An entry whose fingerprint no longer maps to it (removed, or
/// replaced by a newer one with the same fingerprint) stays in the queue until its deadline
/// and is then dropped without touching the index.
#[derive(Debug)]
pub(super) struct Fifo<V> {
    index: HashMap<Fingerprint, u64, FixedState>,
    queue: VecDeque<Entry<V>>,
    head: u64,
}

impl<V> Fifo<V> {
    pub(super) fn new(state: FixedState) -> Self {
        Self {
            index: HashMap::with_hasher(state),
            queue: VecDeque::new(),
            head: 0,
        }
    }

    /// Adds an entry. A deadline earlier than the last one (a caller whose `now` went back)
    /// is moved to it, keeping the queue ordered: the entry then absorbs a little longer.
    pub(super) fn push(&mut self, key: Fingerprint, deadline: Instant, value: V) {
        let deadline = self
            .queue
            .back()
            .map_or(deadline, |b| b.deadline.max(deadline));
        let seq = self.head + self.queue.len() as u64;
        self.queue.push_back(Entry {
            deadline,
            key,
            value,
        });
        self.index.insert(key, seq);
    }

    /// The live entry for `key`.
    pub(super) fn get(&self, key: &Fingerprint) -> Option<&V> {
        let seq = *self.index.get(key)?;
        let at = usize::try_from(seq - self.head).ok()?;
        self.queue.get(at).map(|e| &e.value)
    }

    /// Forgets `key` at once (its queue slot goes at its deadline).
    pub(super) fn remove(&mut self, key: &Fingerprint) {
        self.index.remove(key);
    }

    /// Drops every entry whose deadline is at or before `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(front) = self.queue.front() {
            if front.deadline > now {
                break;
            }
            if self.index.get(&front.key) == Some(&self.head) {
                self.index.remove(&front.key);
            }
            self.queue.pop_front();
            self.head += 1;
        }
        // After a burst the queue and the index give back what they no longer use.
        shrink_deque(&mut self.queue);
        shrink_map(&mut self.index);
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.queue.front().map(|e| e.deadline)
    }

    /// Live entries.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

/// Below this capacity a table is left as it is: shrinking it would save little and cost
/// reallocations on every small swing of the load.
const SHRINK_FLOOR: usize = 1024;

/// Gives back most of a map's spare capacity once it holds less than a quarter of it.
///
/// Why: a table grows to the peak of a burst (a million completed transactions at 30,000
/// requests/s and Timer J's 32 s) and would keep that memory for the life of the process.
/// Shrinking to twice the length when the length falls under a quarter of the capacity is
/// amortised O(1) per removal (a shrink follows at least 3/4 of the capacity in removals) and
/// cannot oscillate (after it, the map must double again before it grows).
pub(super) fn shrink_map<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > SHRINK_FLOOR && map.len() < map.capacity() / 4 {
        map.shrink_to((map.len() * 2).max(SHRINK_FLOOR));
    }
}

/// [`shrink_map`] for a queue.
pub(super) fn shrink_deque<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > SHRINK_FLOOR && queue.len() < queue.capacity() / 4 {
        queue.shrink_to((queue.len() * 2).max(SHRINK_FLOOR));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_expire_in_order_and_replaced_ones_are_not_lost() {
        let t0 = Instant::now();
        let f = Fingerprinter::new(1);
        let (a, b) = (f.of(&"a"), f.of(&"b"));
        assert_ne!(a, b);
        let mut q = Fifo::new(FixedState::with_seed(1));
        q.push(a, t0 + Duration::from_secs(1), 1);
        q.push(b, t0 + Duration::from_secs(2), 2);
        // The same fingerprint again (a collision): the newer entry wins and outlives the old.
        q.push(a, t0 + Duration::from_secs(3), 3);
        assert_eq!((q.get(&a), q.get(&b), q.len()), (Some(&3), Some(&2), 2));
        q.expire(t0 + Duration::from_secs(1));
        assert_eq!((q.get(&a), q.len()), (Some(&3), 2));
        q.remove(&b);
        assert_eq!((q.get(&b), q.len()), (None, 1));
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(2)));
        q.expire(t0 + Duration::from_secs(3));
        assert_eq!((q.get(&a), q.len(), q.next_deadline()), (None, 0, None));
    }

    #[test]
    fn the_tables_give_their_memory_back_after_a_burst() {
        let t0 = Instant::now();
        let f = Fingerprinter::new(3);
        let mut q = Fifo::new(FixedState::with_seed(3));
        for i in 0..100_000u32 {
            q.push(f.of(&i), t0 + Duration::from_millis(u64::from(i)), ());
        }
        let peak = (q.queue.capacity(), q.index.capacity());
        assert!(peak.0 >= 100_000 && peak.1 >= 100_000);
        // All but 10 expire: both tables shrink to a small multiple of what is left.
        q.expire(t0 + Duration::from_millis(99_989));
        assert_eq!(q.len(), 10);
        assert!(
            q.queue.capacity() <= 2 * SHRINK_FLOOR,
            "{}",
            q.queue.capacity()
        );
        assert!(
            q.index.capacity() <= 2 * SHRINK_FLOOR,
            "{}",
            q.index.capacity()
        );
        // What is left is still there.
        assert!(q.get(&f.of(&99_999u32)).is_some());
    }

    #[test]
    fn a_deadline_never_goes_back() {
        let t0 = Instant::now();
        let f = Fingerprinter::new(2);
        let mut q = Fifo::new(FixedState::with_seed(2));
        q.push(f.of(&1), t0 + Duration::from_secs(5), ());
        q.push(f.of(&2), t0 + Duration::from_secs(4), ());
        q.expire(t0 + Duration::from_secs(4));
        assert_eq!(q.len(), 2);
        q.expire(t0 + Duration::from_secs(5));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn fingerprints_depend_on_the_seed() {
        assert_ne!(
            Fingerprinter::new(1).of(&"k"),
            Fingerprinter::new(2).of(&"k")
        );
        let f = Fingerprinter::new(3);
        let Fingerprint(x, y) = f.of(&"k");
        assert_ne!(x, y, "two different hash functions");
    }
}
