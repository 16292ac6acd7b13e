//! Chunking (RFC 4975 section 5.1 and 7.1.1): splitting an outgoing message into SEND chunks,
//! and telling, per Message-ID, when the chunks of an incoming one have all arrived.
//!
//! The [`Reassembler`] tracks byte *ranges*, never bytes: the caller stores each
//! [`Frame::Data`](crate::Frame::Data) piece where its position says (a file, a store
//! blob) as it arrives. Its memory per message is one entry per run of received bytes, so a
//! message arriving in order costs one entry whatever its size.

use std::collections::HashMap;
use std::ops::Range;

use crate::header::ByteRange;
use crate::message::Flag;
use crate::status::{Error, ErrorKind};

/// Received positions of one message: disjoint, non-adjacent inclusive ranges, sorted.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Adds `start..=end`, merging what it overlaps or touches (duplicates are harmless:
    /// RFC 4975 section 7.1.1 lets a sender resend a range after an interrupted connection).
    fn insert(&mut self, start: u64, end: u64) {
        let v = &mut self.0;
        // First range that ends at or after start - 1 (could merge with the new one).
        let i = v.partition_point(|&(_, e)| e.saturating_add(1) < start);
        let mut j = i;
        let (mut s, mut e) = (start, end);
        while j < v.len() && v[j].0 <= end.saturating_add(1) {
            s = s.min(v[j].0);
            e = e.max(v[j].1);
            j += 1;
        }
        v.splice(i..j, [(s, e)]);
    }

    fn covers(&self, total: u64) -> bool {
        total == 0 || self.0.first() == Some(&(1, total))
    }

    fn received(&self) -> u64 {
        self.0.iter().map(|&(s, e)| e - s + 1).sum()
    }
}

/// Bounds on what incoming messages may cost.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ReassemblyLimits {
    /// Largest message, in octets: a larger declared total, or data past this position, is
    /// refused with 413 (RFC 4975 section 7.3.1 lets the receiver stop a message so).
    pub max_message_len: u64,
    /// Most messages being reassembled at once on one session.
    pub max_messages: usize,
}

impl Default for ReassemblyLimits {
    /// 100 MiB messages (a large file transfer), 64 at a time.
    fn default() -> Self {
        Self {
            max_message_len: 100 * 1024 * 1024,
            max_messages: 64,
        }
    }
}

#[derive(Debug, Default)]
struct Incoming {
    total: Option<u64>,
    ranges: Ranges,
    /// The chunk holding the message's last byte ended with `$`.
    last_seen: bool,
}

/// One chunk being received: made by [`Reassembler::begin`] from the chunk's head, advanced
/// by [`Reassembler::data`] for every body piece, closed by [`Reassembler::end`].
#[derive(Debug)]
#[must_use]
pub struct ChunkCursor {
    message_id: String,
    start: u64,
    received: u64,
}

impl ChunkCursor {
    /// Position (from 1) in the message of the next octet of this chunk: where the caller
    /// stores the next data piece.
    pub fn position(&self) -> u64 {
        self.start + self.received
    }
}

/// Where a message stands after a chunk ended.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Progress {
    /// Still waiting for chunks; this many octets arrived so far.
    Incomplete {
        /// Octets received (overlaps counted once).
        received: u64,
    },
    /// Every octet `1..=total` arrived and the last chunk ended with `$`: the message is
    /// whole (time for a success REPORT if one was asked for). Its state is dropped.
    Complete {
        /// The message's size.
        total: u64,
    },
    /// The sender aborted the message (`#`, RFC 4975 section 7.1.1). Its state is dropped.
    Interrupted {
        /// Octets that had arrived.
        received: u64,
    },
}

/// Per-Message-ID reassembly state of one session.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    messages: HashMap<String, Incoming>,
}

impl Reassembler {
    /// A reassembler with these limits.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            messages: HashMap::new(),
        }
    }

    /// Messages being reassembled.
    pub fn in_progress(&self) -> usize {
        self.messages.len()
    }

    /// Starts a chunk of `message_id` covering `range` (`None`: no Byte-Range header, which
    /// RFC 4975 section 7.1.1 reads as `1-*/*`).
    ///
    /// A declared total over the limit is 413 before any body octet is taken; a total that
    /// contradicts an earlier chunk's is 400. Either way the message's state is dropped.
    pub fn begin(
        &mut self,
        message_id: &str,
        range: Option<ByteRange>,
    ) -> Result<ChunkCursor, Error> {
        let range = range.unwrap_or(ByteRange {
            start: 1,
            end: None,
            total: None,
        });
        let max = self.limits.max_message_len;
        let too_large = range.total.is_some_and(|t| t > max)
            || range.start.saturating_sub(1) > max
            || range.end.is_some_and(|e| e > max);
        if too_large {
            self.messages.remove(message_id);
            return Err(ErrorKind::TooLarge("message").into());
        }
        if !self.messages.contains_key(message_id)
            && self.messages.len() >= self.limits.max_messages
        {
            return Err(ErrorKind::TooLarge("messages in progress").into());
        }
        let m = self.messages.entry(message_id.to_owned()).or_default();
        match (m.total, range.total) {
            (Some(a), Some(b)) if a != b => {
                self.messages.remove(message_id);
                return Err(Error::syntax("Byte-Range (total changed)"));
            }
            (None, Some(t)) => m.total = Some(t),
            _ => {}
        }
        Ok(ChunkCursor {
            message_id: message_id.to_owned(),
            start: range.start,
            received: 0,
        })
    }

    /// Accounts for `len` more body octets of the chunk. Data past the size limit is 413;
    /// data past the declared total is 400. On error the message's state is dropped.
    pub fn data(&mut self, cursor: &mut ChunkCursor, len: usize) -> Result<(), Error> {
        cursor.received = cursor.received.saturating_add(len as u64);
        let last = cursor
            .start
            .saturating_sub(1)
            .saturating_add(cursor.received);
        let total = self.messages.get(&cursor.message_id).and_then(|m| m.total);
        let err: Error = if last > self.limits.max_message_len {
            ErrorKind::TooLarge("message").into()
        } else if total.is_some_and(|t| last > t) {
            Error::syntax("chunk (data past the Byte-Range total)")
        } else {
            return Ok(());
        };
        self.messages.remove(&cursor.message_id);
        Err(err)
    }

    /// Ends the chunk with the end-line's flag.
    ///
    /// The octets received say which range the chunk covered: a declared range-end that
    /// differs is tolerated (RFC 4975's own examples count the CRLF before the end-line).
    pub fn end(&mut self, cursor: ChunkCursor, flag: Flag) -> Progress {
        let Some(m) = self.messages.get_mut(&cursor.message_id) else {
            // Dropped after an error: nothing more to say about it.
            return Progress::Interrupted { received: 0 };
        };
        let last = cursor
            .start
            .saturating_sub(1)
            .saturating_add(cursor.received);
        if cursor.received > 0 {
            m.ranges.insert(cursor.start, last);
        }
        match flag {
            Flag::Aborted => {
                let received = m.ranges.received();
                self.messages.remove(&cursor.message_id);
                return Progress::Interrupted { received };
            }
            Flag::Complete => {
                m.last_seen = true;
                // With `*` totals, the `$` chunk's end is the message's end.
                m.total.get_or_insert(last);
            }
            Flag::Continued => {}
        }
        match m.total {
            Some(total) if m.last_seen && m.ranges.covers(total) => {
                self.messages.remove(&cursor.message_id);
                Progress::Complete { total }
            }
            _ => Progress::Incomplete {
                received: m.ranges.received(),
            },
        }
    }

    /// Forgets a message (the session ended, or the caller answered it with an error).
    pub fn abandon(&mut self, message_id: &str) {
        self.messages.remove(message_id);
    }
}

/// One outgoing chunk: its Byte-Range, its end-line flag, and which octets of the message
/// (0-based offsets) it carries.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Chunk {
    /// The chunk's `Byte-Range` header value.
    pub range: ByteRange,
    /// `+` for all but the last chunk, `$` for the last.
    pub flag: Flag,
    /// The message octets of this chunk, as offsets from 0.
    pub offsets: Range<u64>,
}

/// Splits a message of `len` octets into chunks of at most `max_chunk` (RFC 4975 section
/// 5.1: each chunk gets its own SEND and transact-id, the same Message-ID, and a Byte-Range).
#[derive(Clone, Debug)]
pub struct Chunker {
    len: u64,
    max_chunk: u64,
    next: u64,
    done: bool,
}

impl Chunker {
    /// Chunks for a message of `len` octets; `max_chunk` of 0 is taken as 1.
    pub fn new(len: u64, max_chunk: u64) -> Self {
        Self {
            len,
            max_chunk: max_chunk.max(1),
            next: 0,
            done: false,
        }
    }
}

impl Iterator for Chunker {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        if self.done {
            return None;
        }
        let start = self.next;
        let end = self.len.min(start.saturating_add(self.max_chunk));
        self.next = end;
        self.done = end == self.len;
        Some(Chunk {
            // An empty message is one chunk `1-0/0` (RFC 4975 section 7.1.1).
            range: ByteRange {
                start: start + 1,
                end: Some(end),
                total: Some(self.len),
            },
            flag: if self.done {
                Flag::Complete
            } else {
                Flag::Continued
            },
            offsets: start..end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn br(start: u64, end: Option<u64>, total: Option<u64>) -> Option<ByteRange> {
        Some(ByteRange { start, end, total })
    }

    fn chunk(
        r: &mut Reassembler,
        id: &str,
        range: Option<ByteRange>,
        len: usize,
        flag: Flag,
    ) -> Progress {
        let mut c = r.begin(id, range).unwrap();
        r.data(&mut c, len).unwrap();
        r.end(c, flag)
    }

    #[test]
    fn ranges_merge() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(1, 3);
        r.insert(30, 40);
        assert_eq!(r.0, [(1, 3), (10, 20), (30, 40)]);
        r.insert(4, 9);
        assert_eq!(r.0, [(1, 20), (30, 40)]);
        r.insert(15, 35);
        assert_eq!(r.0, [(1, 40)]);
        r.insert(5, 6);
        assert_eq!(r.0, [(1, 40)]);
        assert_eq!(r.received(), 40);
        assert!(r.covers(40) && !r.covers(41));
    }

    #[test]
    fn in_order_chunks_complete() {
        // RFC 4975 section 5.1: "abcd" with 1-*/8 and "+", then "EFGH" with 5-8/8 and "$".
        let mut r = Reassembler::default();
        assert_eq!(
            chunk(&mut r, "4564dpWd", br(1, None, Some(8)), 4, Flag::Continued),
            Progress::Incomplete { received: 4 }
        );
        assert_eq!(
            chunk(
                &mut r,
                "4564dpWd",
                br(5, Some(8), Some(8)),
                4,
                Flag::Complete
            ),
            Progress::Complete { total: 8 }
        );
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn out_of_order_and_duplicates() {
        let mut r = Reassembler::default();
        // The last chunk first: `$` seen, but bytes 1..=4 are missing.
        assert_eq!(
            chunk(&mut r, "m1", br(5, Some(8), Some(8)), 4, Flag::Complete),
            Progress::Incomplete { received: 4 }
        );
        assert_eq!(
            chunk(&mut r, "m1", br(5, Some(8), Some(8)), 4, Flag::Continued),
            Progress::Incomplete { received: 4 }
        );
        assert_eq!(
            chunk(&mut r, "m1", br(1, Some(6), Some(8)), 6, Flag::Continued),
            Progress::Complete { total: 8 }
        );
    }

    #[test]
    fn unknown_totals_end_at_the_dollar_chunk() {
        let mut r = Reassembler::default();
        assert_eq!(
            chunk(&mut r, "m1", br(1, None, None), 3, Flag::Continued),
            Progress::Incomplete { received: 3 }
        );
        assert_eq!(
            chunk(&mut r, "m1", br(4, None, None), 2, Flag::Complete),
            Progress::Complete { total: 5 }
        );
        // No Byte-Range at all: the one chunk is the message.
        assert_eq!(
            chunk(&mut r, "m2", None, 7, Flag::Complete),
            Progress::Complete { total: 7 }
        );
        // An empty SEND (1-0/0).
        assert_eq!(
            chunk(&mut r, "m3", Some(ByteRange::whole(0)), 0, Flag::Complete),
            Progress::Complete { total: 0 }
        );
    }

    #[test]
    fn interrupted_messages_are_reported() {
        let mut r = Reassembler::default();
        chunk(&mut r, "m1", br(1, None, Some(100)), 10, Flag::Continued);
        assert_eq!(
            chunk(&mut r, "m1", br(11, None, Some(100)), 5, Flag::Aborted),
            Progress::Interrupted { received: 15 }
        );
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn limits_give_413() {
        let mut r = Reassembler::new(ReassemblyLimits {
            max_message_len: 10,
            max_messages: 2,
        });
        assert_eq!(
            r.begin("m1", br(1, None, Some(11))).unwrap_err().status(),
            413
        );
        assert_eq!(r.begin("m1", br(12, None, None)).unwrap_err().status(), 413);
        let mut c = r.begin("m1", br(1, None, None)).unwrap();
        r.data(&mut c, 10).unwrap();
        assert_eq!(c.position(), 11);
        assert_eq!(r.data(&mut c, 1).unwrap_err().status(), 413);
        assert_eq!(r.in_progress(), 0);
        let _a = r.begin("a", None).unwrap();
        let _b = r.begin("b", None).unwrap();
        assert_eq!(r.begin("c", None).unwrap_err().status(), 413);
    }

    #[test]
    fn contradictions_give_400() {
        let mut r = Reassembler::default();
        chunk(&mut r, "m1", br(1, Some(2), Some(8)), 2, Flag::Continued);
        assert_eq!(
            r.begin("m1", br(3, Some(4), Some(9))).unwrap_err().status(),
            400
        );
        let mut c = r.begin("m2", br(1, None, Some(3))).unwrap();
        assert_eq!(r.data(&mut c, 4).unwrap_err().status(), 400);
    }

    #[test]
    fn chunker_splits_with_ranges_and_flags() {
        let chunks: Vec<Chunk> = Chunker::new(10, 4).collect();
        let ranges: Vec<String> = chunks.iter().map(|c| c.range.to_string()).collect();
        assert_eq!(ranges, ["1-4/10", "5-8/10", "9-10/10"]);
        let flags: Vec<Flag> = chunks.iter().map(|c| c.flag).collect();
        assert_eq!(flags, [Flag::Continued, Flag::Continued, Flag::Complete]);
        assert_eq!(chunks[2].offsets, 8..10);
        let one: Vec<Chunk> = Chunker::new(0, 4).collect();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].range.to_string(), "1-0/0");
        assert_eq!(Chunker::new(8, 4).count(), 2);
        assert_eq!(Chunker::new(3, 0).count(), 3);
        // What the chunker makes, the reassembler completes.
        let mut r = Reassembler::default();
        let mut last = None;
        for c in Chunker::new(1000, 64) {
            let len = (c.offsets.end - c.offsets.start) as usize;
            last = Some(chunk(&mut r, "big", Some(c.range), len, c.flag));
        }
        assert_eq!(last, Some(Progress::Complete { total: 1000 }));
    }
}
