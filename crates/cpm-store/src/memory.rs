//! [`MemoryStore`]: the backend of the tests and the deterministic simulator.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::batch::{self, Answer};
use crate::ops::{
    Backend, BindingRecord, DeferredQuota, DeliveryState, Direction, HistoryQuery, MessageRecord,
    OpError, OpId, Outcome, StoreOp,
};

/// `(owner, direction, peer, message_id)`: what makes a record unique.
type MessageKey = (String, Direction, String, String);

/// A store in memory with the exact semantics of the SQLite backend (the same conformance
/// tests run against both), without IO, clock or randomness.
///
/// Everything committed stays in the value: a simulator "crashes" a server by dropping its
/// core and rebuilds it from the same `MemoryStore` (or a [`Clone`] of it taken at the crash).
/// [`MemoryStore::fail_next_commit`] makes batches fail as a broken disk would.
///
/// Reads and writes cost O(records of the owner) at worst; the records are never removed.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    /// Every record, in acceptance order (the index is the sequence number).
    messages: Vec<MessageRecord>,
    /// Sequence number by unique key.
    keys: HashMap<MessageKey, usize>,
    /// Sequence numbers of each owner's records, ascending.
    by_owner: HashMap<String, Vec<usize>>,
    /// Sequence numbers by `(owner, message_id)`, ascending.
    by_message: HashMap<(String, String), Vec<usize>>,
    /// The deferred queue's expiry order: `(expires_at_ms, seq)` of each `Pending`
    /// `Received` record that has an expiry.
    expiry: BTreeSet<(u64, usize)>,
    /// Bindings by `(aor, key)`.
    bindings: BTreeMap<(String, String), BindingRecord>,
    /// Media objects by id: their content and whether they are complete.
    media: HashMap<String, (Vec<u8>, bool)>,
    /// How many of the next batches fail.
    failing_commits: u32,
    /// Batches committed so far.
    commits: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next batch that has a valid operation fail as a failed commit would: every
    /// valid operation of it is answered with [`OpError::Backend`] and nothing is applied.
    /// Calling it `n` times fails the next `n` such batches.
    pub fn fail_next_commit(&mut self) {
        self.failing_commits = self.failing_commits.saturating_add(1);
    }

    /// How many batches have committed (batches with no valid operation do not count).
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Every stored message record, in acceptance order.
    pub fn messages(&self) -> &[MessageRecord] {
        &self.messages
    }

    /// A complete media object's content.
    pub fn media(&self, id: &str) -> Option<&[u8]> {
        self.media
            .get(id)
            .filter(|(_, complete)| *complete)
            .map(|(data, _)| data.as_slice())
    }

    /// Every stored binding (expired ones too), ordered by `(aor, key)`.
    pub fn bindings(&self) -> impl Iterator<Item = &BindingRecord> {
        self.bindings.values()
    }

    fn apply(&mut self, op: &StoreOp) -> Answer {
        match op {
            StoreOp::AppendMessage(record) => self.append(record),
            StoreOp::AppendDeferred { record, quota } => self.append_deferred(record, quota),
            StoreOp::WriteMedia { id, offset, data } => {
                let (content, _) = self.media.entry(id.clone()).or_default();
                let Ok(start) = usize::try_from(*offset) else {
                    return Answer::Refused(OpError::Invalid("media offset too large".into()));
                };
                let end = start + data.len();
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[start..end].copy_from_slice(data);
                Answer::Done
            }
            StoreOp::FinishMedia { id, size, record } => {
                let len = self.media.get(id).map_or(0, |(c, _)| c.len() as u64);
                if len != *size {
                    self.media.remove(id);
                    return Answer::Refused(OpError::Invalid(format!(
                        "media object {id} holds {len} octets, not {size}"
                    )));
                }
                self.media.entry(id.clone()).or_default().1 = true;
                match record {
                    Some(r) => self.append(r),
                    None => Answer::Done,
                }
            }
            StoreOp::DropMedia { id } => {
                if self.media.get(id).is_some_and(|(_, complete)| !complete) {
                    self.media.remove(id);
                }
                Answer::Done
            }
            StoreOp::UpdateState {
                owner,
                peer,
                direction,
                message_id,
                state,
                at_ms,
            } => Answer::Updated {
                changed: self.update_state(
                    owner,
                    peer.as_deref(),
                    *direction,
                    message_id,
                    *state,
                    *at_ms,
                ),
            },
            StoreOp::PendingDeferred { owner, limit } => Answer::Messages(
                self.owner_seqs(owner)
                    .iter()
                    .map(|&seq| &self.messages[seq])
                    .filter(|r| r.direction == Direction::Received)
                    .filter(|r| r.state == DeliveryState::Pending)
                    .take(*limit)
                    .cloned()
                    .collect(),
            ),
            StoreOp::ExpireDeferred { now_ms, limit } => {
                let due: Vec<(u64, usize)> = self
                    .expiry
                    .range(..=(*now_ms, usize::MAX))
                    .take(*limit)
                    .copied()
                    .collect();
                let mut records = Vec::with_capacity(due.len());
                for entry in due {
                    self.expiry.remove(&entry);
                    let record = &mut self.messages[entry.1];
                    record.state = DeliveryState::Failed;
                    record.state_at_ms = *now_ms;
                    records.push(record.clone());
                }
                Answer::Expired(records)
            }
            StoreOp::History(query) => Answer::Messages(self.history(query)),
            StoreOp::SaveBinding(binding) => {
                self.bindings
                    .insert((binding.aor.clone(), binding.key.clone()), binding.clone());
                Answer::Done
            }
            StoreOp::RemoveBinding { aor, key } => {
                self.bindings.remove(&(aor.clone(), key.clone()));
                Answer::Done
            }
            StoreOp::LoadBindings { now_ms } => Answer::Bindings(
                self.bindings
                    .values()
                    .filter(|b| b.expires_at_ms > *now_ms)
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// [`StoreOp::AppendDeferred`]: the same rule as the SQLite backend's.
    fn append_deferred(&mut self, record: &MessageRecord, quota: &DeferredQuota) -> Answer {
        let key = (
            record.owner.clone(),
            record.direction,
            record.peer.clone(),
            record.message_id.clone(),
        );
        if self.keys.contains_key(&key) {
            return self.append(record);
        }
        let (mut count, mut bytes, mut from_sender) = (0u64, 0u64, 0u64);
        for &seq in self.owner_seqs(&record.owner) {
            let r = &self.messages[seq];
            if r.direction == Direction::Received && r.state == DeliveryState::Pending {
                count += 1;
                bytes += r.body.len() as u64;
                from_sender += u64::from(r.peer == record.peer);
            }
        }
        match quota.check(record.body.len() as u64, count, bytes, from_sender) {
            Ok(()) => self.append(record),
            Err(e) => Answer::Refused(OpError::QuotaExceeded(e)),
        }
    }

    fn append(&mut self, record: &MessageRecord) -> Answer {
        let key = (
            record.owner.clone(),
            record.direction,
            record.peer.clone(),
            record.message_id.clone(),
        );
        if let Some(&seq) = self.keys.get(&key) {
            return Answer::Appended {
                duplicate: true,
                state: self.messages[seq].state,
            };
        }
        let seq = self.messages.len();
        self.keys.insert(key, seq);
        self.by_owner
            .entry(record.owner.clone())
            .or_default()
            .push(seq);
        self.by_message
            .entry((record.owner.clone(), record.message_id.clone()))
            .or_default()
            .push(seq);
        if let (Direction::Received, DeliveryState::Pending, Some(expires)) =
            (record.direction, record.state, record.expires_at_ms)
        {
            self.expiry.insert((expires, seq));
        }
        self.messages.push(record.clone());
        Answer::Appended {
            duplicate: false,
            state: record.state,
        }
    }

    fn update_state(
        &mut self,
        owner: &str,
        peer: Option<&str>,
        direction: Option<Direction>,
        message_id: &str,
        state: DeliveryState,
        at_ms: u64,
    ) -> u32 {
        let Some(seqs) = self
            .by_message
            .get(&(owner.to_owned(), message_id.to_owned()))
        else {
            return 0;
        };
        let mut changed = 0u32;
        for &seq in seqs {
            let record = &mut self.messages[seq];
            if peer.is_some_and(|p| p != record.peer)
                || direction.is_some_and(|d| d != record.direction)
                || !record.state.may_become(state)
            {
                continue;
            }
            if record.state == DeliveryState::Pending
                && let Some(expires) = record.expires_at_ms
            {
                self.expiry.remove(&(expires, seq));
            }
            record.state = state;
            record.state_at_ms = at_ms;
            changed = changed.saturating_add(1);
        }
        changed
    }

    fn history(&self, q: &HistoryQuery) -> Vec<MessageRecord> {
        let mut newest: Vec<MessageRecord> = self
            .owner_seqs(&q.owner)
            .iter()
            .rev()
            .map(|&seq| &self.messages[seq])
            .filter(|r| q.with.as_ref().is_none_or(|w| *w == r.peer))
            .filter(|r| {
                q.conversation_id
                    .as_ref()
                    .is_none_or(|c| *c == r.conversation_id)
            })
            .filter(|r| q.since_ms.is_none_or(|t| r.created_at_ms >= t))
            .filter(|r| q.until_ms.is_none_or(|t| r.created_at_ms < t))
            .take(q.limit)
            .cloned()
            .collect();
        newest.reverse();
        newest
    }

    fn owner_seqs(&self, owner: &str) -> &[usize] {
        self.by_owner.get(owner).map_or(&[], Vec::as_slice)
    }
}

impl Backend for MemoryStore {
    fn execute(&mut self, batch: Vec<(OpId, StoreOp)>) -> Vec<(OpId, Result<Outcome, OpError>)> {
        batch::run(batch, |ops| {
            if self.failing_commits > 0 {
                self.failing_commits -= 1;
                return Err("simulated commit failure".to_owned());
            }
            let answers = ops.iter().map(|op| self.apply(op)).collect();
            self.commits = self.commits.saturating_add(1);
            Ok(answers)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::conformance::suite!(MemoryStore::new, |store: &mut MemoryStore| store
        .fail_next_commit());

    #[test]
    fn a_clone_is_a_snapshot() {
        let mut store = MemoryStore::new();
        let record = crate::conformance::record("alice@x", Direction::Sent, "bob@x", "m1", 1);
        let answers = store.execute(vec![(OpId(1), StoreOp::AppendMessage(record.clone()))]);
        assert!(answers[0].1.is_ok());
        let snapshot = store.clone();
        store.execute(vec![(
            OpId(2),
            StoreOp::AppendMessage(crate::conformance::record(
                "alice@x",
                Direction::Sent,
                "bob@x",
                "m2",
                2,
            )),
        )]);
        assert_eq!(snapshot.messages(), [record]);
        assert_eq!(store.messages().len(), 2);
        assert_eq!(store.commits(), 2);
    }
}
