//! Invitations we receive: the offer checked and answered (RFC 3264, RFC 4975 section 8,
//! RFC 5547 for files), 180 then 200 (at once with [`crate::ClientConfig::auto_accept`]),
//! the ACK, re-INVITEs, and the peer's BYE or CANCEL.

use std::time::Instant;

use cpm_sdp::offer_answer::{self, AnswerPolicy};
use cpm_sdp::{Sdp, Setup};
use cpm_sip::{Header, HeaderName, Request, StatusCode};
use cpm_sip_core::Peer;
use cpm_sip_core::dialog::{Dialog, DialogState};
use cpm_sip_core::transaction::{ServerKey, response_to};

use super::{
    ACCEPT_TYPES, ACCEPT_WRAPPED_TYPES, Phase, SessionId, SessionKind, T1, Uas, names_service,
    uri_addr,
};
use crate::client::{Client, Event, ICSI_FILETRANSFER, ICSI_LARGEMSG, USER_AGENT, aor_of};

impl Client {
    /// Accepts an invitation ([`Event::SessionIncoming`], when
    /// [`crate::ClientConfig::auto_accept`] is off): 200 with our SDP answer, then the MSRP
    /// connection. Returns whether there was such an invitation.
    pub fn accept_session(&mut self, now: Instant, session: SessionId) -> bool {
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return false;
        };
        if s.phase != Phase::Offered {
            return false;
        }
        if let Some(r) = s.relay.as_mut()
            && r.use_path.is_empty()
        {
            // RFC 4976 section 5: our answer's path starts with the relay's Use-Path, which
            // its AUTH gives; the 200 follows then.
            let start = !r.accept;
            r.accept = true;
            if start && s.conn.is_none() {
                self.relay_connect(session);
            }
            return true;
        }
        let Some(uas) = s.uas.as_mut() else {
            return false;
        };
        let icsi = s.kind.icsi();
        let (key, invite, tag, reliable) = (
            uas.key.clone(),
            uas.invite.clone(),
            uas.tag.clone(),
            uas.peer.transport.is_reliable(),
        );
        let sdp = s.local_sdp.clone();
        let contact = self.contact_for(&[icsi]);
        let mut resp = self.invite_response(&invite, StatusCode::OK, &tag, &contact);
        resp.headers.set(HeaderName::ContentType, "application/sdp");
        resp.headers
            .set(HeaderName::ContentLength, &sdp.len().to_string());
        resp.body = sdp;
        let bytes = resp.to_bytes();
        if self.tx.respond(now, &key, &resp).is_err() {
            return false;
        }
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return false;
        };
        // RFC 3261 section 12.1.1: the dialog of the UAS.
        s.dialog = Dialog::from_uas(&invite, &tag, DialogState::Confirmed).ok();
        if let Some(uas) = s.uas.as_mut()
            && !reliable
        {
            uas.ok = Some(bytes);
            uas.interval = T1;
            uas.resend_at = Some(now + T1);
            uas.give_up = Some(now + 64 * T1);
        }
        s.phase = Phase::Connecting;
        self.start_media(now, session);
        true
    }

    /// Declines an invitation not answered yet (603, RFC 3261 section 21.6.2); returns
    /// whether there was one.
    pub fn reject_session(&mut self, now: Instant, session: SessionId) -> bool {
        let Some(s) = self.sessions.map.get(&session) else {
            return false;
        };
        let Some(uas) = s.uas.clone().filter(|_| s.phase == Phase::Offered) else {
            return false;
        };
        let resp = response_to(&uas.invite, StatusCode::DECLINE, Some(&uas.tag));
        let _ = self.tx.respond(now, &uas.key, &resp);
        self.finish_session(now, session, 603, "Decline", false);
        true
    }

    /// The ACK for our 2xx: its retransmissions stop (RFC 3261 section 13.3.1.4).
    pub(crate) fn on_ack(&mut self, req: &Request) {
        if let Some(session) = self.sessions.by_dialog(req)
            && let Some(s) = self.sessions.map.get_mut(&session)
        {
            s.uas = None;
        }
    }

    /// An INVITE: a new session offered to us (or a re-INVITE in one of ours).
    pub(crate) fn on_invite(&mut self, now: Instant, key: &ServerKey, peer: Peer, req: &Request) {
        let has_to_tag = req
            .headers
            .to()
            .ok()
            .flatten()
            .is_some_and(|t| t.tag().is_some());
        if has_to_tag {
            self.on_reinvite(now, key, req);
            return;
        }
        let tag = self.rng.hex(12);
        let refuse = |c: &mut Self, status: u16, reason: &str, extra: &[(HeaderName, &str)]| {
            let mut resp = response_to(
                req,
                StatusCode::new(status).unwrap_or(StatusCode::BAD_REQUEST),
                Some(&tag),
            );
            resp.reason = reason.to_owned();
            resp.headers
                .push(Header::new(HeaderName::UserAgent, USER_AGENT));
            for (n, v) in extra {
                resp.headers.push(Header::new(n.clone(), v));
            }
            let _ = c.tx.respond(now, key, &resp);
        };
        let wants_file = names_service(req, ICSI_FILETRANSFER);
        if wants_file && !self.cfg.file_transfer {
            refuse(self, 488, "File Transfer Not Taken", &[]);
            return;
        }
        if !wants_file && !self.cfg.sessions {
            refuse(self, 488, "Sessions Not Taken", &[]);
            return;
        }
        let is_sdp = req
            .headers
            .content_type()
            .ok()
            .flatten()
            .is_some_and(|c| c.is("application", "sdp"));
        if !is_sdp {
            // RFC 3261 section 21.4.13.
            refuse(
                self,
                415,
                "Unsupported Media Type",
                &[(HeaderName::Accept, "application/sdp")],
            );
            return;
        }
        let offer = match Sdp::parse(&req.body) {
            Ok(sdp) => sdp,
            Err(e) => {
                refuse(self, 400, e.reason(), &[]);
                return;
            }
        };
        // RFC 3264 section 6 / RFC 4975 section 8: the offer must carry MSRP media we can
        // take; otherwise 488 (RFC 3261 section 21.4.26).
        let offered = match offer.msrp() {
            Some(Ok((_, m))) => m,
            Some(Err(e)) => {
                refuse(self, 488, e.reason(), &[]);
                return;
            }
            None => {
                refuse(self, 488, "No MSRP Media", &[]);
                return;
            }
        };
        // RFC 5547: an offer with a file-selector is a file transfer, whatever its ICSI.
        let file = if wants_file || offered.file.is_some() {
            match self.file_offer(&offered) {
                Ok(f) => Some(f),
                Err(reason) => {
                    refuse(self, 488, reason, &[]);
                    return;
                }
            }
        } else {
            None
        };
        let kind = if file.is_some() {
            SessionKind::FileTransfer
        } else if names_service(req, ICSI_LARGEMSG) {
            SessionKind::LargeMessage
        } else {
            SessionKind::Chat
        };
        let sip_from = req
            .headers
            .from()
            .ok()
            .flatten()
            .map(|a| a.uri.to_string())
            .unwrap_or_default();
        let session = self.new_session(kind, &sip_from);
        let local_path = match self.sessions.map.get(&session) {
            Some(s) => s.local_path.clone(),
            None => return,
        };
        let mut policy = AnswerPolicy {
            path: vec![local_path],
            accept_types: ACCEPT_TYPES.iter().map(|s| (*s).to_owned()).collect(),
            accept_wrapped_types: ACCEPT_WRAPPED_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            prefer: Setup::Active,
            max_size: None,
        };
        if file.is_some() {
            // Whatever type the file has (the answer repeats the offer's).
            policy.accept_types = vec!["*".to_owned()];
            policy.accept_wrapped_types = Vec::new();
        }
        let answer = match offer_answer::answer(&offered, &policy) {
            Ok(a) => a,
            Err(e) => {
                self.sessions.map.remove(&session);
                refuse(self, e.status, e.reason, &[]);
                return;
            }
        };
        // We never listen (RFC 6135): an offer that wants to connect to us is refused.
        let connect_to = offered.path.first().and_then(uri_addr);
        if !offer_answer::connects(answer.setup, offered.setup, false) || connect_to.is_none() {
            self.sessions.map.remove(&session);
            refuse(self, 488, "Client Cannot Listen", &[]);
            return;
        }
        let sdp = self.sdp_bytes(&answer);
        let h = &req.headers;
        let conversation_id = h.conversation_id().ok().flatten();
        let contribution_id = h.contribution_id().ok().flatten();
        let deferred = names_service(req, cpm_sip::cpm::ICSI_DEFERRED);
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        s.incoming = true;
        s.phase = Phase::Offered;
        s.deferred = deferred;
        if let Some(c) = conversation_id {
            s.conversation_id = c;
        }
        if let Some(c) = contribution_id {
            s.contribution_id = c;
        }
        s.remote_path = offered.path;
        s.local_media = answer;
        s.local_sdp = sdp;
        s.uas = Some(Uas {
            key: key.clone(),
            invite: req.clone(),
            tag: tag.clone(),
            peer,
            ok: None,
            resend_at: None,
            interval: T1,
            give_up: None,
        });
        let icsi = kind.icsi();
        let contact = self.contact_for(&[icsi]);
        let ringing = self.invite_response(req, StatusCode::RINGING, &tag, &contact);
        let _ = self.tx.respond(now, key, &ringing);
        match file {
            Some(file) => self.file_incoming(session, aor_of(&sip_from), file),
            None => self.events.push_back(Event::SessionIncoming {
                session,
                from: aor_of(&sip_from),
                kind,
            }),
        }
        if self.cfg.auto_accept {
            self.accept_session(now, session);
        }
    }

    /// A BYE (RFC 3261 section 15.1.2): 200, and the session is over; 481 for a dialog we do
    /// not have.
    pub(crate) fn on_bye(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        let session = self.sessions.by_dialog(req);
        let status = if session.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CALL_DOES_NOT_EXIST
        };
        let mut resp = response_to(req, status, None);
        resp.headers
            .push(Header::new(HeaderName::UserAgent, USER_AGENT));
        let _ = self.tx.respond(now, key, &resp);
        if let Some(session) = session {
            self.finish_without_bye(now, session, 200, "Ended By Peer", true);
        }
    }

    /// A CANCEL (RFC 3261 section 9.2): 200 to it; an INVITE still unanswered gets 487 and
    /// its session ends quietly (the network gave the session to another device).
    pub(crate) fn on_cancel(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        let invite_key = self.tx.invite_for_cancel(key);
        let session = invite_key.as_ref().and_then(|ik| {
            self.sessions.map.iter().find_map(|(id, s)| {
                s.uas
                    .as_ref()
                    .is_some_and(|u| &u.key == ik && s.phase == Phase::Offered)
                    .then_some(*id)
            })
        });
        let call_id = req.headers.call_id().ok().flatten().map(|c| c.0);
        let known = session.is_some()
            || self.sessions.map.values().any(|s| {
                s.uas.as_ref().is_some_and(|u| {
                    u.invite.headers.call_id().ok().flatten().map(|c| c.0) == call_id
                })
            });
        let status = if known {
            StatusCode::OK
        } else {
            StatusCode::CALL_DOES_NOT_EXIST
        };
        let resp = response_to(req, status, None);
        let _ = self.tx.respond(now, key, &resp);
        if let (Some(session), Some(ik)) = (session, invite_key) {
            if let Some(uas) = self.sessions.map.get(&session).and_then(|s| s.uas.clone()) {
                let resp = response_to(&uas.invite, StatusCode::REQUEST_TERMINATED, Some(&uas.tag));
                let _ = self.tx.respond(now, &ik, &resp);
            }
            self.finish_without_bye(now, session, 487, "Request Terminated", true);
        }
    }

    /// A re-INVITE (RFC 3261 section 14.2): the session stays as it is; the answer repeats
    /// our SDP (a session-timer refresh, RFC 4028, changes nothing here).
    fn on_reinvite(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        let found = self.sessions.by_dialog(req).and_then(|id| {
            let s = self.sessions.map.get_mut(&id)?;
            let ok = s.dialog.as_mut()?.on_remote_request(req);
            Some((
                ok,
                s.local_sdp.clone(),
                s.dialog.as_ref()?.id.local_tag.clone(),
                s.kind,
            ))
        });
        let Some((true, sdp, tag, kind)) = found else {
            let status = if found.is_some() {
                StatusCode::SERVER_INTERNAL_ERROR
            } else {
                StatusCode::CALL_DOES_NOT_EXIST
            };
            let resp = response_to(req, status, None);
            let _ = self.tx.respond(now, key, &resp);
            return;
        };
        let icsi = kind.icsi();
        let contact = self.contact_for(&[icsi]);
        let mut resp = self.invite_response(req, StatusCode::OK, &tag, &contact);
        resp.headers.set(HeaderName::ContentType, "application/sdp");
        resp.headers
            .set(HeaderName::ContentLength, &sdp.len().to_string());
        resp.body = sdp;
        let _ = self.tx.respond(now, key, &resp);
    }
}
