//! File transfer through the PF (RFC 5547 push; OMA CPM file transfer): the inviter sends
//! the file as one MSRP message in chunks. Each chunk is written to the store as a piece of
//! a media object before it is relayed on, and the sender's chunk is answered with what the
//! next hop answers, so the sender's window paces the whole path and the PF holds at most
//! one chunk per SEND in flight. The SHA-1 the file-selector announced is checked as the
//! octets pass; on the last chunk the object is completed together with the history record
//! that links it (ARCHITECTURE.md rule 3: the last chunk's 200 follows that commit). An
//! interrupted transfer (abort flag, a connection lost, BYE, a wrong size or hash) drops the
//! object: no half file is ever linked from a history.

use bytes::Bytes;
use cpm_msrp::{ByteRange, ConnId, Flag, StatusCode as MsrpStatus};
use cpm_sdp::FileTransfer;
use cpm_store::{DeliveryState, Direction, MessageRecord, StoreOp};
use sha1::{Digest, Sha1};
use std::time::Instant;

use super::super::{OpPurpose, ParticipatingFunction};
use super::Leg;
use super::media::{SessionStore, Then};

/// The content type of a history record that links a received or sent file.
pub const FILE_RECORD_TYPE: &str = "application/vnd.cpm.file+json";

/// A file session's transfer.
#[derive(Debug)]
pub(in crate::participating) struct FileState {
    /// The store's media object.
    pub(super) media_id: String,
    name: String,
    media_type: String,
    size: u64,
    /// The SHA-1 the file-selector announced (RFC 5547 `hash:sha-1:`), if any.
    expected: Option<Vec<u8>>,
    transfer_id: Option<String>,
    /// Octets received so far (the chunks come in order on one connection).
    received: u64,
    hasher: Sha1,
    /// The last chunk arrived and checked out.
    pub(super) complete: bool,
}

impl FileState {
    /// The transfer an offer's file attributes announce; `None` without a size (the PF must
    /// know how much it keeps) or past `max` octets.
    pub(super) fn new(file: &FileTransfer, media_id: String, max: u64) -> Option<Self> {
        let size = file.selector.size.filter(|s| *s <= max)?;
        let expected = file
            .selector
            .hash
            .as_ref()
            .filter(|h| h.algorithm.eq_ignore_ascii_case("sha-1"))
            .map(|h| h.value.clone());
        Some(Self {
            media_id,
            name: file
                .selector
                .name
                .clone()
                .unwrap_or_else(|| "file".to_owned()),
            media_type: file
                .selector
                .media_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            size,
            expected,
            transfer_id: file.transfer_id.clone(),
            received: 0,
            hasher: Sha1::new(),
            complete: false,
        })
    }

    /// The body of the history record that links the object.
    fn record_body(&self, sha1: &[u8]) -> Vec<u8> {
        let hex: String = sha1.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{{\"media\":{},\"name\":{},\"type\":{},\"size\":{},\"sha1\":\"{hex}\"}}",
            json_str(&self.media_id),
            json_str(&self.name),
            json_str(&self.media_type),
            self.size
        )
        .into_bytes()
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Why a chunk ends the transfer.
enum Broken {
    /// Not the file's sender, or after the end.
    NotYours,
    /// Not where the file stands (RFC 4975 Byte-Range).
    OutOfOrder,
    /// Past the announced size.
    TooLong,
}

impl ParticipatingFunction {
    /// One chunk of the file arrived on `leg`.
    #[allow(clippy::too_many_arguments)] // The chunk and where it came from.
    pub(super) fn file_chunk(
        &mut self,
        now: Instant,
        sid: u64,
        leg: Leg,
        conn: ConnId,
        req: cpm_msrp::Request,
        data: Bytes,
        flag: Flag,
    ) {
        let unix = self.unix_ms(now);
        let Some(s) = self.sessions.map.get_mut(&sid) else {
            return;
        };
        let from_owner = leg == s.owner_leg();
        let (owner, peer, owner_uri, peer_uri) = (
            s.owner.clone(),
            s.peer.clone(),
            s.owner_uri.clone(),
            s.peer_uri.clone(),
        );
        let ids = s.ids.clone();
        let Some(f) = s.file.as_mut() else {
            return;
        };
        let start = req.headers.byte_range().map_or(1, |r| r.start);
        // RFC 5547 push: the file goes from the inviter (our up leg) to the invitee.
        let broken = if leg != Leg::Up || f.complete {
            Some(Broken::NotYours)
        } else if flag != Flag::Aborted && start != f.received + 1 {
            Some(Broken::OutOfOrder)
        } else if f.received + data.len() as u64 > f.size {
            Some(Broken::TooLong)
        } else {
            None
        };
        let media_id = f.media_id.clone();
        if let Some(why) = broken {
            let status = match why {
                Broken::NotYours => MsrpStatus::Forbidden,
                Broken::OutOfOrder => MsrpStatus::BadRequest,
                Broken::TooLong => MsrpStatus::MessageTooLarge,
            };
            self.msrp_answer(conn, &req, status);
            if !matches!(why, Broken::NotYours) {
                self.end_session(now, sid, None);
            }
            return;
        }
        if flag == Flag::Aborted {
            // The sender gave up (RFC 4975 7.1.1): nothing of the file is kept.
            self.msrp_answer(conn, &req, MsrpStatus::Ok);
            self.end_session(now, sid, None);
            return;
        }
        let offset = f.received;
        f.received += data.len() as u64;
        f.hasher.update(&data);
        let range = ByteRange {
            start,
            end: Some(f.received),
            total: Some(f.size),
        };
        let write = StoreOp::WriteMedia {
            id: media_id.clone(),
            offset,
            data: data.to_vec(),
        };
        if flag == Flag::Continued {
            let store = SessionStore {
                sid,
                leg,
                head: req,
                body: data,
                then: Then::RelayChunk {
                    range,
                    flag,
                    delivered: None,
                },
            };
            self.store(OpPurpose::Session(Box::new(store)), write);
            return;
        }
        // The last chunk: the whole file must be what the selector announced (a wrong
        // size or hash is refused like a malformed message).
        let sha1 = f.hasher.clone().finalize().to_vec();
        if f.received != f.size || f.expected.as_ref().is_some_and(|e| *e != sha1) {
            self.msrp_answer(conn, &req, MsrpStatus::BadRequest);
            self.end_session(now, sid, None);
            return;
        }
        f.complete = true;
        let message_id = f
            .transfer_id
            .clone()
            .or_else(|| req.headers.message_id().map(str::to_owned))
            .unwrap_or_else(|| media_id.clone());
        let (direction, sender, recipient) = if from_owner {
            (Direction::Sent, owner_uri, peer_uri)
        } else {
            (Direction::Received, peer_uri, owner_uri)
        };
        let record = MessageRecord {
            owner: owner.clone(),
            direction,
            peer: peer.clone(),
            conversation_id: ids.conversation,
            contribution_id: ids.contribution,
            in_reply_to: ids.in_reply_to,
            message_id: message_id.clone(),
            sender,
            recipient,
            content_type: FILE_RECORD_TYPE.to_owned(),
            body: f.record_body(&sha1),
            disposition: Vec::new(),
            created_at_ms: unix,
            expires_at_ms: None,
            state: DeliveryState::Pending,
            state_at_ms: unix,
        };
        let size = f.size;
        if from_owner {
            self.stats.messages_sent += 1;
        } else {
            self.stats.messages_received += 1;
        }
        // Delivered when the next hop has it all: towards the served user that is the
        // client; from the served user, the other PF, which answers after its client.
        let delivered = Some((owner, peer, message_id, direction));
        self.store(OpPurpose::Background, write);
        let store = SessionStore {
            sid,
            leg,
            head: req,
            body: data,
            then: Then::RelayChunk {
                range,
                flag,
                delivered,
            },
        };
        self.store(
            OpPurpose::Session(Box::new(store)),
            StoreOp::FinishMedia {
                id: media_id,
                size,
                record: Some(record),
            },
        );
    }
}
