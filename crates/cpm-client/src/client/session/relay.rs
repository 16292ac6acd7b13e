//! Sessions through an MSRP relay (RFC 4976): the connection to the relay is the session's
//! connection; on it AUTH (To-Path the relay's URI, From-Path ours) is answered 401 with a
//! digest challenge, which the user's credentials answer (section 5: the digest of RFC 2617
//! with the method `AUTH` and the relay's URI); the 200 gives the Use-Path that goes before
//! our URI in `a=path` and before the peer's path in every To-Path (section 6).
//!
//! AUTH is not refreshed: a session lasts less than the relay's `Expires` (RFC 4976 section
//! 5.1 lets the client AUTH again when it wants the URI longer).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use cpm_msrp::{
    ConnCommand, ConnId, Flag, Head, Header as MsrpHeader, Headers as MsrpHeaders,
    Method as MsrpMethod, MsrpUri, Request as MsrpRequest, Response as MsrpResponse, TransactId,
};
use cpm_sip::StatusCode;
use cpm_sip_core::digest::{self, Challenge};
use cpm_sip_core::transaction::response_to;

use super::{Phase, Reading, SessionId};
use crate::client::Client;

/// How long an AUTH waits for its response (RFC 4975 section 7.1.1 suggests 30 s).
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// AUTH requests per session: the first, and the one that answers the challenge.
const AUTH_TRIES: u8 = 2;

/// A session's relay: its AUTH in flight, and the Use-Path once it is authenticated.
#[derive(Clone, Debug)]
pub(super) struct Relay {
    /// The relay's URI (the To-Path of AUTH).
    pub(super) uri: MsrpUri,
    /// The AUTH waiting for its response.
    pub(super) auth: Option<TransactId>,
    /// When that AUTH gives up.
    pub(super) deadline: Option<Instant>,
    /// AUTH requests sent.
    tries: u8,
    /// The 200's Use-Path; empty until then.
    pub(super) use_path: Vec<MsrpUri>,
    /// Incoming: the application accepted; the 200 to the INVITE follows the AUTH's 200.
    pub(super) accept: bool,
}

impl Relay {
    pub(super) fn new(uri: MsrpUri) -> Self {
        Self {
            uri,
            auth: None,
            deadline: None,
            tries: 0,
            use_path: Vec::new(),
            accept: false,
        }
    }
}

/// The digest challenge of a 401 to AUTH (its `WWW-Authenticate`, RFC 4976 section 5.1).
fn challenge_of(response: &MsrpResponse) -> Option<Challenge> {
    response.headers.fields().iter().find_map(|h| match h {
        MsrpHeader::WwwAuthenticate(v) => Challenge::parse(v).ok(),
        _ => None,
    })
}

impl Client {
    /// Whether a session goes through a relay that has not authenticated it yet.
    pub(super) fn authenticating(&self, session: SessionId) -> bool {
        self.sessions
            .map
            .get(&session)
            .and_then(|s| s.relay.as_ref())
            .is_some_and(|r| r.use_path.is_empty())
    }

    /// Asks the transport for the connection to the relay.
    pub(super) fn relay_connect(&mut self, session: SessionId) {
        if let Some(r) = &self.cfg.msrp_relay {
            self.sessions.commands.push_back(ConnCommand::Connect {
                token: session.0,
                addr: r.addr,
            });
        }
    }

    /// The connection to the relay is open: the first AUTH.
    pub(super) fn relay_connected(&mut self, now: Instant, session: SessionId, conn: ConnId) {
        let Some(s) = self
            .sessions
            .map
            .get_mut(&session)
            .filter(|s| s.conn.is_none())
        else {
            self.sessions
                .commands
                .push_back(ConnCommand::Close { conn });
            return;
        };
        s.conn = Some(conn);
        self.sessions.reading.insert(conn, Reading::Idle);
        self.send_auth(now, session, None);
    }

    /// Sends AUTH on the relay connection, with `authorization` when answering a challenge.
    fn send_auth(&mut self, now: Instant, session: SessionId, authorization: Option<String>) {
        let Ok(transact_id) = TransactId::new(&self.rng.token(16)) else {
            return;
        };
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        let (Some(conn), Some(r)) = (s.conn, s.relay.as_mut()) else {
            return;
        };
        let Ok(mut headers) = MsrpHeaders::new(vec![r.uri.clone()], vec![s.local_path.clone()])
        else {
            return;
        };
        if let Some(a) = authorization {
            headers.set(MsrpHeader::Authorization(a));
        }
        let request = MsrpRequest {
            transact_id: transact_id.clone(),
            method: MsrpMethod::Auth,
            headers,
        };
        let mut bytes = BytesMut::new();
        if cpm_msrp::encode(&Head::Request(request), None, Flag::Complete, &mut bytes).is_err() {
            return;
        }
        r.auth = Some(transact_id);
        r.deadline = Some(now + AUTH_TIMEOUT);
        r.tries += 1;
        self.sessions.commands.push_back(ConnCommand::Send {
            conn,
            bytes: bytes.freeze(),
        });
    }

    /// Whether `response` answers the session's AUTH.
    pub(super) fn is_auth_response(&self, session: SessionId, response: &MsrpResponse) -> bool {
        self.sessions
            .map
            .get(&session)
            .and_then(|s| s.relay.as_ref())
            .and_then(|r| r.auth.as_ref())
            .is_some_and(|t| *t == response.transact_id)
    }

    /// The response to AUTH: a 401 is answered once with the user's credentials; a 200's
    /// Use-Path lets the session go on (the INVITE, or the 200 to the one we were sent);
    /// anything else ends the session.
    pub(super) fn on_auth_response(
        &mut self,
        now: Instant,
        session: SessionId,
        response: &MsrpResponse,
    ) {
        let Some(s) = self.sessions.map.get_mut(&session) else {
            return;
        };
        let Some(r) = s.relay.as_mut() else {
            return;
        };
        r.auth = None;
        r.deadline = None;
        match response.status {
            200 => {}
            401 if r.tries < AUTH_TRIES => {
                let Some(challenge) = challenge_of(response) else {
                    self.relay_failed(now, session, 401, "MSRP Relay Challenge Unreadable");
                    return;
                };
                // RFC 4976 section 5.1: the digest's method is AUTH, its URI the relay's.
                let uri = r.uri.to_string();
                let cnonce = self.rng.hex(16);
                let value = digest::respond(
                    &challenge,
                    "AUTH",
                    &uri,
                    &self.cfg.aor,
                    &self.cfg.password,
                    &cnonce,
                    1,
                );
                self.send_auth(now, session, Some(value));
                return;
            }
            status => {
                let reason = format!(
                    "MSRP Relay Refused AUTH ({status}{}{})",
                    if response.comment.is_some() { " " } else { "" },
                    response.comment.as_deref().unwrap_or_default()
                );
                self.relay_failed(now, session, status, &reason);
                return;
            }
        }
        let use_path = response
            .headers
            .use_path()
            .map(<[MsrpUri]>::to_vec)
            .unwrap_or_default();
        if use_path.is_empty() {
            self.relay_failed(now, session, 502, "MSRP Relay Gave No Use-Path");
            return;
        }
        // RFC 4976 section 6: our path is the relay's Use-Path, then our own URI.
        let mut path = use_path.clone();
        path.push(s.local_path.clone());
        s.local_media.path = path;
        r.use_path = use_path;
        match s.phase {
            Phase::Authenticating => {
                s.phase = Phase::Inviting;
                if self.invite(now, session).is_err() {
                    self.finish_session(now, session, 400, "Bad Recipient", false);
                }
            }
            Phase::Offered => {
                let accept = r.accept;
                let media = s.local_media.clone();
                let sdp = self.sdp_bytes(&media);
                if let Some(s) = self.sessions.map.get_mut(&session) {
                    s.local_sdp = sdp;
                }
                if accept {
                    self.accept_session(now, session);
                }
            }
            Phase::Inviting | Phase::Connecting | Phase::Up => {}
        }
    }

    /// The relay could not be reached or refused us: an invitation not answered yet gets
    /// 503, and the session ends with `status`.
    pub(super) fn relay_failed(
        &mut self,
        now: Instant,
        session: SessionId,
        status: u16,
        reason: &str,
    ) {
        let Some(s) = self.sessions.map.get(&session) else {
            return;
        };
        if s.phase == Phase::Offered
            && let Some(uas) = s.uas.clone()
        {
            let mut resp =
                response_to(&uas.invite, StatusCode::SERVICE_UNAVAILABLE, Some(&uas.tag));
            resp.reason = "MSRP Relay Unavailable".to_owned();
            let _ = self.tx.respond(now, &uas.key, &resp);
        }
        self.finish_session(now, session, status, reason, true);
    }
}
