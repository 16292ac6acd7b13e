//! The security rules of the SIP/IP Core (ARCHITECTURE.md, "Security rules of the core"):
//! admission before any transaction state (blocked sources, per-source rates), the dialog
//! token of our Record-Route, the sender rule, the relay rule, and the digest guards
//! (failed-authentication throttle, nonce-count replay table), with the events they report.
//! Who a sender is and which next hops are known lives in `crate::policy`; this module holds
//! what needs the core's state.

use core::net::IpAddr;
use std::time::{Duration, Instant};

use cpm_sip::{Header, HeaderName, Method, Request, SipUri, StatusCode, Uri};
use cpm_sip_core::digest::{Credentials, NonceKey};
use cpm_sip_core::guard::{Admission, NonceUse, account_key};
use cpm_sip_core::transaction::{ServerKey, response_to};
use cpm_sip_core::{Peer, TransportKind};

use super::routing::RouteCtx;
use super::{DIALOG_PARAM, GUARD_SWEEP, Output, Proxy};
use crate::policy::Sender;

/// Something the operator should see in the logs: authentication failures, blocks and
/// refusals (rate-limited by the core), in a form fail2ban can match (the driver logs them
/// with the source address as `source=ADDR`).
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum SecurityEvent {
    /// Credentials for `user` from `source` were wrong (or named no user).
    AuthFailure {
        /// The source address.
        source: IpAddr,
        /// The user the credentials named.
        user: String,
    },
    /// Failures started a block: of `source`, or of `user` for new devices.
    AuthBlocked {
        /// The source address whose failures started it.
        source: IpAddr,
        /// The user blocked, when the user (not the source) is blocked.
        user: Option<String>,
        /// How long.
        seconds: u64,
    },
    /// Requests refused during a block since the last report (at most one report per key
    /// per report interval).
    AuthRefused {
        /// The source address.
        source: IpAddr,
        /// The user, when the user is blocked.
        user: Option<String>,
        /// Refusals since the last report.
        refused: u64,
    },
    /// Captured credentials were used again (a nonce count not above one already used).
    ReplayRefused {
        /// The source address.
        source: IpAddr,
        /// The user the credentials named.
        user: String,
    },
    /// A source went over its rate of out-of-dialog requests; `refused` since the last
    /// report.
    RateLimited {
        /// The source address.
        source: IpAddr,
        /// Requests dropped since the last report.
        refused: u64,
    },
}

/// What the sender rule decided about a request from outside the trust domain.
#[derive(Debug)]
pub(super) enum SenderVerdict {
    /// A local user over one of its registered flows: the originator.
    Origin(String),
    /// A sender the rule accepts as it is (a peer core's user, a dialog of ours).
    Pass,
    /// A local user who must prove it: 407.
    Challenge,
    /// 403 with this reason; `relay` counts it as a relay refusal, else as a sender one.
    Refuse { reason: &'static str, relay: bool },
}

impl Proxy {
    /// Admission, before any transaction state or store work: the trust domain, peer-domain
    /// cores and requests inside a dialog of ours pass; a source blocked after failed
    /// authentications is refused; every other request takes a token from its source's
    /// bucket. A refusal is silence over UDP (a spoofed source gets nothing reflected) and a
    /// stateless 403 or 503 with Retry-After over TCP.
    pub(super) fn admit(&mut self, now: Instant, req: &Request, peer: Peer) -> bool {
        let ip = peer.addr.ip();
        if self.cfg.is_trusted(ip)
            || self.cfg.is_application_server(&peer)
            || self.cfg.is_peer_core(&peer)
            || self.carries_dialog_token(req)
        {
            return true;
        }
        if self.guard_sweep_at.is_none() {
            self.guard_sweep_at = Some(now + GUARD_SWEEP);
        }
        if let Some(b) = self.throttle.check_source(now, ip) {
            if let Some(refused) = b.report {
                self.security(SecurityEvent::AuthRefused {
                    source: ip,
                    user: None,
                    refused,
                });
            }
            let wait = b.until.saturating_duration_since(now);
            self.refuse_stateless(
                req,
                peer,
                StatusCode::FORBIDDEN,
                "Too Many Failed Authentications",
                wait,
            );
            return false;
        }
        match self.limiter.admit(now, ip) {
            Admission::Admit => true,
            Admission::Refuse { report } => {
                if let Some(refused) = report {
                    self.security(SecurityEvent::RateLimited {
                        source: ip,
                        refused,
                    });
                }
                self.refuse_stateless(
                    req,
                    peer,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Rate Limited",
                    Duration::from_secs(1),
                );
                false
            }
        }
    }

    /// Answers a refused request statelessly over a stream (with Retry-After); over UDP it
    /// is dropped. ACK is never answered.
    pub(super) fn refuse_stateless(
        &mut self,
        req: &Request,
        peer: Peer,
        status: StatusCode,
        reason: &str,
        wait: Duration,
    ) {
        if peer.transport == TransportKind::Udp || req.method == Method::Ack {
            return;
        }
        let mut resp = response_to(req, status, Some("cpm-guard"));
        resp.reason = reason.to_owned();
        let secs = wait.as_secs().max(1);
        resp.headers
            .push(Header::new(HeaderName::RetryAfter, &secs.to_string()));
        self.stats.local_failures += 1;
        self.send_stateless(peer, &resp);
    }

    pub(super) fn security(&mut self, event: SecurityEvent) {
        self.outputs.push_back(Output::Security(event));
    }

    /// The dialog token of our Record-Route for a Call-ID.
    pub(super) fn dialog_token(&self, call_id: &str) -> String {
        self.nonce_key.sign("record-route", call_id)
    }

    /// Whether the top Route is ours with a valid dialog token (a cheap look at the raw
    /// field first: most requests carry none).
    pub(super) fn carries_dialog_token(&self, req: &Request) -> bool {
        let Some(first) = req.headers.get(&HeaderName::Route) else {
            return false;
        };
        if !first
            .raw()
            .windows(DIALOG_PARAM.len())
            .any(|w| w.eq_ignore_ascii_case(DIALOG_PARAM.as_bytes()))
        {
            return false;
        }
        let Ok(Some(call_id)) = req.headers.call_id() else {
            return false;
        };
        let Ok(routes) = req.headers.route() else {
            return false;
        };
        routes.first().is_some_and(|r| match &r.uri {
            Uri::Sip(u) => self.is_us(u) && self.has_dialog_token(u, &call_id.0),
            _ => false,
        })
    }

    pub(super) fn has_dialog_token(&self, u: &SipUri, call_id: &str) -> bool {
        u.param(DIALOG_PARAM)
            .and_then(|p| p.value.as_deref())
            .is_some_and(|v| v.eq_ignore_ascii_case(&self.dialog_token(call_id)))
    }

    /// The sender rule (policy.rs) for a request from outside the trust domain: who the From
    /// says sent it, and whether it can be so.
    pub(super) fn sender_verdict(
        &self,
        now: Instant,
        req: &Request,
        peer: &Peer,
        ctx: &RouteCtx,
        initial: bool,
    ) -> SenderVerdict {
        let sender = req
            .headers
            .from()
            .ok()
            .flatten()
            .map_or(Sender::Unverifiable, |f| self.cfg.sender(&f.uri));
        match sender {
            Sender::Local(aor) if self.registrar.is_registered_flow(&aor, peer, now) => {
                SenderVerdict::Origin(aor)
            }
            Sender::Local(_) if initial => SenderVerdict::Challenge,
            // A To tag alone does not put a request in a dialog: only our Record-Route's
            // token does.
            Sender::Local(_) if !ctx.dialog => SenderVerdict::Refuse {
                reason: "No Dialog Through This Proxy",
                relay: true,
            },
            Sender::Foreign(domain) if !ctx.dialog && !self.cfg.is_core_of(&domain, peer) => {
                SenderVerdict::Refuse {
                    reason: "Sender Domain Not Accepted From Here",
                    relay: false,
                }
            }
            Sender::Unverifiable if !ctx.dialog && !self.cfg.is_peer_core(peer) => {
                SenderVerdict::Refuse {
                    reason: "Sender Cannot Be Verified",
                    relay: false,
                }
            }
            _ => SenderVerdict::Pass,
        }
    }

    /// The relay rule (policy.rs): whether the core may send this request to `dest`, a next
    /// hop it did not choose itself (a preloaded Route, a foreign Request-URI).
    pub(super) fn may_send(&self, ctx: &RouteCtx, dest: &Peer) -> bool {
        ctx.trusted || ctx.origin.is_some() || ctx.dialog || self.cfg.is_known_next_hop(dest)
    }

    /// Refuses (403 with Retry-After, on every transport: the request is already in a
    /// transaction) an authentication as `aor` from a source that is not one of its
    /// registered devices while the user is blocked. Returns whether it refused.
    pub(super) fn user_blocked(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Request,
        peer: &Peer,
        aor: &str,
    ) -> bool {
        if self.registrar.is_registered_flow(aor, peer, now) {
            return false;
        }
        let Some(b) = self.throttle.check_user(now, &aor.to_ascii_lowercase()) else {
            return false;
        };
        if let Some(refused) = b.report {
            self.security(SecurityEvent::AuthRefused {
                source: peer.addr.ip(),
                user: Some(aor.to_owned()),
                refused,
            });
        }
        let tag = self.tag();
        let mut resp = response_to(req, StatusCode::FORBIDDEN, Some(&tag));
        resp.reason = "Too Many Failed Authentications".to_owned();
        let secs = b.until.saturating_duration_since(now).as_secs().max(1);
        resp.headers
            .push(Header::new(HeaderName::RetryAfter, &secs.to_string()));
        self.reply(now, key, resp);
        true
    }

    /// Counts a failed authentication against its source and the user it named, and
    /// reports it (and any block it starts).
    pub(super) fn auth_failed(&mut self, now: Instant, peer: &Peer, creds: &Credentials) {
        let source = peer.addr.ip();
        let user = account_key(&creds.username, &creds.realm);
        let blocks = self.throttle.failure(now, source, &user);
        self.security(SecurityEvent::AuthFailure {
            source,
            user: user.clone(),
        });
        if let Some(d) = blocks.source {
            self.security(SecurityEvent::AuthBlocked {
                source,
                user: None,
                seconds: d.as_secs(),
            });
        }
        if let Some(d) = blocks.user {
            self.security(SecurityEvent::AuthBlocked {
                source,
                user: Some(user),
                seconds: d.as_secs(),
            });
        }
        if self.guard_sweep_at.is_none() {
            self.guard_sweep_at = Some(now + GUARD_SWEEP);
        }
    }

    /// Whether verified credentials use their nonce for the first time with this count
    /// (RFC 7616 section 3.4); a replay is counted and reported.
    pub(super) fn fresh_nonce(&mut self, now: Instant, peer: &Peer, creds: &Credentials) -> bool {
        let issued = NonceKey::issued_at(&creds.nonce).unwrap_or(0);
        let ttl = self.cfg.nonce_ttl.as_secs();
        match self.nonces.accept(
            &creds.nonce,
            issued,
            creds.nc.as_deref(),
            self.unix(now),
            ttl,
        ) {
            NonceUse::Fresh => true,
            NonceUse::Forgotten => false,
            NonceUse::Replayed => {
                self.stats.replays_refused += 1;
                self.security(SecurityEvent::ReplayRefused {
                    source: peer.addr.ip(),
                    user: account_key(&creds.username, &creds.realm),
                });
                false
            }
        }
    }
}
