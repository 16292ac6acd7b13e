//! File transfer in a session (RFC 5547 push; OMA CPM ICSI `…oma.cpm.filetransfer`).
//!
//! Sending: an INVITE like a chat's with the file's `a=file-selector` (name, type, size,
//! `sha-1` hash), a new `a=file-transfer-id`, `a=file-disposition:attachment`, `a=sendonly`
//! and the file's type as the only `a=accept-types`. Once the MSRP connection is up, the
//! file goes as one MSRP message (one Message-ID) in SEND chunks of [`FILE_CHUNK`] octets,
//! `Byte-Range: start-end/total`, `+` on all but the last (`$`), `Failure-Report: yes`; at
//! most [`FILE_WINDOW`] chunks are asked of the driver ([`Event::FileNeeded`]) or wait for
//! their 200 at a time, so memory stays bounded whatever the file's size. The 200 to the
//! last chunk is [`Event::FileSent`], then BYE.
//!
//! Receiving: an offer with a file-selector, answered `a=recvonly` with the same selector
//! and transfer id ([`cpm_sdp::offer_answer::answer`]), the binding SEND as for a chat; the
//! data goes to the driver as it arrives ([`Event::FileData`], in order), hashed on the way;
//! at the end the size and SHA-1 are checked against the selector: [`Event::FileReceived`]
//! or [`Event::FileFailed`] (also for `#`, a gap, a BYE or a lost connection before the
//! end).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use cpm_content::mime;
use cpm_msrp::{
    ByteRange, ConnCommand, ConnId, FailureReport, Flag, Header as MsrpHeader,
    Headers as MsrpHeaders, Outcome, Progress, Reassembler, ReassemblyLimits,
    Request as MsrpRequest, StatusCode as MsrpStatus, TransactId,
};
use cpm_sdp::{Direction, FileHash, FileSelector, FileTransfer, MsrpMedia};

use super::{Phase, SessionId, SessionKind};
use crate::client::{Client, Event, SendError};
use crate::file::{FileDescription, FileHasher, sanitize_file_name};

/// Octets per chunk of a file we send (RFC 4975 section 7.1.1 lets the sender choose).
pub const FILE_CHUNK: u64 = 64 * 1024;
/// Chunks of a file we send that are asked of the driver or unanswered at a time.
pub const FILE_WINDOW: usize = 8;

/// The file of a file transfer session.
#[derive(Debug)]
pub(crate) struct Transfer {
    /// What the offer says (for a received file, the safe name).
    pub(super) file: FileDescription,
    /// Sent, received or failed: reported already.
    pub(super) done: bool,
    flow: Flow,
}

#[derive(Debug)]
enum Flow {
    Send(Sending),
    Receive(Receiving),
}

#[derive(Debug)]
struct Sending {
    message_id: String,
    /// The next offset to ask the driver for.
    next: u64,
    /// Asked for, not given yet, in order: (offset, length).
    asked: VecDeque<(u64, u64)>,
    /// Sent chunks waiting for their response, with their length.
    unanswered: HashMap<TransactId, u64>,
    /// Octets acknowledged.
    acked: u64,
}

#[derive(Debug)]
struct Receiving {
    /// The peer (`user@domain`).
    from: String,
    /// The file's MSRP Message-ID, from its first chunk.
    message_id: Option<String>,
    /// Octets handed on (and hashed) so far: the next one expected.
    next: u64,
    hasher: FileHasher,
}

impl Transfer {
    /// Whether we send the file.
    pub(super) fn is_sending(&self) -> bool {
        matches!(self.flow, Flow::Send(_))
    }

    /// A response (or timeout) for one of our chunks: its length, and it no longer waits.
    pub(super) fn chunk_answered(&mut self, tid: &TransactId) -> Option<u64> {
        match &mut self.flow {
            Flow::Send(s) => s.unanswered.remove(tid),
            Flow::Receive(_) => None,
        }
    }
}

/// The SHA-1 of a selector, when it has one of 20 octets (other hash functions cannot be
/// checked: the transfer is checked by its size alone).
fn selector_sha1(sel: &FileSelector) -> Option<[u8; 20]> {
    sel.hash
        .as_ref()
        .filter(|h| h.algorithm.eq_ignore_ascii_case("sha-1"))
        .and_then(|h| <[u8; 20]>::try_from(h.value.as_slice()).ok())
}

/// `type/subtype` with tokens on both sides (parameters allowed after `;`).
fn valid_media_type(t: &str) -> bool {
    let bare = t.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    bare.split_once('/')
        .is_some_and(|(a, b)| token(a) && token(b))
}

impl Client {
    // ---------------------------------------------------------------- commands

    /// Sends a file to `to` (`user@domain`, a bare user name in our domain, or a SIP URI):
    /// an INVITE with the `…oma.cpm.filetransfer` ICSI and an RFC 5547 offer describing
    /// `file` (give its SHA-1: the network checks it). Once the MSRP connection is up the
    /// core asks for the file's octets ([`Event::FileNeeded`], answered with
    /// [`Client::provide_file_data`]) and reports [`Event::FileProgress`], then
    /// [`Event::FileSent`] or [`Event::FileFailed`], then [`Event::SessionEnded`].
    pub fn send_file(
        &mut self,
        now: Instant,
        to: &str,
        file: FileDescription,
    ) -> Result<SessionId, SendError> {
        if file.name.is_empty() || file.name.contains(['/', '\0']) {
            return Err(SendError::BadFile(format!("file name {:?}", file.name)));
        }
        if !valid_media_type(&file.media_type) {
            return Err(SendError::BadFile(format!(
                "media type {:?}",
                file.media_type
            )));
        }
        let target = self.target_uri(to)?;
        let session = self.new_session(SessionKind::FileTransfer, &target);
        let transfer_id = self.rng.token(24);
        let message_id = self.rng.token(16);
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return Err(SendError::NoSession);
        };
        let selector = FileSelector {
            name: Some(file.name.clone()),
            media_type: Some(file.media_type.clone()),
            size: Some(file.size),
            hash: file.sha1.map(|h| FileHash {
                algorithm: "sha-1".to_owned(),
                value: h.to_vec(),
            }),
        };
        let mut ft = FileTransfer::new(selector);
        ft.transfer_id = Some(transfer_id);
        ft.disposition = Some("attachment".to_owned());
        s.local_media.accept_types = vec![mime::media_type(&file.media_type)];
        s.local_media.accept_wrapped_types = Vec::new();
        s.local_media.file = Some(ft);
        s.file = Some(Box::new(Transfer {
            file,
            done: false,
            flow: Flow::Send(Sending {
                message_id,
                next: 0,
                asked: VecDeque::new(),
                unanswered: HashMap::new(),
                acked: 0,
            }),
        }));
        if let Err(e) = self.begin_outgoing(now, session) {
            self.sessions.map.remove(&session);
            return Err(e);
        }
        Ok(session)
    }

    /// The octets the core asked for with [`Event::FileNeeded`] (`offset` as given there),
    /// sent at once as the next chunk. Returns false when nothing asked for them; a chunk
    /// of another length than asked (the file changed) fails the transfer.
    pub fn provide_file_data(
        &mut self,
        now: Instant,
        session: SessionId,
        offset: u64,
        data: Bytes,
    ) -> bool {
        let Some(Flow::Send(snd)) = self.transfer_mut(session).map(|t| &mut t.flow) else {
            return false;
        };
        match snd.asked.front() {
            Some(&(o, len)) if o == offset => {
                snd.asked.pop_front();
                if data.len() as u64 != len {
                    self.file_fail(now, session, 500, "File Changed While Sending");
                    return false;
                }
            }
            _ => return false,
        }
        self.send_file_chunk(now, session, offset, data);
        true
    }

    /// The driver could not read the file: the transfer fails (BYE).
    pub fn file_read_failed(&mut self, now: Instant, session: SessionId, reason: &str) {
        if self.transfer_mut(session).is_some_and(|t| t.is_sending()) {
            self.file_fail(now, session, 500, reason);
        }
    }

    // ---------------------------------------------------------------- sending

    fn transfer_mut(&mut self, session: SessionId) -> Option<&mut Transfer> {
        self.sessions
            .map
            .get_mut(&session)
            .and_then(|s| s.file.as_deref_mut())
            .filter(|t| !t.done)
    }

    /// Asks the driver for chunks until the window is full (an empty file goes at once).
    pub(super) fn file_fill(&mut self, now: Instant, session: SessionId) {
        let up = self
            .sessions
            .map
            .get(&session)
            .is_some_and(|s| s.phase == Phase::Up);
        if !up {
            return;
        }
        let chunk = self
            .sessions
            .map
            .get(&session)
            .map_or(FILE_CHUNK, |s| s.max_chunk().min(FILE_CHUNK));
        let Some(t) = self.transfer_mut(session) else {
            return;
        };
        let size = t.file.size;
        let Flow::Send(snd) = &mut t.flow else {
            return;
        };
        if size == 0 {
            if snd.next == 0 && snd.unanswered.is_empty() {
                snd.next = 1;
                // RFC 4975 section 7.1.1: an empty message is one chunk `1-0/0`.
                self.send_file_chunk(now, session, 0, Bytes::new());
            }
            return;
        }
        let mut asks = Vec::new();
        while snd.asked.len() + snd.unanswered.len() < FILE_WINDOW && snd.next < size {
            let len = chunk.min(size - snd.next);
            snd.asked.push_back((snd.next, len));
            asks.push(Event::FileNeeded {
                session,
                offset: snd.next,
                len,
            });
            snd.next += len;
        }
        self.events.extend(asks);
    }

    /// One chunk of the file we send: SEND with the file's Message-ID, its Byte-Range,
    /// Content-Type and `Failure-Report: yes`, `$` on the last.
    fn send_file_chunk(&mut self, now: Instant, session: SessionId, offset: u64, data: Bytes) {
        let Some(s) = self.sessions.map.get(&session) else {
            return;
        };
        let (Some(conn), Some(t)) = (s.conn, s.file.as_deref()) else {
            return;
        };
        let Flow::Send(snd) = &t.flow else {
            return;
        };
        let size = t.file.size;
        let end = offset + data.len() as u64;
        let Ok(mut headers) = MsrpHeaders::new(s.to_path(), vec![s.local_path.clone()]) else {
            return;
        };
        headers.set(MsrpHeader::MessageId(snd.message_id.clone()));
        headers.set(MsrpHeader::ByteRange(ByteRange {
            start: offset + 1,
            end: Some(end),
            total: Some(size),
        }));
        headers.set(MsrpHeader::FailureReport(FailureReport::Yes));
        headers.set(MsrpHeader::ContentType(t.file.media_type.clone()));
        let flag = if end >= size {
            Flag::Complete
        } else {
            Flag::Continued
        };
        let Some((request, bytes)) = self.encode_send(headers, Some(&data), flag) else {
            self.file_fail(now, session, 500, "Chunk Not Encodable");
            return;
        };
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        if s.tx.start(now, &request).unwrap_or(false)
            && let Some(Flow::Send(snd)) = s.file.as_deref_mut().map(|t| &mut t.flow)
        {
            snd.unanswered
                .insert(request.transact_id.clone(), data.len() as u64);
        }
        self.sessions
            .commands
            .push_back(ConnCommand::Send { conn, bytes });
    }

    /// The response to one of our chunks (or its timeout, 408).
    pub(super) fn file_outcome(
        &mut self,
        now: Instant,
        session: SessionId,
        len: u64,
        outcome: &Outcome,
    ) {
        let (status, comment) = match outcome {
            Outcome::Response {
                status, comment, ..
            } => (*status, comment.clone()),
            Outcome::TimedOut { .. } => (408, Some("Request Timeout".to_owned())),
            Outcome::Quiet { .. } => (200, None),
        };
        if status != 200 {
            let reason = comment.unwrap_or_else(|| {
                MsrpStatus::from_code(status)
                    .map_or("Error", MsrpStatus::comment)
                    .to_owned()
            });
            self.file_fail(now, session, status, &reason);
            return;
        }
        let Some(t) = self.transfer_mut(session) else {
            return;
        };
        let total = t.file.size;
        let Flow::Send(snd) = &mut t.flow else {
            return;
        };
        snd.acked += len;
        let done = snd.acked >= total && snd.next >= total && snd.unanswered.is_empty();
        let done = done && snd.asked.is_empty();
        let progress = Event::FileProgress {
            session,
            done: snd.acked,
            total,
        };
        if done {
            t.done = true;
        }
        let file = t.file.clone();
        self.events.push_back(progress);
        if done {
            self.events.push_back(Event::FileSent { session, file });
            self.finish_session(now, session, 200, "File Sent", false);
        } else {
            self.file_fill(now, session);
        }
    }

    /// The transfer failed: [`Event::FileFailed`], and the session ends (BYE).
    pub(super) fn file_fail(
        &mut self,
        now: Instant,
        session: SessionId,
        status: u16,
        reason: &str,
    ) {
        let Some(t) = self.transfer_mut(session) else {
            return;
        };
        t.done = true;
        let (incoming, name) = (!t.is_sending(), t.file.name.clone());
        self.events.push_back(Event::FileFailed {
            session,
            incoming,
            name,
            status,
            reason: reason.to_owned(),
        });
        self.finish_session(now, session, status, reason, true);
    }

    // ---------------------------------------------------------------- receiving

    /// What an offered file is, or why it is refused (488).
    pub(super) fn file_offer(&self, offered: &MsrpMedia) -> Result<FileDescription, &'static str> {
        if !self.cfg.file_transfer {
            return Err("File Transfer Not Taken");
        }
        let Some(ft) = &offered.file else {
            return Err("No File Selector");
        };
        if offered.direction != Direction::SendOnly {
            // RFC 5547 pull (recvonly offers) is not supported.
            return Err("Only File Push Supported");
        }
        if ft.range.is_some() {
            return Err("File Range Not Supported");
        }
        let Some(size) = ft.selector.size else {
            return Err("File Size Missing");
        };
        let media_type = ft
            .selector
            .media_type
            .clone()
            .or_else(|| offered.accept_types.first().cloned())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        Ok(FileDescription {
            name: sanitize_file_name(ft.selector.name.as_deref().unwrap_or_default()),
            media_type,
            size,
            sha1: selector_sha1(&ft.selector),
        })
    }

    /// An offered file's session is set up (answer ready): [`Event::FileIncoming`].
    pub(super) fn file_incoming(
        &mut self,
        session: SessionId,
        from: String,
        file: FileDescription,
    ) {
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        s.reassembler = Reassembler::new(ReassemblyLimits {
            max_message_len: file.size,
            max_messages: 2,
        });
        s.file = Some(Box::new(Transfer {
            file: file.clone(),
            done: false,
            flow: Flow::Receive(Receiving {
                from: from.clone(),
                message_id: None,
                next: 0,
                hasher: FileHasher::new(),
            }),
        }));
        self.events.push_back(Event::FileIncoming {
            session,
            from,
            file,
        });
    }

    /// Whether a SEND in a file session is taken: the empty binding SEND, or a chunk of the
    /// one file (its type, one Message-ID) while it is being received; otherwise the MSRP
    /// status to refuse it with.
    pub(super) fn file_check_send(
        &mut self,
        session: SessionId,
        request: &MsrpRequest,
        message_id: &str,
    ) -> Result<(), u16> {
        let Some(ct) = request.headers.content_type() else {
            return Ok(());
        };
        let Some(t) = self.transfer_mut(session) else {
            // Done already (or never ours to receive): nothing more belongs here.
            return Err(MsrpStatus::BadRequest.code());
        };
        let expected = mime::media_type(&t.file.media_type);
        let Flow::Receive(rcv) = &mut t.flow else {
            return Err(MsrpStatus::UnsupportedMediaType.code());
        };
        if !mime::media_type(ct).eq_ignore_ascii_case(&expected) {
            return Err(MsrpStatus::UnsupportedMediaType.code());
        }
        match &rcv.message_id {
            Some(m) if m != message_id => Err(MsrpStatus::BadRequest.code()),
            Some(_) => Ok(()),
            None => {
                rcv.message_id = Some(message_id.to_owned());
                Ok(())
            }
        }
    }

    /// A piece of the file at `offset` (0-based): hashed and handed on, in order; a
    /// repeated range is skipped, a gap refused (the hash is computed as the data comes,
    /// and nothing is held back).
    pub(super) fn file_data(
        &mut self,
        session: SessionId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), (u16, &'static str)> {
        let Some(t) = self.transfer_mut(session) else {
            return Ok(());
        };
        let Flow::Receive(rcv) = &mut t.flow else {
            return Ok(());
        };
        if offset > rcv.next {
            // RFC 4975 section 7.3.1: 413 asks the sender to stop this message.
            return Err((
                MsrpStatus::MessageTooLarge.code(),
                "File Chunks Out Of Order",
            ));
        }
        let skip = rcv.next - offset;
        if skip >= data.len() as u64 {
            return Ok(());
        }
        let piece = data.slice(skip as usize..);
        rcv.hasher.update(&piece);
        let at = rcv.next;
        rcv.next += piece.len() as u64;
        self.events.push_back(Event::FileData {
            session,
            offset: at,
            data: piece,
        });
        Ok(())
    }

    /// A chunk of the file ended: 200, and at the end of the file the size and hash
    /// checks; an abort (`#`) fails the transfer.
    pub(super) fn file_chunk_end(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        request: &MsrpRequest,
        progress: Progress,
    ) {
        match progress {
            Progress::Incomplete { .. } => self.msrp_respond(conn, request, 200),
            Progress::Interrupted { .. } => {
                self.msrp_respond(conn, request, 200);
                self.file_fail(now, session, 503, "Aborted By Sender");
            }
            Progress::Complete { total } => {
                let Some(t) = self.transfer_mut(session) else {
                    self.msrp_respond(conn, request, 200);
                    return;
                };
                let Flow::Receive(rcv) = &mut t.flow else {
                    return;
                };
                let hash = std::mem::take(&mut rcv.hasher).finish();
                let from = rcv.from.clone();
                let failure = if total != t.file.size || rcv.next != t.file.size {
                    Some("File Size Mismatch")
                } else if t.file.sha1.is_some_and(|h| h != hash) {
                    Some("File Hash Mismatch")
                } else {
                    None
                };
                if let Some(reason) = failure {
                    self.msrp_respond(conn, request, MsrpStatus::BadRequest.code());
                    self.file_fail(now, session, MsrpStatus::BadRequest.code(), reason);
                    return;
                }
                t.done = true;
                let mut file = t.file.clone();
                file.sha1 = Some(hash);
                self.msrp_respond(conn, request, 200);
                self.events.push_back(Event::FileReceived {
                    session,
                    from,
                    file,
                });
            }
        }
    }
}
