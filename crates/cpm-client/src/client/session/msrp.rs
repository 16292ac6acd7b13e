//! The MSRP side of a session: sending queued messages as SEND chunks and matching their
//! responses (RFC 4975 sections 5.1 and 7.1.1), reading SENDs off a connection, answering
//! each chunk and handing the whole message on (sections 7.2 and 7.3), and the composing
//! indication (RFC 3994).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cpm_content::{Cpim, mime};
use cpm_msrp::{
    Chunker, ConnCommand, ConnId, Flag, Frame, Head, Header as MsrpHeader, Headers as MsrpHeaders,
    Method as MsrpMethod, Outcome, Progress, Request as MsrpRequest, Response as MsrpResponse,
    StatusCode as MsrpStatus, TransactId, report,
};

use super::{ACCEPT_TYPES, ISCOMPOSING, Phase, Reading, SessionId, SessionKind, What};
use crate::client::{Client, Event, Inbound, Purpose};

/// RFC 3994 section 3: an `<isComposing>` document's `<state>`, `active` or `idle`.
pub(super) fn composing_state(xml: &[u8]) -> Option<bool> {
    let text = String::from_utf8_lossy(xml);
    let at = text.find("state>")? + "state>".len();
    let rest = &text[at..];
    let value = rest[..rest.find('<')?].trim();
    Some(value.eq_ignore_ascii_case("active"))
}

/// RFC 3994 section 3: our composing indication (`refresh` only with `active`).
pub(super) fn composing_xml(active: bool) -> String {
    let (state, refresh) = if active {
        ("active", "<refresh>60</refresh>")
    } else {
        ("idle", "")
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<isComposing \
         xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>{state}</state>\
         <contenttype>text/plain</contenttype>{refresh}</isComposing>"
    )
}

impl Client {
    /// Sends every queued item: each as SEND chunks of at most [`MAX_CHUNK`] octets with
    /// one Message-ID and their Byte-Range (RFC 4975 section 5.1), To-Path the peer's path,
    /// From-Path ours; the transactions wait for their 200 (section 7.1.1).
    pub(super) fn flush_queue(&mut self, now: Instant, session: SessionId) {
        loop {
            let Some(s) = self.sessions.map.get_mut(&session) else {
                return;
            };
            let (Some(conn), Phase::Up) = (s.conn, s.phase) else {
                return;
            };
            let Some(n) = s.queue.pop_front() else {
                return;
            };
            let Some(item) = s.items.get(&n).cloned() else {
                continue;
            };
            let message_id = self.rng.token(16);
            let max_chunk = s.max_chunk();
            // Through a relay the 200s are hop by hop (RFC 4976 section 7.3): what the
            // application waits for asks for the success REPORT (RFC 4975 section 7.1.2)
            // that the network sends once it stored the message.
            let wants_report = s.relay.is_some()
                && item.content_type.is_some()
                && !matches!(item.what, What::Quiet);
            let chunks: Vec<_> = Chunker::new(item.body.len() as u64, max_chunk).collect();
            let mut sent = 0;
            for chunk in chunks {
                let Some(s) = self.sessions.map.get(&session) else {
                    return;
                };
                let Ok(mut headers) = MsrpHeaders::new(s.to_path(), vec![s.local_path.clone()])
                else {
                    break;
                };
                headers.set(MsrpHeader::MessageId(message_id.clone()));
                headers.set(MsrpHeader::ByteRange(chunk.range));
                if wants_report {
                    headers.set(MsrpHeader::SuccessReport(true));
                }
                if let Some(ct) = &item.content_type {
                    headers.set(MsrpHeader::ContentType(ct.clone()));
                }
                let body = item.content_type.as_ref().map(|_| {
                    item.body
                        .slice(chunk.offsets.start as usize..chunk.offsets.end as usize)
                });
                let Some((request, bytes)) = self.encode_send(headers, body.as_deref(), chunk.flag)
                else {
                    break;
                };
                let Some(s) = self.sessions.map.get_mut(&session) else {
                    return;
                };
                if s.tx.start(now, &request).unwrap_or(false) {
                    s.in_flight.insert(request.transact_id.clone(), n);
                    sent += 1;
                }
                self.sessions
                    .commands
                    .push_back(ConnCommand::Send { conn, bytes });
            }
            let Some(s) = self.sessions.map.get_mut(&session) else {
                return;
            };
            if sent == 0 {
                // Nothing awaits an answer (a broken chunk, or no response expected).
                if let Some(item) = s.items.remove(&n) {
                    let status = if item.content_type.is_some() {
                        500
                    } else {
                        200
                    };
                    self.report_item(now, session, item.what, status, "Not Sent");
                }
                continue;
            }
            if wants_report {
                s.reports.insert(message_id, n);
            }
            if let Some(i) = s.items.get_mut(&n) {
                i.chunks_left = sent;
                // The chunks are written: the body is not needed any more.
                i.body = Bytes::new();
            }
        }
    }

    /// A SEND with these headers, body and end-line flag, encoded, with a new transact-id.
    pub(super) fn encode_send(
        &mut self,
        headers: MsrpHeaders,
        body: Option<&[u8]>,
        flag: Flag,
    ) -> Option<(MsrpRequest, Bytes)> {
        // RFC 4975 section 6: a transact-id whose end-line occurs in the body is replaced
        // (with 16 random characters, in practice never).
        for _ in 0..4 {
            let Ok(transact_id) = TransactId::new(&self.rng.token(16)) else {
                continue;
            };
            let request = MsrpRequest {
                transact_id,
                method: MsrpMethod::Send,
                headers: headers.clone(),
            };
            let mut bytes = BytesMut::new();
            let head = Head::Request(request.clone());
            if cpm_msrp::encode(&head, body, flag, &mut bytes).is_ok() {
                return Some((request, bytes.freeze()));
            }
        }
        None
    }

    /// MSRP transaction outcomes: the 200 to the last chunk reports the message sent; any
    /// failure (error response, RFC 4975 section 7.1.1 timeout as 408) reports it failed.
    pub(super) fn drain_outcomes(&mut self, now: Instant, session: SessionId) {
        loop {
            let Some(s) = self.sessions.map.get_mut(&session) else {
                return;
            };
            let Some(outcome) = s.tx.poll_outcome() else {
                return;
            };
            if let Some(len) = s
                .file
                .as_mut()
                .and_then(|f| f.chunk_answered(outcome.transact_id()))
            {
                self.file_outcome(now, session, len, &outcome);
                continue;
            }
            let Some(n) = s.in_flight.remove(outcome.transact_id()) else {
                continue;
            };
            let (status, comment) = match &outcome {
                Outcome::Response {
                    status, comment, ..
                } => (*status, comment.clone()),
                Outcome::TimedOut { .. } => (408, Some("Request Timeout".to_owned())),
                Outcome::Quiet { .. } => (200, None),
            };
            let done = if status == 200 {
                match s.items.get_mut(&n) {
                    Some(i) => {
                        i.chunks_left = i.chunks_left.saturating_sub(1);
                        i.chunks_left == 0
                    }
                    None => false,
                }
            } else {
                true
            };
            if !done {
                continue;
            }
            if status == 200 && s.reports.values().any(|r| *r == n) {
                // The relay took every chunk; the success REPORT says the network has it.
                s.report_by.insert(n, now + super::REPORT_TIMEOUT);
                continue;
            }
            let reason = comment.unwrap_or_else(|| {
                MsrpStatus::from_code(status)
                    .map_or("Error", MsrpStatus::comment)
                    .to_owned()
            });
            if self.finish_item(now, session, n, status, &reason) {
                return;
            }
        }
    }

    /// An item is answered: its outcome is reported; Large Message Mode ends its session
    /// then (PROTOCOL.md flow 2.2). Returns whether the session ended.
    pub(super) fn finish_item(
        &mut self,
        now: Instant,
        session: SessionId,
        n: u64,
        status: u16,
        reason: &str,
    ) -> bool {
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return true;
        };
        s.reports.retain(|_, r| *r != n);
        s.report_by.remove(&n);
        let Some(item) = s.items.remove(&n) else {
            return false;
        };
        let lmm = s.kind == SessionKind::LargeMessage && matches!(item.what, What::Chat { .. });
        self.report_item(now, session, item.what, status, reason);
        if lmm {
            self.finish_session(now, session, 200, "Message Sent", false);
        }
        lmm
    }

    /// A REPORT (RFC 4975 section 7.1.2): the success or failure of a message we asked the
    /// network to report on, whose outcome it is.
    fn on_report(&mut self, now: Instant, session: SessionId, request: &MsrpRequest) {
        let (Some(message_id), Some(status)) =
            (request.headers.message_id(), request.headers.status())
        else {
            return;
        };
        let Some(n) = self
            .sessions
            .map
            .get(&session)
            .and_then(|s| s.reports.get(message_id).copied())
        else {
            return;
        };
        let (code, reason) = (
            status.code,
            status
                .reason
                .clone()
                .unwrap_or_else(|| if status.code == 200 { "OK" } else { "Error" }.to_owned()),
        );
        if let Some(s) = self.sessions.map.get_mut(&session) {
            // Whatever chunk answers are still to come no longer matter.
            let ids: Vec<TransactId> = s
                .in_flight
                .iter()
                .filter(|(_, i)| **i == n)
                .map(|(t, _)| t.clone())
                .collect();
            for t in ids {
                s.in_flight.remove(&t);
                s.tx.cancel(&t);
            }
        }
        self.finish_item(now, session, n, code, &reason);
    }

    pub(super) fn report_item(
        &mut self,
        now: Instant,
        _session: SessionId,
        what: What,
        status: u16,
        reason: &str,
    ) {
        match what {
            What::Chat { id, message_id } => self.events.push_back(Event::SendResult {
                id,
                status,
                reason: reason.to_owned(),
                message_id,
            }),
            What::Notification(
                Purpose::Notification {
                    message_id,
                    notification,
                    ..
                },
                fallback,
            ) if !(200..300).contains(&status) => {
                // The session failed it (it ended first, the connection went): the sender
                // still learns the state, by pager MESSAGE (RFC 5438 section 7.1).
                self.send_notification(now, &fallback, &message_id, notification);
            }
            What::Notification(
                Purpose::Notification {
                    to,
                    message_id,
                    notification,
                },
                _,
            ) => self.events.push_back(Event::NotificationSent {
                to,
                message_id,
                notification,
                status,
                reason: reason.to_owned(),
            }),
            What::Notification(..) | What::Quiet => {}
        }
    }

    // ---------------------------------------------------------------- MSRP reading

    pub(super) fn msrp_respond(&mut self, conn: ConnId, request: &MsrpRequest, code: u16) {
        let status = MsrpStatus::from_code(code).unwrap_or(MsrpStatus::BadRequest);
        // RFC 4975 section 7.2: none for a REPORT or under `Failure-Report: no`.
        let Some(resp) = report::response(request, status) else {
            return;
        };
        let mut out = BytesMut::new();
        if cpm_msrp::encode(&Head::Response(resp), None, Flag::Complete, &mut out).is_ok() {
            self.sessions.commands.push_back(ConnCommand::Send {
                conn,
                bytes: out.freeze(),
            });
        }
    }

    pub(super) fn on_frame(&mut self, now: Instant, conn: ConnId, frame: Frame) {
        match frame {
            Frame::Head(Head::Request(request)) => self.on_msrp_request(now, conn, request),
            Frame::Head(Head::Response(response)) => self.on_msrp_response(now, conn, &response),
            Frame::Data(data) => self.on_msrp_data(now, conn, data),
            Frame::End { flag } => self.on_msrp_end(now, conn, flag),
        }
    }

    pub(super) fn on_msrp_response(&mut self, now: Instant, conn: ConnId, response: &MsrpResponse) {
        self.sessions.reading.insert(conn, Reading::Discard);
        if let Some(session) = self.sessions.by_conn(conn)
            && self.is_auth_response(session, response)
        {
            self.on_auth_response(now, session, response);
            return;
        }
        if let Some(session) = self.sessions.by_conn(conn)
            && let Some(s) = self.sessions.map.get_mut(&session)
        {
            s.tx.handle_response(now, response);
            self.drain_outcomes(now, session);
        }
    }

    pub(super) fn on_msrp_request(&mut self, now: Instant, conn: ConnId, request: MsrpRequest) {
        self.sessions.reading.insert(conn, Reading::Discard);
        // RFC 4975 section 7.3.1: the session is the one the To-Path's last URI names, on
        // the connection bound to it; otherwise 481.
        let session = request
            .headers
            .to_path()
            .last()
            .and_then(|u| self.sessions.by_path(u))
            .filter(|id| {
                self.sessions
                    .map
                    .get(id)
                    .is_some_and(|s| s.conn == Some(conn))
            });
        let Some(session) = session else {
            self.msrp_respond(conn, &request, MsrpStatus::SessionDoesNotExist.code());
            return;
        };
        match request.method {
            MsrpMethod::Send => {}
            // Never answered (RFC 4975 section 7.1.2); no body to read.
            MsrpMethod::Report => {
                self.on_report(now, session, &request);
                return;
            }
            // RFC 4975 section 12: unknown methods get 501.
            _ => {
                self.msrp_respond(conn, &request, MsrpStatus::UnknownMethod.code());
                return;
            }
        }
        let Some(message_id) = request.headers.message_id().map(str::to_owned) else {
            self.msrp_respond(conn, &request, MsrpStatus::BadRequest.code());
            return;
        };
        let is_file = self
            .sessions
            .map
            .get(&session)
            .is_some_and(|s| s.file.is_some());
        if is_file {
            if let Err(code) = self.file_check_send(session, &request, &message_id) {
                self.msrp_respond(conn, &request, code);
                return;
            }
        } else if let Some(ct) = request.headers.content_type() {
            let media = mime::media_type(ct);
            if !ACCEPT_TYPES.iter().any(|a| media.eq_ignore_ascii_case(a)) {
                // RFC 4975 section 7.3.1: a type outside our accept-types is 415.
                self.msrp_respond(conn, &request, MsrpStatus::UnsupportedMediaType.code());
                return;
            }
        }
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        match s
            .reassembler
            .begin(&message_id, request.headers.byte_range())
        {
            Ok(cursor) => {
                self.sessions.reading.insert(
                    conn,
                    Reading::Send {
                        session,
                        request,
                        cursor: Some(cursor),
                    },
                );
            }
            Err(e) => {
                s.bodies.remove(&message_id);
                self.msrp_respond(conn, &request, e.status());
            }
        }
    }

    pub(super) fn on_msrp_data(&mut self, now: Instant, conn: ConnId, data: Bytes) {
        let Some(Reading::Send {
            session,
            request,
            cursor,
        }) = self.sessions.reading.get_mut(&conn)
        else {
            return;
        };
        let Some(c) = cursor.as_mut() else {
            return;
        };
        let Some(s) = self.sessions.map.get_mut(session) else {
            return;
        };
        let message_id = request.headers.message_id().unwrap_or_default().to_owned();
        let at = c.position().saturating_sub(1) as usize;
        let to_file = s.file.is_some() && request.headers.content_type().is_some();
        let sid = *session;
        match s.reassembler.data(c, data.len()) {
            Ok(()) if to_file => {
                let session = sid;
                if let Err((code, reason)) = self.file_data(session, at as u64, data) {
                    if let Some(Reading::Send {
                        request, cursor, ..
                    }) = self.sessions.reading.get_mut(&conn)
                    {
                        *cursor = None;
                        let request = request.clone();
                        self.msrp_respond(conn, &request, code);
                    }
                    self.file_fail(now, session, code, reason);
                }
            }
            Ok(()) => {
                let body = s.bodies.entry(message_id).or_default();
                if body.len() < at + data.len() {
                    body.resize(at + data.len(), 0);
                }
                body[at..at + data.len()].copy_from_slice(&data);
            }
            Err(e) => {
                s.bodies.remove(&message_id);
                *cursor = None;
                let request = request.clone();
                self.msrp_respond(conn, &request, e.status());
                if to_file {
                    self.file_fail(now, sid, e.status(), "File Larger Than Offered");
                }
            }
        }
    }

    pub(super) fn on_msrp_end(&mut self, now: Instant, conn: ConnId, flag: Flag) {
        let reading = self.sessions.reading.insert(conn, Reading::Idle);
        let Some(Reading::Send {
            session,
            request,
            cursor: Some(cursor),
        }) = reading
        else {
            return;
        };
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        let message_id = request.headers.message_id().unwrap_or_default().to_owned();
        if s.file.is_some() && request.headers.content_type().is_some() {
            let progress = s.reassembler.end(cursor, flag);
            self.file_chunk_end(now, conn, session, &request, progress);
            return;
        }
        let total = match s.reassembler.end(cursor, flag) {
            Progress::Incomplete { .. } => {
                self.msrp_respond(conn, &request, 200);
                return;
            }
            Progress::Interrupted { .. } => {
                s.bodies.remove(&message_id);
                self.msrp_respond(conn, &request, 200);
                return;
            }
            Progress::Complete { total } => total,
        };
        let mut body = s.bodies.remove(&message_id).unwrap_or_default();
        body.truncate(total as usize);
        let Some(ct) = request.headers.content_type().map(mime::media_type) else {
            // The empty binding SEND (RFC 4975 section 5.4).
            self.msrp_respond(conn, &request, 200);
            return;
        };
        if ct.eq_ignore_ascii_case(ISCOMPOSING) {
            self.msrp_respond(conn, &request, 200);
            self.composing(session, &body);
            return;
        }
        let body = Bytes::from(body);
        // A composing indication may come wrapped in CPIM too.
        if let Ok(cpim) = Cpim::parse(body.clone())
            && cpim
                .content_type()
                .is_some_and(|t| mime::media_type(t).eq_ignore_ascii_case(ISCOMPOSING))
        {
            self.msrp_respond(conn, &request, 200);
            self.composing(session, &cpim.body);
            return;
        }
        let ctx = {
            let Some(s) = self.sessions.map.get(&session) else {
                return;
            };
            Inbound {
                sip_from: s.peer.clone(),
                sip_to: self.own_uri.clone(),
                fallback_id: message_id,
                conversation_id: Some(s.conversation_id.clone()),
                contribution_id: Some(s.contribution_id.clone()),
                deferred: s.deferred,
                session: Some(session),
            }
        };
        match self.read_cpim(body, ctx) {
            Ok(received) => {
                self.msrp_respond(conn, &request, 200);
                self.take_received(now, received);
            }
            Err((code, _)) => self.msrp_respond(conn, &request, code),
        }
    }

    pub(super) fn composing(&mut self, session: SessionId, xml: &[u8]) {
        let Some(active) = composing_state(xml) else {
            return;
        };
        let Some(from) = self.session_peer(session) else {
            return;
        };
        self.events.push_back(Event::Composing {
            session,
            from,
            active,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composing_documents() {
        assert_eq!(composing_state(composing_xml(true).as_bytes()), Some(true));
        assert_eq!(
            composing_state(composing_xml(false).as_bytes()),
            Some(false)
        );
        assert_eq!(
            composing_state(b"<is:isComposing><is:state> active </is:state></is:isComposing>"),
            Some(true)
        );
        assert_eq!(composing_state(b"<x/>"), None);
    }
}
