//! The registrar flow (RFC 3261 section 10; RFC 3327 Path, RFC 3608 Service-Route, RFC 5626):
//! REGISTER handling, persisted and restored bindings, and the third-party REGISTER to the
//! Participating Function (3GPP TS 24.229 5.4.1.7).

use std::time::Instant;

use bytes::Bytes;
use cpm_sip::{Header, HeaderName, Message, Param, Request, Response, StatusCode, Uri};
use cpm_sip_core::Peer;
use cpm_sip_core::transaction::{ServerKey, response_to};

use crate::registrar::Binding;

use super::auth::{Parked, Purpose};
use super::routing::RouteCtx;
use super::{BRANCH_PREFIX, Output, Proxy, UserRecord, http_date};

impl Proxy {
    pub(super) fn on_register(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        peer: Peer,
        user: Option<UserRecord>,
    ) {
        // RFC 3261 10.3 step 2: Require.
        let unsupported: Vec<String> = req
            .headers
            .require()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| {
                !["path", "outbound", "gruu"]
                    .iter()
                    .any(|s| t.eq_ignore_ascii_case(s))
            })
            .collect();
        if !unsupported.is_empty() {
            return self.bad_extension(now, &key, &req, &unsupported);
        }
        // Step 5: To must be a SIP/SIPS address-of-record of ours.
        let Some(to_aor) = req.headers.to().ok().flatten().and_then(|t| match &t.uri {
            Uri::Sip(u) => self.local_aor(u),
            _ => None,
        }) else {
            return self.reply_status(
                now,
                &key,
                &req,
                StatusCode::BAD_REQUEST,
                "To Must Be A Local SIP AOR",
            );
        };
        let trusted = self.cfg.is_trusted(peer.addr.ip());
        let authed_aor = if trusted {
            match user {
                Some(u) => u.aor,
                None => {
                    let realm = self.realm_for(&req);
                    return self.park(
                        now,
                        Parked {
                            key,
                            req,
                            peer,
                            purpose: Purpose::TargetExists,
                            ctx: RouteCtx {
                                trusted,
                                ..RouteCtx::default()
                            },
                        },
                        to_aor,
                        realm,
                    );
                }
            }
        } else {
            // A user whose password is being guessed is closed to new devices for a while;
            // its registered ones keep refreshing.
            if user.is_none() && self.user_blocked(now, &key, &req, &peer, &to_aor) {
                return;
            }
            // Step 3: authenticate (RFC 3261 22.4; RFC 8760).
            let creds = match self.credentials(now, &req, &HeaderName::Authorization) {
                Ok(c) => c,
                Err(stale) => return self.challenge(now, &key, &req, false, stale),
            };
            match user {
                None => {
                    let (username, realm) = (creds.username.clone(), creds.realm.clone());
                    return self.park(
                        now,
                        Parked {
                            key,
                            req,
                            peer,
                            purpose: Purpose::RegisterAuth(creds),
                            ctx: RouteCtx::default(),
                        },
                        username,
                        realm,
                    );
                }
                Some(u) => u.aor,
            }
        };
        // Step 4: the authenticated user may only register its own address.
        if !authed_aor.eq_ignore_ascii_case(&to_aor) {
            return self.reply_status(now, &key, &req, StatusCode::FORBIDDEN, "Not Your Address");
        }
        let before: Vec<String> = self
            .registrar
            .lookup(&to_aor, now)
            .filter(|b| b.is_durable())
            .map(Binding::key)
            .collect();
        match self
            .registrar
            .apply(now, &to_aor, &req, peer, &self.cfg.registrar)
        {
            Ok(bindings) => {
                self.persist_bindings(now, &to_aor, &before, &bindings);
                self.stats.registrations_accepted += 1;
                let resp = self.register_ok(now, &req, &bindings);
                self.reply(now, &key, resp);
                let expires = bindings.iter().map(|b| b.remaining(now)).max();
                if let Some(expires) = expires.filter(|e| *e > 0) {
                    self.third_party_register(now, &to_aor, expires);
                }
            }
            Err(e) => {
                let tag = self.tag();
                let mut resp = response_to(&req, e.status, Some(&tag));
                resp.reason = e.reason.to_owned();
                if let Some(m) = e.min_expires {
                    resp.headers
                        .push(Header::new(HeaderName::MinExpires, &m.to_string()));
                }
                self.reply(now, &key, resp);
            }
        }
    }

    /// Emits the store operations that make the store's bindings of `aor` equal to
    /// `bindings` (the durable ones), given the keys it held before.
    fn persist_bindings(
        &mut self,
        now: Instant,
        aor: &str,
        before: &[String],
        bindings: &[Binding],
    ) {
        let unix_ms = self.unix_ms(now);
        let durable: Vec<&Binding> = bindings.iter().filter(|b| b.is_durable()).collect();
        for key in before {
            if !durable.iter().any(|b| b.key() == *key) {
                self.outputs.push_back(Output::Persist(Box::new(
                    cpm_store::StoreOp::RemoveBinding {
                        aor: aor.to_owned(),
                        key: key.clone(),
                    },
                )));
            }
        }
        for b in durable {
            self.outputs
                .push_back(Output::Persist(Box::new(cpm_store::StoreOp::SaveBinding(
                    b.to_record(aor, now, unix_ms),
                ))));
        }
    }

    /// Puts back the bindings a previous run stored (`LoadBindings`), and tells the
    /// Participating Function about each user that has one again, so that deferred messages
    /// go out without waiting for the devices to refresh. `unix_ms` is the wall clock at
    /// `now`. Records that do not parse or have lapsed are skipped; returns how many came back.
    pub fn restore_bindings(
        &mut self,
        now: Instant,
        unix_ms: u64,
        records: &[cpm_store::BindingRecord],
    ) -> usize {
        let mut restored = 0;
        let mut users: Vec<(String, u64)> = Vec::new();
        for r in records {
            if let Some(b) = Binding::from_record(r, now, unix_ms) {
                let left = b.remaining(now);
                self.registrar.restore(&r.aor, b);
                restored += 1;
                match users.iter_mut().find(|(a, _)| *a == r.aor) {
                    Some((_, l)) => *l = (*l).max(left),
                    None => users.push((r.aor.clone(), left)),
                }
            }
        }
        for (aor, left) in users {
            self.third_party_register(now, &aor, left);
        }
        self.drain_tx(now);
        restored
    }

    /// Tells the Participating Function that a user registered (3GPP TS 24.229 5.4.1.7,
    /// third-party REGISTER from the S-CSCF to the AS): the PF then delivers the user's deferred
    /// messages. Sent on every successful registration or refresh that leaves the user with a
    /// binding, to the application server of pager mode (the one holding deferred messages);
    /// its answer only ends the client transaction.
    fn third_party_register(&mut self, now: Instant, aor: &str, expires: u64) {
        let Some(dest) = self.cfg.application_server_for(&cpm_sip::Method::Message) else {
            return;
        };
        let pf = dest.addr;
        let branch = format!(
            "{BRANCH_PREFIX}3p-{:016x}{}",
            self.random(),
            self.branch_tag
        );
        let tag = self.tag();
        let call_id = format!("{:016x}-3p@{}", self.random(), self.cfg.advertised);
        let me = self.cfg.advertised;
        let transport = dest.transport.as_via_token();
        let text = format!(
            "REGISTER sip:{pf} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {me};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{me}>;tag={tag}\r\n\
             To: <sip:{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:{me}>\r\n\
             Expires: {expires}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let Ok(Message::Request(req)) =
            Message::parse_datagram(Bytes::from(text), &cpm_sip::Limits::default())
        else {
            // Only an AOR that does not fit a SIP URI gets here; the PF then learns of the
            // user at its next registration.
            return;
        };
        if self.tx.send_request(now, req, dest).is_ok() {
            self.stats.third_party_registers += 1;
        }
    }

    /// Step 8: 200 with every current binding, Date, and Path/Service-Route (RFC 3327, 3608).
    fn register_ok(&mut self, now: Instant, req: &Request, bindings: &[Binding]) -> Response {
        let tag = self.tag();
        let mut resp = response_to(req, StatusCode::OK, Some(&tag));
        for b in bindings {
            let mut c = b.contact.clone();
            c.params
                .push(Param::new("expires", Some(b.remaining(now).to_string())));
            resp.headers
                .push(Header::new(HeaderName::Contact, &c.to_string()));
        }
        for p in req.headers.get_all(&HeaderName::Path) {
            resp.headers.push(p.clone());
        }
        let route = self.our_uri("");
        resp.headers
            .push(Header::new(HeaderName::ServiceRoute, &route));
        resp.headers
            .push(Header::new(HeaderName::Date, &http_date(self.unix(now))));
        resp
    }
}
