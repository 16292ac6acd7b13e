//! The store operations the sans-IO cores emit, their outcomes, and the commit [`Receipt`].
//!
//! This module is pure (no SQLite, no IO): the Conversation Server core depends on it with the
//! crate's default features off. A backend ([`crate::MemoryStore`], the SQLite backend) runs a
//! batch of operations in one transaction and answers each with an [`Outcome`]. Write outcomes
//! carry a [`Receipt`], which only this crate can create, and only after the batch committed
//! (SYSTEM.md rule 3): code that acknowledges a message (200/202 to MESSAGE) takes one by value.

use std::fmt;

/// Names one operation so that the driver can hand its outcome back to the core that asked.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct OpId(pub u64);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// Proof that the write of operation [`Receipt::op`] is durable (the backend's transaction
/// committed). Only a backend of this crate creates one; it cannot be cloned or forged, so an
/// acknowledgement that takes it by value cannot be sent before the commit.
#[derive(Debug, Eq, PartialEq)]
#[must_use = "a receipt exists to be handed to the code that acknowledges"]
pub struct Receipt {
    op: OpId,
}

impl Receipt {
    /// Created by a backend once the transaction holding `op` has committed.
    pub(crate) fn committed(op: OpId) -> Self {
        Self { op }
    }

    /// The operation this receipt is for.
    pub fn op(&self) -> OpId {
        self.op
    }
}

/// Whose side of the conversation a history record is.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Direction {
    /// The owner sent it.
    Sent,
    /// The owner received it.
    Received,
}

impl Direction {
    /// `sent` or `received` (the CPM Message Storage `Message-Direction` values).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }

    /// Parses [`Direction::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sent" => Some(Self::Sent),
            "received" => Some(Self::Received),
            _ => None,
        }
    }
}

/// The delivery state of a stored message, ordered: a message only moves forward
/// (`Pending` → `Delivered` → `Displayed`), or from `Pending` to `Failed`.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum DeliveryState {
    /// Accepted and stored, not yet delivered to any device. For a `Received` record this is
    /// the deferred queue.
    Pending,
    /// A device of the recipient accepted it (or a delivered IMDN said so).
    Delivered,
    /// A displayed IMDN said so.
    Displayed,
    /// It will not be delivered (expired in the deferred queue, unknown recipient, error).
    Failed,
}

impl DeliveryState {
    /// `pending`, `delivered`, `displayed` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Displayed => "displayed",
            Self::Failed => "failed",
        }
    }

    /// Parses [`DeliveryState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "displayed" => Some(Self::Displayed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Whether moving from `self` to `next` is allowed (forward only; `Failed` only from
    /// `Pending`; nothing leaves `Failed`).
    pub fn may_become(self, next: Self) -> bool {
        match (self, next) {
            (Self::Failed, _) => false,
            (Self::Pending, Self::Failed) => true,
            (_, Self::Failed) => false,
            (a, b) => b > a,
        }
    }
}

/// One message in one user's conversation history (a CPM Message Storage message object).
///
/// The same message is stored once in the sender's history (`Sent`, one record per
/// recipient) and once in each recipient's (`Received`). A record is identified by
/// `(owner, direction, peer, message_id)`: appending the same key again is a duplicate, not
/// a second record.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct MessageRecord {
    /// The user whose history holds it, as an address-of-record: `alice@localhost`.
    pub owner: String,
    /// Sent or received by the owner.
    pub direction: Direction,
    /// The other party's address-of-record (the recipient of a sent message, the sender of a
    /// received one).
    pub peer: String,
    /// `Conversation-ID` (a UUID).
    pub conversation_id: String,
    /// `Contribution-ID` (a UUID).
    pub contribution_id: String,
    /// The `InReplyTo-Contribution-ID`, if any.
    pub in_reply_to: Option<String>,
    /// `imdn.Message-ID` of the CPIM message (or an identifier the PF derived when the body is
    /// not CPIM).
    pub message_id: String,
    /// The sender's URI as asserted by the network (`sip:alice@localhost`).
    pub sender: String,
    /// The recipient's URI as addressed (`sip:bob@localhost`).
    pub recipient: String,
    /// The SIP `Content-Type` of `body` (`message/cpim`, or e.g. `text/plain`).
    pub content_type: String,
    /// The SIP body exactly as received, so that a deferred delivery is byte-exact.
    pub body: Vec<u8>,
    /// The IMDN dispositions the sender asked for (`positive-delivery`,
    /// `negative-delivery`, `display`), lowercase.
    pub disposition: Vec<String>,
    /// When the PF accepted it, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// For a `Received` record: when an undelivered message leaves the deferred queue as
    /// failed (milliseconds since the Unix epoch). `None`: never.
    pub expires_at_ms: Option<u64>,
    /// The delivery state.
    pub state: DeliveryState,
    /// When `state` last changed (milliseconds since the Unix epoch).
    pub state_at_ms: u64,
}

/// A history read. All filters are optional and combine with AND; results are in the order
/// the store accepted the records (oldest first), at most `limit`.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct HistoryQuery {
    /// Whose history.
    pub owner: String,
    /// Only records whose `peer` is this AOR.
    pub with: Option<String>,
    /// Only this conversation.
    pub conversation_id: Option<String>,
    /// Only records created at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only records created before this time (ms since the epoch).
    pub until_ms: Option<u64>,
    /// At most this many records (the newest ones when more match).
    pub limit: usize,
}

/// One device registration (for restoring the location service after a restart).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct BindingRecord {
    /// The address-of-record.
    pub aor: String,
    /// The device key: `+sip.instance` (and `reg-id`), or the Contact URI without one.
    pub key: String,
    /// The Contact header value as registered (URI and parameters).
    pub contact: String,
    /// Where requests for it go: `udp:1.2.3.4:5060` / `tcp:1.2.3.4:5060`.
    pub destination: String,
    /// The Path header values, in order.
    pub path: Vec<String>,
    /// When it expires, milliseconds since the epoch.
    pub expires_at_ms: u64,
}

/// What a core asks the store to do.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum StoreOp {
    /// Store a message in one history. Answer: [`Outcome::Appended`]. A record with the same
    /// `(owner, direction, peer, message_id)` is not stored twice: the answer then says
    /// `duplicate` and gives the stored record's state.
    AppendMessage(MessageRecord),
    /// Store a message for the recipient's deferred queue (a `pending` record received by
    /// `owner` from `peer`), unless that would take the queue past `quota`, checked in the
    /// same transaction: then nothing is written and the answer is
    /// [`OpError::QuotaExceeded`]. A duplicate is answered as for
    /// [`StoreOp::AppendMessage`], whatever the quota. Answer: [`Outcome::Appended`].
    AppendDeferred {
        /// The record (direction received, state pending).
        record: MessageRecord,
        /// The limits of the recipient's queue.
        quota: DeferredQuota,
    },
    /// Move matching records to `state` (only where [`DeliveryState::may_become`] allows).
    /// Matches on `owner` and `message_id`, and on `peer`/`direction` when given.
    /// Answer: [`Outcome::Updated`].
    UpdateState {
        /// Whose history.
        owner: String,
        /// Only records with this peer.
        peer: Option<String>,
        /// Only records of this direction.
        direction: Option<Direction>,
        /// The `imdn.Message-ID`.
        message_id: String,
        /// The new state.
        state: DeliveryState,
        /// When (ms since the epoch).
        at_ms: u64,
    },
    /// The owner's deferred queue: `Received` records still `Pending`, oldest first, at most
    /// `limit`. Answer: [`Outcome::Messages`].
    PendingDeferred {
        /// Whose queue.
        owner: String,
        /// At most this many.
        limit: usize,
    },
    /// Marks `Failed` every `Pending` `Received` record whose `expires_at_ms` is at or
    /// before `now_ms` (at most `limit` of them) and returns them (with the new state).
    /// Answer: [`Outcome::Expired`].
    ExpireDeferred {
        /// The current time (ms since the epoch).
        now_ms: u64,
        /// At most this many.
        limit: usize,
    },
    /// Read history. Answer: [`Outcome::Messages`].
    History(HistoryQuery),
    /// Insert or replace a registration binding (by `aor` and `key`). Answer:
    /// [`Outcome::Done`].
    SaveBinding(BindingRecord),
    /// Delete a binding. Answer: [`Outcome::Done`].
    RemoveBinding {
        /// The address-of-record.
        aor: String,
        /// The device key.
        key: String,
    },
    /// All bindings not expired at `now_ms`. Answer: [`Outcome::Bindings`].
    LoadBindings {
        /// The current time (ms since the epoch).
        now_ms: u64,
    },
    /// Writes a piece of a media object (a file being transferred) at `offset`; the object
    /// is created, incomplete, by its first piece, and is not part of any history until
    /// [`StoreOp::FinishMedia`]. Answer: [`Outcome::Done`] (the piece is written, not yet
    /// synced: only the finish makes the object durable).
    WriteMedia {
        /// The object's id ([`media_id_ok`]).
        id: String,
        /// Where the piece goes, in octets from the start.
        offset: u64,
        /// The octets.
        data: Vec<u8>,
    },
    /// Completes a media object: it must hold exactly `size` octets; it is synced, kept, and
    /// `record` (the history entry that links it, if any) is appended in the same batch.
    /// Answer: [`Outcome::Appended`] with a record, [`Outcome::Done`] without; a size that
    /// does not match is [`OpError::Invalid`] and the object is deleted.
    FinishMedia {
        /// The object's id.
        id: String,
        /// Its expected size.
        size: u64,
        /// The history entry that links it.
        record: Option<MessageRecord>,
    },
    /// Deletes an incomplete media object (the transfer was interrupted). Answer:
    /// [`Outcome::Done`].
    DropMedia {
        /// The object's id.
        id: String,
    },
}

/// The largest media object a store keeps (16 GiB): a core bounds files far lower.
pub const MAX_MEDIA_SIZE: u64 = 16 << 30;

/// Whether `id` may name a media object: 1 to 64 characters of `[A-Za-z0-9_-]` (a backend
/// uses it as a file name).
pub fn media_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl StoreOp {
    /// Whether the operation writes (its outcome then carries a [`Receipt`]).
    pub fn is_write(&self) -> bool {
        // Media pieces are files, not rows, but they write too.
        !matches!(
            self,
            Self::PendingDeferred { .. } | Self::History(_) | Self::LoadBindings { .. }
        )
    }

    /// Checks the operation's values; a backend answers an invalid operation with this error
    /// without running it (the other operations of its batch run as if it were absent).
    ///
    /// Invalid: an empty `owner`, `peer`, `message_id`, `aor` or `key`; a `limit` of 0; a
    /// record time above [`MAX_TIME_MS`]; a disposition value that is empty or holds a `,`;
    /// a Path value that is empty or holds a line break (the SQLite backend stores both
    /// lists joined).
    pub fn validate(&self) -> Result<(), OpError> {
        match self {
            Self::AppendMessage(record) => record.validate(),
            Self::AppendDeferred { record, quota } => {
                record.validate()?;
                if record.direction != Direction::Received || record.state != DeliveryState::Pending
                {
                    return Err(OpError::Invalid(
                        "a deferred record is received and pending".into(),
                    ));
                }
                if quota.max_messages == 0 || quota.max_bytes == 0 || quota.max_per_sender == 0 {
                    return Err(OpError::Invalid("a deferred quota of 0".into()));
                }
                Ok(())
            }
            Self::UpdateState {
                owner,
                message_id,
                at_ms,
                ..
            } => {
                non_empty("owner", owner)?;
                non_empty("message_id", message_id)?;
                time("at_ms", *at_ms)
            }
            Self::PendingDeferred { owner, limit } => {
                non_empty("owner", owner)?;
                positive(*limit)
            }
            Self::ExpireDeferred { limit, .. } => positive(*limit),
            Self::History(query) => query.validate(),
            Self::SaveBinding(binding) => binding.validate(),
            Self::RemoveBinding { aor, key } => {
                non_empty("aor", aor)?;
                non_empty("key", key)
            }
            Self::LoadBindings { .. } => Ok(()),
            Self::WriteMedia { id, offset, data } => {
                media_id(id)?;
                if offset.saturating_add(data.len() as u64) > MAX_MEDIA_SIZE {
                    return Err(OpError::Invalid(
                        "media object past its largest size".into(),
                    ));
                }
                Ok(())
            }
            Self::DropMedia { id } => media_id(id),
            Self::FinishMedia { id, record, .. } => {
                media_id(id)?;
                record.as_ref().map_or(Ok(()), MessageRecord::validate)
            }
        }
    }
}

fn media_id(id: &str) -> Result<(), OpError> {
    if media_id_ok(id) {
        Ok(())
    } else {
        Err(OpError::Invalid(format!("bad media id {id:?}")))
    }
}

/// The largest time a store accepts in a record, in milliseconds since the epoch
/// (`i64::MAX`, what an SQL integer holds: about 292 million years).
pub const MAX_TIME_MS: u64 = i64::MAX as u64;

impl MessageRecord {
    /// The checks of [`StoreOp::validate`] for [`StoreOp::AppendMessage`].
    pub fn validate(&self) -> Result<(), OpError> {
        non_empty("owner", &self.owner)?;
        non_empty("peer", &self.peer)?;
        non_empty("message_id", &self.message_id)?;
        time("created_at_ms", self.created_at_ms)?;
        time("state_at_ms", self.state_at_ms)?;
        if let Some(expires) = self.expires_at_ms {
            time("expires_at_ms", expires)?;
        }
        if self
            .disposition
            .iter()
            .any(|d| d.is_empty() || d.contains(','))
        {
            return Err(OpError::Invalid(
                "a disposition value is empty or contains ','".to_owned(),
            ));
        }
        Ok(())
    }
}

impl HistoryQuery {
    /// The checks of [`StoreOp::validate`] for [`StoreOp::History`].
    pub fn validate(&self) -> Result<(), OpError> {
        non_empty("owner", &self.owner)?;
        positive(self.limit)
    }
}

impl BindingRecord {
    /// The checks of [`StoreOp::validate`] for [`StoreOp::SaveBinding`].
    pub fn validate(&self) -> Result<(), OpError> {
        non_empty("aor", &self.aor)?;
        non_empty("key", &self.key)?;
        time("expires_at_ms", self.expires_at_ms)?;
        if self
            .path
            .iter()
            .any(|p| p.is_empty() || p.contains(['\n', '\r']))
        {
            return Err(OpError::Invalid(
                "a Path value is empty or contains a line break".to_owned(),
            ));
        }
        Ok(())
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), OpError> {
    if value.is_empty() {
        return Err(OpError::Invalid(format!("empty {field}")));
    }
    Ok(())
}

fn positive(limit: usize) -> Result<(), OpError> {
    if limit == 0 {
        return Err(OpError::Invalid("limit 0".to_owned()));
    }
    Ok(())
}

fn time(field: &str, ms: u64) -> Result<(), OpError> {
    if ms > MAX_TIME_MS {
        return Err(OpError::Invalid(format!(
            "{field} {ms} is beyond {MAX_TIME_MS}"
        )));
    }
    Ok(())
}

/// The answer to one [`StoreOp`].
#[derive(Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// [`StoreOp::AppendMessage`] committed.
    Appended {
        /// The commit proof.
        receipt: Receipt,
        /// The record existed already (nothing was written).
        duplicate: bool,
        /// The state of the stored record (the appended one, or the existing one).
        state: DeliveryState,
    },
    /// [`StoreOp::UpdateState`] committed.
    Updated {
        /// The commit proof.
        receipt: Receipt,
        /// How many records changed state.
        changed: u32,
    },
    /// [`StoreOp::ExpireDeferred`] committed.
    Expired {
        /// The commit proof.
        receipt: Receipt,
        /// The records that became `Failed`.
        records: Vec<MessageRecord>,
    },
    /// A read's records.
    Messages(Vec<MessageRecord>),
    /// [`StoreOp::LoadBindings`].
    Bindings(Vec<BindingRecord>),
    /// A write without a result value committed.
    Done {
        /// The commit proof.
        receipt: Receipt,
    },
}

/// Why an operation (or its whole batch) failed. Nothing of a failed write is durable; the
/// core must not acknowledge (it answers 500 instead).
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The operation's values are invalid (empty owner, limit 0...).
    #[error("invalid store operation: {0}")]
    Invalid(String),
    /// The backend failed (IO, disk full, corrupt file); the batch was rolled back.
    #[error("store backend failed: {0}")]
    Backend(String),
    /// [`StoreOp::AppendDeferred`] would take the deferred queue past its quota; nothing was
    /// written (the rest of the batch ran).
    #[error("deferred queue full: {0}")]
    QuotaExceeded(QuotaExceeded),
}

/// The limits of one recipient's deferred queue (the `pending` records it received), so
/// that nobody can fill the disk through an offline user.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct DeferredQuota {
    /// Most pending messages for the recipient.
    pub max_messages: u64,
    /// Most bytes of pending bodies for the recipient.
    pub max_bytes: u64,
    /// Most pending messages from one sender for the recipient.
    pub max_per_sender: u64,
}

/// Which limit of a [`DeferredQuota`] a message would pass.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum QuotaExceeded {
    /// The recipient's queue holds `max_messages`.
    RecipientMessages,
    /// The bodies would pass `max_bytes`.
    RecipientBytes,
    /// The sender has `max_per_sender` messages waiting for the recipient.
    SenderMessages,
    /// This message's body alone is larger than `max_bytes`.
    MessageTooLarge,
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RecipientMessages => "the recipient's queue is full",
            Self::RecipientBytes => "the recipient's queue has no room for this message",
            Self::SenderMessages => "too many messages from this sender are waiting",
            Self::MessageTooLarge => "the message is larger than a whole queue",
        })
    }
}

impl DeferredQuota {
    /// Whether a message of `len` bytes fits a queue that holds `count` messages of `bytes`
    /// bytes in all, `from_sender` of them from its sender.
    pub fn check(
        &self,
        len: u64,
        count: u64,
        bytes: u64,
        from_sender: u64,
    ) -> Result<(), QuotaExceeded> {
        if len > self.max_bytes {
            return Err(QuotaExceeded::MessageTooLarge);
        }
        if from_sender >= self.max_per_sender {
            return Err(QuotaExceeded::SenderMessages);
        }
        if count >= self.max_messages {
            return Err(QuotaExceeded::RecipientMessages);
        }
        if bytes.saturating_add(len) > self.max_bytes {
            return Err(QuotaExceeded::RecipientBytes);
        }
        Ok(())
    }
}

/// A store backend: runs a batch of operations in order, in one transaction, and answers
/// each (group commit). If the commit fails, every operation of the batch is answered with
/// [`OpError::Backend`] and no receipt is handed out.
///
/// An operation that fails [`StoreOp::validate`] is answered with [`OpError::Invalid`] and
/// left out of the transaction; the other operations of the batch run as if it were absent.
pub trait Backend {
    /// Runs `batch`; the answer has one entry per operation, in the same order.
    fn execute(&mut self, batch: Vec<(OpId, StoreOp)>) -> Vec<(OpId, Result<Outcome, OpError>)>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        use DeliveryState::*;
        assert!(Pending.may_become(Delivered));
        assert!(Pending.may_become(Displayed));
        assert!(Delivered.may_become(Displayed));
        assert!(Pending.may_become(Failed));
        assert!(!Delivered.may_become(Pending));
        assert!(!Displayed.may_become(Delivered));
        assert!(!Delivered.may_become(Failed));
        assert!(!Failed.may_become(Delivered));
        assert!(!Pending.may_become(Pending));
        for s in [Pending, Delivered, Displayed, Failed] {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
        }
    }
}
