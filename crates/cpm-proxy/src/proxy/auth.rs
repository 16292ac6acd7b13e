//! Digest authentication (RFC 3261 22, RFC 7616, RFC 8760): challenges, credential and nonce
//! checks, and the requests parked while the user directory is asked (`Output::LookupUser`,
//! answered with `Input::User`).

use std::time::Instant;

use cpm_sip::{Header, HeaderName, Method, Request, StatusCode, Uri};
use cpm_sip_core::Peer;
use cpm_sip_core::digest::{self, Algorithm, Credentials, NonceCheck};
use cpm_sip_core::transaction::{ServerKey, response_to};

use crate::policy::Sender;

use super::routing::RouteCtx;
use super::{Output, Proxy, QueryId, UserRecord};

/// Why a request waits for the user directory.
#[derive(Debug)]
pub(super) enum Purpose {
    RegisterAuth(Credentials),
    ProxyAuth(Credentials),
    /// No binding: 480 if the user exists, else 404.
    TargetExists,
    /// A CPM request for a local user without a binding, before the terminating PF: the PF
    /// serves (stores, defers) existing users only; unknown ones get 404 here.
    TermUserExists,
}

#[derive(Debug)]
pub(super) struct Parked {
    pub(super) key: ServerKey,
    pub(super) req: Request,
    pub(super) peer: Peer,
    pub(super) purpose: Purpose,
    pub(super) ctx: RouteCtx,
}

impl Proxy {
    pub(super) fn challenge(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Request,
        proxy: bool,
        stale: bool,
    ) {
        self.stats.auth_challenges += 1;
        let realm = self.realm_for(req);
        let salt = self.random();
        let nonce = self.nonce_key.make_nonce(self.unix(now), &realm, salt);
        let (status, name) = if proxy {
            (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                HeaderName::ProxyAuthenticate,
            )
        } else {
            (StatusCode::UNAUTHORIZED, HeaderName::WwwAuthenticate)
        };
        let tag = self.tag();
        let mut resp = response_to(req, status, Some(&tag));
        // RFC 8760 2.4: one challenge per algorithm, in the configured order.
        for alg in self.cfg.digest_algorithms.clone() {
            resp.headers.push(Header::new(
                name.clone(),
                &digest::challenge(&realm, &nonce, alg, stale, None),
            ));
        }
        self.reply(now, key, resp);
    }

    /// The realm for a request: the local domain of the From (proxy auth) or To (REGISTER).
    pub(super) fn realm_for(&self, req: &Request) -> String {
        let addr = if req.method == Method::Register {
            req.headers.to().ok().flatten()
        } else {
            req.headers.from().ok().flatten()
        };
        addr.and_then(|a| match a.uri {
            Uri::Sip(u) => match u.host {
                cpm_sip::Host::Domain(d) if self.cfg.is_local_domain(&d) => {
                    Some(d.to_ascii_lowercase())
                }
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_else(|| self.cfg.default_domain().to_owned())
    }

    /// Picks our credentials out of Authorization / Proxy-Authorization (ignoring other
    /// realms, RFC 3261 22.3) and checks the nonce. `Err(stale)` asks for a new challenge.
    pub(super) fn credentials(
        &self,
        now: Instant,
        req: &Request,
        name: &HeaderName,
    ) -> Result<Credentials, bool> {
        let realm = self.realm_for(req);
        for h in req.headers.get_all(name) {
            let Ok(v) = h.value() else { continue };
            let Ok(c) = Credentials::parse(&v) else {
                continue;
            };
            if !c.realm.eq_ignore_ascii_case(&realm) {
                continue;
            }
            return match self.nonce_key.check_nonce(
                &c.nonce,
                &realm,
                self.unix(now),
                self.cfg.nonce_ttl.as_secs(),
            ) {
                NonceCheck::Valid => Ok(c),
                NonceCheck::Stale => Err(true),
                NonceCheck::Invalid => Err(false),
            };
        }
        Err(false)
    }

    /// Parks a request until the directory says whether the user `aor` exists (asked in
    /// the realm of its domain).
    pub(super) fn park_for_user(&mut self, now: Instant, parked: Parked, aor: String) {
        let realm = aor
            .rsplit_once('@')
            .map_or_else(String::new, |(_, d)| d.to_owned());
        self.park(now, parked, aor, realm);
    }

    pub(super) fn park(&mut self, now: Instant, parked: Parked, username: String, realm: String) {
        if self.parked.len() >= self.cfg.max_pending_lookups {
            // The directory answers slower than requests come: refuse at once (RFC 3261
            // 21.5.4) instead of holding an unbounded queue of waiting requests.
            let tag = self.tag();
            let mut resp = response_to(
                &parked.req,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(tag.as_str()),
            );
            resp.headers.push(Header::new(HeaderName::RetryAfter, "1"));
            return self.reply(now, &parked.key, resp);
        }
        let query = QueryId(self.next_query);
        self.next_query += 1;
        self.parked.insert(query, parked);
        self.outputs.push_back(Output::LookupUser {
            query,
            username,
            realm,
        });
    }

    pub(super) fn authenticate_request(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        peer: Peer,
        ctx: RouteCtx,
    ) {
        let from = req.headers.from().ok().flatten();
        if let Some(Sender::Local(aor)) = from.map(|f| self.cfg.sender(&f.uri))
            && self.user_blocked(now, &key, &req, &peer, &aor)
        {
            return;
        }
        let creds = match self.credentials(now, &req, &HeaderName::ProxyAuthorization) {
            Ok(c) => c,
            Err(stale) => return self.challenge(now, &key, &req, true, stale),
        };
        let (username, realm) = (creds.username.clone(), creds.realm.clone());
        self.park(
            now,
            Parked {
                key,
                req,
                peer,
                purpose: Purpose::ProxyAuth(creds),
                ctx,
            },
            username,
            realm,
        );
    }

    pub(super) fn on_user(&mut self, now: Instant, query: QueryId, user: Option<UserRecord>) {
        let Some(p) = self.parked.remove(&query) else {
            return;
        };
        // The transaction may have ended while we waited (CANCEL, timer).
        if !self.tx.is_proceeding(&p.key) {
            return;
        }
        let Parked {
            key,
            mut req,
            peer,
            purpose,
            mut ctx,
        } = p;
        match purpose {
            Purpose::RegisterAuth(creds) | Purpose::ProxyAuth(creds) => {
                let is_register = req.method == Method::Register;
                let ok = user.as_ref().is_some_and(|u| {
                    let ha1 = match creds.algorithm {
                        Algorithm::Sha256 => &u.ha1_sha256,
                        _ => &u.ha1_md5,
                    };
                    // The digest signs a URI: this request's Request-URI, or (as SIPp and
                    // some UAs do) the address of the server it was sent to. Any other URI is
                    // a credential lifted from another request.
                    let same_uri = match (Uri::parse(&creds.uri), &req.uri) {
                        (Ok(Uri::Sip(a)), Uri::Sip(b)) => {
                            a.equivalent(b) || (a.user.is_none() && self.is_local_target(&a))
                        }
                        (Ok(a), b) => &a == b,
                        (Err(_), _) => false,
                    };
                    same_uri && digest::verify(&creds, req.method.as_str(), ha1)
                });
                // Wrong user and wrong password get the same fresh challenge (no enumeration),
                // and count the same towards a block.
                let Some(u) = user.filter(|_| ok) else {
                    self.auth_failed(now, &peer, &creds);
                    return self.challenge(now, &key, &req, !is_register, false);
                };
                // Right credentials seen before are a replay: a fresh challenge, never a 2xx.
                if !self.fresh_nonce(now, &peer, &creds) {
                    return self.challenge(now, &key, &req, !is_register, true);
                }
                if is_register {
                    return self.on_register(now, key, req, peer, Some(u));
                }
                // The authenticated user must be the From user.
                let from_aor = match req.headers.from().ok().flatten() {
                    Some(f) => match self.cfg.sender(&f.uri) {
                        Sender::Local(aor) => Some(aor),
                        _ => None,
                    },
                    None => None,
                };
                if from_aor
                    .as_deref()
                    .is_none_or(|f| !f.eq_ignore_ascii_case(&u.aor))
                {
                    return self.reply_status(
                        now,
                        &key,
                        &req,
                        StatusCode::FORBIDDEN,
                        "From Is Not You",
                    );
                }
                // Our own credentials are consumed here (RFC 3261 22.3 allows it).
                req.headers.remove_all(&HeaderName::ProxyAuthorization);
                ctx.origin = Some(u.aor);
                self.continue_request(now, key, req, peer, ctx);
            }
            Purpose::TermUserExists => {
                if user.is_none() {
                    return self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Not Found");
                }
                ctx.target_exists = true;
                self.continue_request(now, key, req, peer, ctx);
            }
            Purpose::TargetExists => {
                if req.method == Method::Register {
                    return match user {
                        Some(u) => self.on_register(now, key, req, peer, Some(u)),
                        None => {
                            self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Not Found")
                        }
                    };
                }
                let (status, reason) = if user.is_some() {
                    (
                        StatusCode::TEMPORARILY_UNAVAILABLE,
                        "Temporarily Unavailable",
                    )
                } else {
                    (StatusCode::NOT_FOUND, "Not Found")
                };
                self.reply_status(now, &key, &req, status, reason);
            }
        }
    }
}
