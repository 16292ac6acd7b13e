//! The MSRP side of a session (RFC 4975): binding the connections to the legs, reading
//! messages chunk by chunk, storing them before acknowledging (ARCHITECTURE.md rule 3), and
//! relaying them to the other leg.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cpm_content::{Cpim, CpimAddress, DeliveryStatus, DisplayStatus, Imdn, Notification, mime};
use cpm_msrp::{
    ByteRange, ConnCommand, ConnEvent, ConnId, Flag, Frame, Head, Header, Headers, Method,
    StatusCode as MsrpStatus, TransactId, report,
};
use cpm_sip::Uri;
use cpm_store::{DeliveryState, Direction, MessageRecord, OpError, Outcome, StoreOp};

use super::super::message::names_only;
use super::super::{OpPurpose, Output, ParticipatingFunction};
use super::{Leg, MAX_QUEUED};
use crate::ids::{aor_of, derived_uuid};

/// What one of our SENDs on a leg is for.
#[derive(Debug)]
pub(in crate::participating) enum Relay {
    /// A message of the served user's client relayed to the network: the client's SEND is
    /// answered with what the network answers (its `200` follows the other PF's commit).
    Outbound {
        /// The client's SEND (its last chunk).
        answer: cpm_msrp::Request,
        /// The message's size, for a success REPORT.
        total: u64,
    },
    /// A message from the network relayed to the served user's client: its stored record
    /// is marked delivered on the client's `200`.
    Inbound {
        owner: String,
        peer: String,
        message_id: String,
    },
    /// A chunk of a file relayed on: the chunk it relays (from the other leg) is answered
    /// with what the next hop answers, so the sender's window paces the whole path; the
    /// last chunk from the network also marks the file delivered.
    Chunk {
        /// The chunk received.
        answer: cpm_msrp::Request,
        /// The leg it came on.
        from: Leg,
        /// For the last chunk: the record to mark delivered (owner, peer, message id,
        /// direction).
        delivered: Option<(String, String, String, Direction)>,
    },
    /// Nothing waits on the answer (the binding SEND, isComposing, notifications).
    Plain,
}

/// What to do once a session message's store operation committed.
#[derive(Debug)]
pub(in crate::participating) struct SessionStore {
    pub(super) sid: u64,
    pub(super) leg: Leg,
    pub(super) head: cpm_msrp::Request,
    pub(super) body: Bytes,
    pub(super) then: Then,
}

#[derive(Debug)]
pub(super) enum Then {
    /// A file chunk is written (the last one: the file is complete and linked from the
    /// history): relay it on with its range and flag.
    RelayChunk {
        range: ByteRange,
        flag: Flag,
        /// The last chunk: the record to mark delivered once the next hop has it.
        delivered: Option<(String, String, String, Direction)>,
    },
    /// The served user's message is in their history: relay it to the network.
    RelayOutbound,
    /// A message from the network is in the served user's history: answer `200`, then
    /// relay it to their client (unless nobody is there).
    AnswerRelayInbound { message_id: String },
    /// A notification's state is recorded: answer `200`, relay it.
    AnswerRelay,
}

/// What a complete message is.
enum Kind {
    /// The empty SEND that binds a connection (RFC 4975 section 5.4).
    Binding,
    /// isComposing (RFC 3994): relayed, never stored.
    Composing,
    /// A disposition notification (RFC 5438) about an earlier message.
    Notification(Imdn),
    /// A message for the history.
    Message {
        message_id: String,
        content_type: String,
        disposition: Vec<String>,
    },
}

fn classify(head: &cpm_msrp::Request, body: &[u8]) -> Result<Kind, MsrpStatus> {
    let Some(ct) = head.headers.content_type() else {
        return Ok(Kind::Binding);
    };
    let media = mime::media_type(ct);
    if media.eq_ignore_ascii_case(mime::MESSAGE_CPIM) {
        let cpim = Cpim::parse(Bytes::copy_from_slice(body)).map_err(|_| MsrpStatus::BadRequest)?;
        let inner = cpim
            .content_type()
            .map(mime::media_type)
            .unwrap_or_default();
        if inner.eq_ignore_ascii_case(mime::MESSAGE_IMDN_XML) {
            return Imdn::parse(&cpim.body)
                .map(Kind::Notification)
                .map_err(|_| MsrpStatus::BadRequest);
        }
        if inner.eq_ignore_ascii_case("application/im-iscomposing+xml") {
            return Ok(Kind::Composing);
        }
        let message_id = cpim
            .message_id()
            .map(str::to_owned)
            .or_else(|| head.headers.message_id().map(str::to_owned))
            .unwrap_or_else(|| derived_uuid(&[head.transact_id.as_str(), "msrp"]));
        let disposition = cpim
            .disposition_notification()
            .iter()
            .map(|d| d.as_str().to_ascii_lowercase())
            .collect();
        return Ok(Kind::Message {
            message_id,
            content_type: ct.to_owned(),
            disposition,
        });
    }
    if media.eq_ignore_ascii_case("application/im-iscomposing+xml") {
        return Ok(Kind::Composing);
    }
    if media.eq_ignore_ascii_case(mime::MESSAGE_IMDN_XML) {
        return Imdn::parse(body)
            .map(Kind::Notification)
            .map_err(|_| MsrpStatus::BadRequest);
    }
    let message_id = head
        .headers
        .message_id()
        .map(str::to_owned)
        .unwrap_or_else(|| derived_uuid(&[head.transact_id.as_str(), "msrp"]));
    Ok(Kind::Message {
        message_id,
        content_type: ct.to_owned(),
        disposition: Vec::new(),
    })
}

impl ParticipatingFunction {
    /// One event of the driver's MSRP transport.
    pub(in crate::participating) fn on_msrp(&mut self, now: Instant, ev: ConnEvent) {
        match ev {
            ConnEvent::Accepted { .. } => {}
            ConnEvent::Connected { token, conn } => {
                let Some((sid, leg)) = self.sessions.connects.remove(&token) else {
                    // The session ended meanwhile.
                    self.outputs
                        .push_back(Output::Msrp(ConnCommand::Close { conn }));
                    return;
                };
                self.sessions.conns.insert(conn, (sid, leg));
                let Some(s) = self.sessions.map.get_mut(&sid) else {
                    return;
                };
                s.media_mut(leg).conn = Some(conn);
                // The active side binds the connection with a SEND (RFC 4975 section 5.4);
                // what waited goes out after it.
                let queued: Vec<_> = s.media_mut(leg).queue.drain(..).collect();
                self.msrp_send(now, sid, leg, None, None, Relay::Plain, None);
                for (req, bytes) in queued {
                    self.msrp_write(now, sid, leg, &req, bytes);
                }
            }
            ConnEvent::ConnectFailed { token } => {
                if let Some((sid, _)) = self.sessions.connects.remove(&token) {
                    self.end_session(now, sid, None);
                }
            }
            ConnEvent::Frame { conn, frame } => match frame {
                Frame::Head(head) => self.on_msrp_head(now, conn, head),
                Frame::Data(data) => self.on_msrp_data(conn, &data),
                Frame::End { flag } => self.on_msrp_end(now, conn, flag),
            },
            ConnEvent::Error { conn, error } => {
                if error.scope() == cpm_msrp::Scope::Connection {
                    self.outputs
                        .push_back(Output::Msrp(ConnCommand::Close { conn }));
                }
            }
            ConnEvent::Closed { conn } => {
                self.sessions.discarding.remove(&conn);
                // Connection loss ends the session (5.2.3.1).
                if let Some((sid, leg)) = self.sessions.conns.remove(&conn) {
                    if let Some(s) = self.sessions.map.get_mut(&sid) {
                        s.media_mut(leg).conn = None;
                    }
                    // The other PF's connection gone (it hung up): what it sent reaches the
                    // client first.
                    if !self.drain_first(now, sid, leg, true) {
                        self.end_session(now, sid, None);
                    }
                }
            }
        }
    }

    /// Writes a response on a connection (nothing when none is due).
    pub(super) fn msrp_answer(
        &mut self,
        conn: ConnId,
        req: &cpm_msrp::Request,
        status: MsrpStatus,
    ) {
        if let Some(resp) = report::response(req, status) {
            let mut out = BytesMut::new();
            if cpm_msrp::encode(&Head::Response(resp), None, Flag::Complete, &mut out).is_ok() {
                self.outputs.push_back(Output::Msrp(ConnCommand::Send {
                    conn,
                    bytes: out.freeze(),
                }));
            }
        }
    }

    fn on_msrp_head(&mut self, now: Instant, conn: ConnId, head: Head) {
        let req = match head {
            Head::Response(resp) => {
                if let Some(&(sid, leg)) = self.sessions.conns.get(&conn)
                    && let Some(s) = self.sessions.map.get_mut(&sid)
                {
                    s.last_activity = now;
                    s.media_mut(leg).tx.handle_response(now, &resp);
                    self.drain_msrp_outcomes(now, sid, leg);
                }
                return;
            }
            Head::Request(req) => req,
        };
        // RFC 4975 section 7.3: the To-Path's last URI names the session here.
        let target = req
            .headers
            .to_path()
            .last()
            .and_then(|u| u.session_id().map(str::to_owned))
            .and_then(|id| self.sessions.msrp_ids.get(&id).copied());
        let bound = self.sessions.conns.get(&conn).copied();
        let verdict = match (target, bound) {
            (None, _) => Err(MsrpStatus::SessionDoesNotExist),
            // One connection carries one session of ours (we never share them).
            (Some(t), Some(b)) if t != b => Err(MsrpStatus::SessionAlreadyBound),
            (Some((sid, leg)), _) => match self.sessions.map.get(&sid) {
                None => Err(MsrpStatus::SessionDoesNotExist),
                Some(s) => {
                    let m = s.media(leg);
                    let from_ok = match (req.headers.from_path().last(), m.remote.last()) {
                        (Some(a), Some(b)) => a.equivalent(b),
                        // The device connected before its SDP answer reached us (the answer
                        // crosses SIP, the connection TCP: either may come first). The
                        // session id it names is the unguessable part; the path it gives
                        // is taken until the answer confirms it.
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    if m.conn.is_some_and(|c| c != conn) {
                        Err(MsrpStatus::SessionAlreadyBound)
                    } else if !from_ok {
                        // Only the peer the SDP named may use the session.
                        Err(MsrpStatus::Forbidden)
                    } else {
                        Ok((sid, leg))
                    }
                }
            },
        };
        let (sid, leg) = match verdict {
            Ok(v) => v,
            Err(status) => {
                self.msrp_answer(conn, &req, status);
                if req.headers.content_type().is_some() {
                    self.sessions.discarding.insert(conn);
                }
                return;
            }
        };
        if bound.is_none() {
            self.sessions.conns.insert(conn, (sid, leg));
        }
        let Some(s) = self.sessions.map.get_mut(&sid) else {
            return;
        };
        s.last_activity = now;
        let m = s.media_mut(leg);
        m.conn = Some(conn);
        if m.remote.is_empty() {
            // Back along the path the request came: From-Path lists the previous hop first
            // and the sender last, as a To-Path towards the sender does (RFC 4975 7.1.1).
            m.remote = req.headers.from_path().to_vec();
        }
        // The peer opened the connection (we are passive on this leg): what waited for it
        // goes out now.
        let queued: Vec<_> = if bound.is_none() {
            m.queue.drain(..).collect()
        } else {
            Vec::new()
        };
        match req.method {
            // Without a body no Data frames come: the end-line follows.
            Method::Send => m.reading = Some((req, BytesMut::new())),
            // A REPORT about what we sent: nothing to answer (RFC 4975 section 7.1.2).
            Method::Report => {}
            _ => {
                self.msrp_answer(conn, &req, MsrpStatus::UnknownMethod);
                if req.headers.content_type().is_some() {
                    self.sessions.discarding.insert(conn);
                }
            }
        }
        for (r, bytes) in queued {
            self.msrp_write(now, sid, leg, &r, bytes);
        }
    }

    fn on_msrp_data(&mut self, conn: ConnId, data: &[u8]) {
        if self.sessions.discarding.contains(&conn) {
            return;
        }
        let max = self.cfg.max_session_message;
        let Some(&(sid, leg)) = self.sessions.conns.get(&conn) else {
            return;
        };
        let Some(s) = self.sessions.map.get_mut(&sid) else {
            return;
        };
        let m = s.media_mut(leg);
        let Some((req, body)) = &mut m.reading else {
            return;
        };
        let earlier = req
            .headers
            .message_id()
            .and_then(|id| m.partial.get(id))
            .map_or(0, BytesMut::len);
        if earlier + body.len() + data.len() > max {
            // RFC 4975 section 7.2: 413 asks the sender to stop sending this message.
            let req = req.clone();
            m.reading = None;
            if let Some(id) = req.headers.message_id() {
                m.partial.remove(id);
            }
            self.msrp_answer(conn, &req, MsrpStatus::MessageTooLarge);
            self.sessions.discarding.insert(conn);
            return;
        }
        body.extend_from_slice(data);
    }

    fn on_msrp_end(&mut self, now: Instant, conn: ConnId, flag: Flag) {
        if self.sessions.discarding.remove(&conn) {
            return;
        }
        let Some(&(sid, leg)) = self.sessions.conns.get(&conn) else {
            return;
        };
        let Some(s) = self.sessions.map.get_mut(&sid) else {
            return;
        };
        let is_file = s.file.is_some();
        let m = s.media_mut(leg);
        let Some((req, chunk)) = m.reading.take() else {
            return;
        };
        if is_file && req.headers.content_type().is_some() {
            return self.file_chunk(now, sid, leg, conn, req, chunk.freeze(), flag);
        }
        let id = req.headers.message_id().unwrap_or_default().to_owned();
        match flag {
            // More chunks follow (RFC 4975 section 5.1): keep this one, acknowledge it.
            Flag::Continued => {
                m.partial.entry(id).or_default().extend_from_slice(&chunk);
                self.msrp_answer(conn, &req, MsrpStatus::Ok);
            }
            // The sender gave up on the message: nothing of it is kept.
            Flag::Aborted => {
                m.partial.remove(&id);
                self.msrp_answer(conn, &req, MsrpStatus::Ok);
            }
            Flag::Complete => {
                let body = match m.partial.remove(&id) {
                    Some(mut earlier) => {
                        earlier.extend_from_slice(&chunk);
                        earlier.freeze()
                    }
                    None => chunk.freeze(),
                };
                self.msrp_complete(now, sid, leg, conn, req, body);
            }
        }
    }

    /// A whole message arrived on `leg`.
    fn msrp_complete(
        &mut self,
        now: Instant,
        sid: u64,
        leg: Leg,
        conn: ConnId,
        req: cpm_msrp::Request,
        body: Bytes,
    ) {
        let kind = match classify(&req, &body) {
            Ok(k) => k,
            Err(status) => return self.msrp_answer(conn, &req, status),
        };
        let Some(s) = self.sessions.map.get(&sid) else {
            return;
        };
        let from_owner = leg == s.owner_leg();
        let unix = self.unix_ms(now);
        match kind {
            Kind::Binding => self.msrp_answer(conn, &req, MsrpStatus::Ok),
            Kind::Composing => {
                self.msrp_answer(conn, &req, MsrpStatus::Ok);
                self.relay(now, sid, leg.other(), &req, body, Relay::Plain);
            }
            Kind::Notification(imdn) => {
                self.stats.imdns += 1;
                let state = match imdn.notification {
                    Notification::Delivery(DeliveryStatus::Delivered) => {
                        Some(DeliveryState::Delivered)
                    }
                    Notification::Display(DisplayStatus::Displayed) => {
                        Some(DeliveryState::Displayed)
                    }
                    Notification::Delivery(
                        DeliveryStatus::Failed | DeliveryStatus::Forbidden | DeliveryStatus::Error,
                    ) => Some(DeliveryState::Failed),
                    _ => None,
                };
                // From the served user: about a message they received; from the network:
                // about one they sent.
                let direction = if from_owner {
                    Direction::Received
                } else {
                    Direction::Sent
                };
                let store = SessionStore {
                    sid,
                    leg,
                    head: req,
                    body,
                    then: Then::AnswerRelay,
                };
                match state {
                    Some(state) => {
                        let op = StoreOp::UpdateState {
                            owner: s.owner.clone(),
                            peer: Some(s.peer.clone()),
                            direction: Some(direction),
                            message_id: imdn.message_id,
                            state,
                            at_ms: unix,
                        };
                        self.store(OpPurpose::Session(Box::new(store)), op);
                    }
                    // Nothing to record (a processing notification): pass it on at once.
                    None => self.session_then(now, store, false),
                }
            }
            Kind::Message {
                message_id,
                content_type,
                disposition,
            } => {
                let mut body = body;
                if from_owner && content_type.eq_ignore_ascii_case(mime::MESSAGE_CPIM) {
                    // The CPIM From the peer sees and both histories keep is the served
                    // user (the identity the network vouches for).
                    match vouch(&body, &s.owner, &s.owner_uri) {
                        Some(b) => {
                            if b != body {
                                self.stats.cpim_from_corrected += 1;
                            }
                            body = b;
                        }
                        None => return self.msrp_answer(conn, &req, MsrpStatus::Forbidden),
                    }
                }
                let (direction, sender, recipient) = if from_owner {
                    (Direction::Sent, s.owner_uri.clone(), s.peer_uri.clone())
                } else {
                    (Direction::Received, s.peer_uri.clone(), s.owner_uri.clone())
                };
                let record = MessageRecord {
                    owner: s.owner.clone(),
                    direction,
                    peer: s.peer.clone(),
                    conversation_id: s.ids.conversation.clone(),
                    contribution_id: s.ids.contribution.clone(),
                    in_reply_to: s.ids.in_reply_to.clone(),
                    message_id: message_id.clone(),
                    sender,
                    recipient,
                    content_type,
                    body: body.to_vec(),
                    disposition,
                    created_at_ms: unix,
                    expires_at_ms: (!from_owner)
                        .then(|| self.cfg.deferred_ttl.map(|t| unix + t.as_millis() as u64))
                        .flatten(),
                    state: DeliveryState::Pending,
                    state_at_ms: unix,
                };
                let (then, op) = if from_owner {
                    self.stats.messages_sent += 1;
                    (Then::RelayOutbound, StoreOp::AppendMessage(record))
                } else {
                    self.stats.messages_received += 1;
                    let op = match self.cfg.deferred_quota {
                        // In the deferred queue until the client has it.
                        Some(quota) => StoreOp::AppendDeferred { record, quota },
                        None => StoreOp::AppendMessage(record),
                    };
                    (Then::AnswerRelayInbound { message_id }, op)
                };
                let store = SessionStore {
                    sid,
                    leg,
                    head: req,
                    body,
                    then,
                };
                self.store(OpPurpose::Session(Box::new(store)), op);
            }
        }
    }

    /// A session message's store operation is done.
    pub(in crate::participating) fn session_stored(
        &mut self,
        now: Instant,
        st: SessionStore,
        result: Result<Outcome, OpError>,
    ) {
        let Some(s) = self.sessions.map.get(&st.sid) else {
            return;
        };
        let conn = s.media(st.leg).conn;
        let (duplicate_delivered, failure) = match &result {
            Ok(Outcome::Appended {
                duplicate, state, ..
            }) => {
                if *duplicate {
                    self.stats.duplicates += 1;
                }
                (*duplicate && *state >= DeliveryState::Delivered, None)
            }
            Ok(_) => (false, None),
            Err(OpError::QuotaExceeded(_)) => (false, Some(MsrpStatus::MessageTooLarge)),
            Err(_) => {
                self.stats.store_failures += 1;
                // Not stored: no 200; the sender may send it again.
                (false, Some(MsrpStatus::RequestTimeout))
            }
        };
        if let Some(status) = failure {
            // 408 is never sent on the wire (RFC 4975 10.4); a store failure is reported as
            // the nearest code a sender acts on: try again later.
            let status = if status == MsrpStatus::RequestTimeout {
                MsrpStatus::Forbidden
            } else {
                status
            };
            if let Some(conn) = conn {
                self.msrp_answer(conn, &st.head, status);
            }
            return;
        }
        self.session_then(now, st, duplicate_delivered);
    }

    /// What follows a session message's commit: the relay, the answer.
    fn session_then(&mut self, now: Instant, st: SessionStore, duplicate_delivered: bool) {
        let SessionStore {
            sid,
            leg,
            head,
            body,
            then,
        } = st;
        let Some(s) = self.sessions.map.get(&sid) else {
            return;
        };
        let conn = s.media(leg).conn;
        let stand_in = s.stand_in;
        let owner = s.owner.clone();
        let peer = s.peer.clone();
        match then {
            Then::RelayChunk {
                range,
                flag,
                delivered,
            } => {
                if stand_in {
                    if let Some(conn) = conn {
                        self.msrp_answer(conn, &head, MsrpStatus::Ok);
                    }
                    return;
                }
                let ct = head.headers.content_type().map(str::to_owned);
                let mid = head.headers.message_id().map(str::to_owned);
                let relay = Relay::Chunk {
                    answer: head,
                    from: leg,
                    delivered,
                };
                self.msrp_send(
                    now,
                    sid,
                    leg.other(),
                    ct.zip(Some(body)),
                    mid,
                    relay,
                    Some((range, flag)),
                );
            }
            Then::RelayOutbound => {
                let total = body.len() as u64;
                self.relay(
                    now,
                    sid,
                    leg.other(),
                    &head,
                    body,
                    Relay::Outbound {
                        answer: head.clone(),
                        total,
                    },
                );
            }
            Then::AnswerRelayInbound { message_id } => {
                if let Some(conn) = conn {
                    self.msrp_answer(conn, &head, MsrpStatus::Ok);
                }
                if stand_in || duplicate_delivered {
                    // Nobody to relay to: it waits in the deferred queue (or was delivered).
                    return;
                }
                self.in_flight
                    .insert((owner.clone(), peer.clone(), message_id.clone()));
                self.relay(
                    now,
                    sid,
                    leg.other(),
                    &head,
                    body,
                    Relay::Inbound {
                        owner,
                        peer,
                        message_id,
                    },
                );
            }
            Then::AnswerRelay => {
                if let Some(conn) = conn {
                    self.msrp_answer(conn, &head, MsrpStatus::Ok);
                }
                if !stand_in {
                    self.relay(now, sid, leg.other(), &head, body, Relay::Plain);
                }
            }
        }
    }

    /// Sends `body` (with the content type of `from`) on `leg` as a new SEND.
    fn relay(
        &mut self,
        now: Instant,
        sid: u64,
        leg: Leg,
        from: &cpm_msrp::Request,
        body: Bytes,
        relay: Relay,
    ) {
        let ct = from.headers.content_type().map(str::to_owned);
        let mid = from.headers.message_id().map(str::to_owned);
        self.msrp_send(now, sid, leg, ct.zip(Some(body)), mid, relay, None);
    }

    /// A new SEND on a leg: written now, or queued until the connection is up.
    #[allow(clippy::too_many_arguments)] // One SEND's parts; a struct would only rename them.
    pub(super) fn msrp_send(
        &mut self,
        now: Instant,
        sid: u64,
        leg: Leg,
        content: Option<(String, Bytes)>,
        message_id: Option<String>,
        relay: Relay,
        chunk: Option<(ByteRange, Flag)>,
    ) {
        let message_id = message_id.unwrap_or_else(|| format!("{:016x}", self.random()));
        let Some(s) = self.sessions.map.get(&sid) else {
            return;
        };
        let m = s.media(leg);
        let Ok(mut headers) = Headers::new(m.remote.clone(), vec![m.local.clone()]) else {
            // No path to the peer (its SDP had none): nothing can be sent.
            self.relay_failed(now, sid, relay, 481);
            return;
        };
        headers.set(Header::MessageId(message_id));
        let len = content.as_ref().map_or(0, |(_, b)| b.len() as u64);
        let (range, flag) = chunk.unwrap_or((
            ByteRange {
                start: 1,
                end: Some(len),
                total: Some(len),
            },
            Flag::Complete,
        ));
        if content.is_some() {
            headers.set(Header::ByteRange(range));
        }
        if let Some((ct, _)) = &content {
            headers.set(Header::ContentType(ct.clone()));
        }
        // A transaction id whose end-line the body does not hold (RFC 4975 section 6).
        let mut encoded = None;
        for _ in 0..4 {
            let Ok(tid) = TransactId::new(&format!("{:016x}", self.random())) else {
                continue;
            };
            let req = cpm_msrp::Request {
                transact_id: tid,
                method: Method::Send,
                headers: headers.clone(),
            };
            let mut out = BytesMut::new();
            let head = Head::Request(req.clone());
            if cpm_msrp::encode(&head, content.as_ref().map(|(_, b)| &b[..]), flag, &mut out)
                .is_ok()
            {
                encoded = Some((req, out.freeze()));
                break;
            }
        }
        let Some((req, bytes)) = encoded else {
            self.relay_failed(now, sid, relay, 400);
            return;
        };
        let Some(s) = self.sessions.map.get_mut(&sid) else {
            return;
        };
        let m = s.media_mut(leg);
        m.relays.insert(req.transact_id.clone(), relay);
        if m.conn.is_none() {
            if m.queue.len() >= MAX_QUEUED {
                if let Some(r) = m.relays.remove(&req.transact_id) {
                    self.relay_failed(now, sid, r, 413);
                }
                return;
            }
            m.queue.push_back((req, bytes));
            return;
        }
        self.msrp_write(now, sid, leg, &req, bytes);
    }

    /// Writes a SEND on the leg's connection and starts its transaction.
    fn msrp_write(
        &mut self,
        now: Instant,
        sid: u64,
        leg: Leg,
        req: &cpm_msrp::Request,
        bytes: Bytes,
    ) {
        let Some(s) = self.sessions.map.get_mut(&sid) else {
            return;
        };
        let m = s.media_mut(leg);
        let Some(conn) = m.conn else {
            return;
        };
        let _ = m.tx.start(now, req);
        let deadline = m.tx.poll_timeout();
        self.outputs
            .push_back(Output::Msrp(ConnCommand::Send { conn, bytes }));
        if let Some(at) = deadline {
            self.sessions.msrp_deadlines.insert((at, sid));
        }
    }

    /// MSRP transactions of a session whose deadline came.
    pub(super) fn msrp_transaction_timeouts(&mut self, now: Instant, sid: u64) {
        for leg in [Leg::Up, Leg::Down] {
            let Some(s) = self.sessions.map.get_mut(&sid) else {
                return;
            };
            let m = s.media_mut(leg);
            m.tx.handle_timeout(now);
            if let Some(at) = m.tx.poll_timeout() {
                self.sessions.msrp_deadlines.insert((at, sid));
            }
            self.drain_msrp_outcomes(now, sid, leg);
        }
    }

    fn drain_msrp_outcomes(&mut self, now: Instant, sid: u64, leg: Leg) {
        loop {
            let Some(s) = self.sessions.map.get_mut(&sid) else {
                return;
            };
            let m = s.media_mut(leg);
            let Some(outcome) = m.tx.poll_outcome() else {
                return;
            };
            let Some(relay) = m.relays.remove(outcome.transact_id()) else {
                continue;
            };
            match outcome.status() {
                Some(200) | None => self.relay_done(now, sid, relay),
                Some(code) => self.relay_failed(now, sid, relay, code),
            }
        }
    }

    /// The connection of the served user's client in a session.
    fn owner_conn(&self, sid: u64) -> Option<ConnId> {
        let s = self.sessions.map.get(&sid)?;
        s.media(s.owner_leg()).conn
    }

    /// The next hop took one of our SENDs.
    fn relay_done(&mut self, now: Instant, sid: u64, relay: Relay) {
        match relay {
            Relay::Chunk {
                answer,
                from,
                delivered,
            } => {
                if let Some(conn) = self.sessions.map.get(&sid).and_then(|s| s.media(from).conn) {
                    self.msrp_answer(conn, &answer, MsrpStatus::Ok);
                }
                if let Some((owner, peer, message_id, direction)) = delivered {
                    self.mark_delivered(now, owner, peer, message_id, direction);
                }
            }
            Relay::Outbound { answer, total } => {
                // Both histories have it now: the client's SEND gets its 200 (and the
                // success REPORT it asked for).
                let Some(conn) = self.owner_conn(sid) else {
                    return;
                };
                self.msrp_answer(conn, &answer, MsrpStatus::Ok);
                if let Ok(tid) = TransactId::new(&format!("{:016x}", self.random()))
                    && let Some(rep) = report::success_report(&answer, total, tid)
                {
                    let mut out = BytesMut::new();
                    if cpm_msrp::encode(&Head::Request(rep), None, Flag::Complete, &mut out).is_ok()
                    {
                        self.outputs.push_back(Output::Msrp(ConnCommand::Send {
                            conn,
                            bytes: out.freeze(),
                        }));
                    }
                }
            }
            Relay::Inbound {
                owner,
                peer,
                message_id,
            } => self.mark_delivered(now, owner, peer, message_id, Direction::Received),
            Relay::Plain => {}
        }
        self.finish_draining(now, sid);
    }

    /// The next hop took a message (for one from the network: the served user's client):
    /// its record says so.
    fn mark_delivered(
        &mut self,
        now: Instant,
        owner: String,
        peer: String,
        message_id: String,
        direction: Direction,
    ) {
        self.in_flight
            .remove(&(owner.clone(), peer.clone(), message_id.clone()));
        self.stats.delivered += 1;
        let at_ms = self.unix_ms(now);
        self.store(
            OpPurpose::Background,
            StoreOp::UpdateState {
                owner,
                peer: Some(peer),
                direction: Some(direction),
                message_id,
                state: DeliveryState::Delivered,
                at_ms,
            },
        );
    }

    /// A session whose network leg ended is ended once its client has everything.
    fn finish_draining(&mut self, now: Instant, sid: u64) {
        let Some(s) = self.sessions.map.get(&sid) else {
            return;
        };
        let m = s.media(s.owner_leg());
        if s.draining && m.queue.is_empty() && m.relays.is_empty() {
            let network = s.owner_leg().other();
            self.end_session(now, sid, Some(network));
        }
    }

    /// One of our SENDs failed (an error response, a timeout, the session ended first).
    pub(super) fn relay_failed(&mut self, now: Instant, sid: u64, relay: Relay, code: u16) {
        match relay {
            Relay::Outbound { answer, .. } => {
                // The client is told; its message stays in its history as not delivered.
                // (408 is never sent, RFC 4975 10.4: a next hop that did not answer is
                // reported as a refusal.)
                let status = MsrpStatus::from_code(code)
                    .filter(|s| *s != MsrpStatus::RequestTimeout && *s != MsrpStatus::Ok)
                    .unwrap_or(MsrpStatus::Forbidden);
                if let Some(conn) = self.owner_conn(sid) {
                    self.msrp_answer(conn, &answer, status);
                }
            }
            Relay::Chunk { answer, from, .. } => {
                // The file cannot get through: the sender hears why, the transfer ends.
                let status = MsrpStatus::from_code(code)
                    .filter(|s| *s != MsrpStatus::RequestTimeout && *s != MsrpStatus::Ok)
                    .unwrap_or(MsrpStatus::Forbidden);
                if let Some(conn) = self.sessions.map.get(&sid).and_then(|s| s.media(from).conn) {
                    self.msrp_answer(conn, &answer, status);
                }
                self.end_session(now, sid, None);
            }
            Relay::Inbound {
                owner,
                peer,
                message_id,
            } => {
                // It stays pending in the deferred queue: deliver it as a deferred message.
                self.in_flight.remove(&(owner.clone(), peer, message_id));
                self.start_deferred_run(owner);
            }
            Relay::Plain => {}
        }
        self.finish_draining(now, sid);
    }
}

/// The CPIM body with its `From` set to the served user when it names someone else; `None`
/// when it cannot be made to tell the truth (see `vouch_cpim_from` for pager messages).
fn vouch(body: &Bytes, owner: &str, owner_uri: &str) -> Option<Bytes> {
    let Ok(mut cpim) = Cpim::parse(body.clone()) else {
        return Some(body.clone());
    };
    if names_only(&cpim, owner) {
        return Some(body.clone());
    }
    let uri = Uri::parse(owner_uri).ok()?;
    let want = aor_of(&uri)?;
    cpim.set_from(&CpimAddress::new(uri.to_string()));
    let out = cpim.to_bytes();
    Cpim::parse(out.clone())
        .is_ok_and(|c| names_only(&c, &want))
        .then_some(out)
}
