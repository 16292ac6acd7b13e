//! Route processing and target determination: validation (RFC 3261 16.3), our Routes popped
//! and strict routers fixed up (16.4), loop detection and the branch hash (16.3 step 4, 16.6
//! step 8), the CPM routing through the Participating Function (outline 5.2.3.2, RFC 6050),
//! and the targets of a request (16.5; RFC 3841 callee capabilities).

use core::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use cpm_sip::cpm::{PF_CONTACT_PARAM, Phase};
use cpm_sip::{
    Header, HeaderName, Method, NameAddr, Request, SipUri, StatusCode, Uri, feature_list,
};
use cpm_sip_core::transaction::{ServerKey, response_to};
use cpm_sip_core::{Function, Peer, TransportKind};

use crate::config::fnv;
use crate::policy::normalize_domain;
use crate::registrar::Binding;

use super::auth::{Parked, Purpose};
use super::forward::Target;
use super::security::SenderVerdict;
use super::{BRANCH_PREFIX, Proxy, replace_first};

/// The CPM ICSI prefix (PROTOCOL.md row 5): every CPM service identifier starts with it.
pub use cpm_sip::cpm::ICSI_PREFIX as CPM_ICSI_PREFIX;

/// What route processing learned about a request.
#[derive(Clone, Debug, Default)]
pub(super) struct RouteCtx {
    /// The `cpm` parameter of our own Route that was popped: that side's application
    /// server has served the request.
    pub(super) phase: Option<Phase>,
    /// The request's originator was authenticated as this local address-of-record.
    pub(super) origin: Option<String>,
    /// The request came from a trusted peer.
    pub(super) trusted: bool,
    /// A Route naming us was removed: the request follows a route we are on (Record-Route).
    pub(super) routed_via_us: bool,
    /// One of the removed Routes carried our dialog token for this Call-ID: the request is
    /// inside a dialog this core Record-Routed.
    pub(super) dialog: bool,
    /// No To tag: an initial request, outside any dialog.
    pub(super) initial: bool,
    /// The RFC 3261 16.6 step 8 hash, computed once after route processing.
    pub(super) hash: u64,
    /// The terminating user was found in the user directory.
    pub(super) target_exists: bool,
    /// The transport the request arrived on: what our Record-Route names when the next hop
    /// is a function of the node (the dialog's other requests come the same way).
    pub(super) ingress: Option<TransportKind>,
}

/// The service identifiers a request carries: P-Preferred-Service, P-Asserted-Service,
/// Accept-Contact `+g.3gpp.icsi-ref` and Contact `+g.3gpp.icsi-ref` values (TS 24.229 7.2A.8).
pub fn service_ids(req: &Request) -> Vec<String> {
    let h = &req.headers;
    let mut out: Vec<String> = Vec::new();
    out.extend(h.p_preferred_service().unwrap_or_default());
    out.extend(h.p_asserted_service().unwrap_or_default());
    for ac in h.accept_contact().unwrap_or_default() {
        out.extend(ac.feature_values("+g.3gpp.icsi-ref"));
    }
    if let Ok(Some(cpm_sip::Contact::Addresses(list))) = h.contact() {
        for a in list {
            if let Some(v) = a.param("+g.3gpp.icsi-ref").and_then(|p| p.unquoted_value()) {
                out.extend(feature_list(&v));
            }
        }
    }
    out
}

/// The service identifiers a request requires of the target's devices: `+g.3gpp.icsi-ref`
/// values of Accept-Contact entries marked `require` (RFC 3841 section 9.2), each with its
/// `explicit` flag.
fn required_services(req: &Request) -> Vec<(Vec<String>, bool)> {
    // Most requests require nothing: look at the raw values before parsing any.
    let any_require = req.headers.get_all(&HeaderName::AcceptContact).any(|h| {
        h.raw()
            .windows(7)
            .any(|w| w.eq_ignore_ascii_case(b"require"))
    });
    if !any_require {
        return Vec::new();
    }
    req.headers
        .accept_contact()
        .unwrap_or_default()
        .into_iter()
        .filter(|ac| {
            ac.params
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case("require"))
        })
        .map(|ac| {
            let explicit = ac
                .params
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case("explicit"));
            (ac.feature_values("+g.3gpp.icsi-ref"), explicit)
        })
        .filter(|(v, _)| !v.is_empty())
        .collect()
}

/// RFC 3841 section 7.2 for the ICSI feature tag: a device that registered ICSIs matches a
/// required entry when it registered all of its values; a device that registered none
/// matches implicitly unless the entry is `explicit`.
fn accepts(b: &Binding, required: &[(Vec<String>, bool)]) -> bool {
    if required.is_empty() {
        return true;
    }
    let registered: Vec<String> = b
        .contact
        .param("+g.3gpp.icsi-ref")
        .and_then(|p| p.unquoted_value())
        .map(|v| feature_list(&v))
        .unwrap_or_default();
    required.iter().all(|(values, explicit)| {
        if registered.is_empty() {
            return !explicit;
        }
        values
            .iter()
            .all(|v| registered.iter().any(|r| r.eq_ignore_ascii_case(v)))
    })
}

/// Whether a request is a CPM request (carries a CPM ICSI).
pub fn is_cpm(req: &Request) -> bool {
    service_ids(req).iter().any(|s| {
        s.len() >= CPM_ICSI_PREFIX.len()
            && s[..CPM_ICSI_PREFIX.len()].eq_ignore_ascii_case(CPM_ICSI_PREFIX)
    })
}

/// Never send to these: RFC 4475 section 3.3.10 (a broadcast Via must not be answered).
fn is_sendable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    !(ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
        || addr.port() == 0)
}

impl Proxy {
    pub(super) fn is_us(&self, uri: &SipUri) -> bool {
        let port = uri.port.unwrap_or(if uri.secure { 5061 } else { 5060 });
        if port != self.cfg.advertised.port() {
            return false;
        }
        match &uri.host {
            cpm_sip::Host::Ipv4(a) => IpAddr::V4(*a) == self.cfg.advertised.ip(),
            cpm_sip::Host::Ipv6(a) => a.parse::<IpAddr>().ok() == Some(self.cfg.advertised.ip()),
            cpm_sip::Host::Domain(d) => {
                self.cfg.is_local_domain(d)
                    || (d.eq_ignore_ascii_case("localhost")
                        && self.cfg.advertised.ip().is_loopback())
            }
        }
    }

    /// Removes the Route values that name us from the top of the route set (RFC 3261 16.4),
    /// leaving the other fields in place. Returns how many were removed, the `cpm` phase
    /// parameter of the last one, and whether one carried our dialog token for this
    /// Call-ID; `Err` for a Route that does not parse.
    pub(super) fn pop_own_routes(
        &self,
        req: &mut Request,
    ) -> Result<(usize, Option<Phase>, bool), ()> {
        let mut popped = 0;
        let mut phase = None;
        let mut dialog = false;
        let call_id = req
            .headers
            .call_id()
            .ok()
            .flatten()
            .map(|c| c.0)
            .unwrap_or_default();
        loop {
            let Some(first) = req.headers.get(&HeaderName::Route).cloned() else {
                break;
            };
            let value = first.value().map_err(|_| ())?;
            let list = NameAddr::parse_list(&value, false).ok_or(())?;
            let Some(Uri::Sip(u)) = list.first().map(|r| &r.uri) else {
                break;
            };
            if !self.is_us(u) {
                break;
            }
            if let Some(p) = Phase::of_uri(u) {
                phase = Some(p);
            }
            dialog |= self.has_dialog_token(u, &call_id);
            popped += 1;
            let rest: Vec<String> = list.iter().skip(1).map(ToString::to_string).collect();
            let replacement =
                (!rest.is_empty()).then(|| Header::new(HeaderName::Route, &rest.join(", ")));
            replace_first(&mut req.headers, &HeaderName::Route, replacement);
        }
        Ok((popped, phase, dialog))
    }

    /// Whether the URI names one of our domains (a user there is ours to locate).
    pub(super) fn is_local_target(&self, uri: &SipUri) -> bool {
        match &uri.host {
            cpm_sip::Host::Domain(d) if self.cfg.is_local_domain(d) => true,
            _ => self.is_us(uri),
        }
    }

    pub(super) fn local_aor(&self, uri: &SipUri) -> Option<String> {
        let user = uri.user.as_deref()?;
        let domain = match &uri.host {
            cpm_sip::Host::Domain(d) if self.cfg.is_local_domain(d) => normalize_domain(d),
            _ if self.is_us(uri) => self.cfg.default_domain().to_owned(),
            _ => return None,
        };
        let user = String::from_utf8_lossy(&cpm_sip::unescape(user)).into_owned();
        Some(format!("{user}@{domain}"))
    }

    /// The shard whose core serves the target of `req` (its Request-URI), when it is one of
    /// our users on another shard than this core's: a function of the node hands such a
    /// request straight to that shard's core (the node's rule), sparing this core a pass.
    pub fn target_shard(&self, req: &Request) -> Option<u16> {
        match &req.uri {
            Uri::Sip(u) if self.cfg.shards.count > 1 => self.other_shard(&self.local_aor(u)?),
            _ => None,
        }
    }

    /// The shard of a local address-of-record, when it is not this core's.
    fn other_shard(&self, aor: &str) -> Option<u16> {
        let shards = self.cfg.shards;
        let shard = shards.of_aor(aor);
        (shards.count > 1 && shard != shards.index).then_some(shard)
    }

    pub(super) fn our_uri(&self, params: &str) -> String {
        format!("<sip:{};lr{params}>", self.cfg.advertised)
    }

    /// RFC 3261 16.3 (validation) and 16.4 (route information), then identity, then targets.
    pub(super) fn route_request(
        &mut self,
        now: Instant,
        key: ServerKey,
        mut req: Request,
        peer: Peer,
    ) {
        let initial = req
            .headers
            .to()
            .ok()
            .flatten()
            .is_some_and(|t| t.tag().is_none());
        // 16.4: strict router upstream (Request-URI is a URI we put in Record-Route).
        if let Uri::Sip(u) = &req.uri
            && u.user.is_none()
            && self.is_us(u)
            && self.pf_dialog(u).is_none()
            && req.headers.contains(&HeaderName::Route)
            && let Ok(routes) = req.headers.route()
            && let Some(last) = routes.last()
        {
            req.uri = last.uri.clone();
            let mut all: Vec<String> = routes.iter().map(ToString::to_string).collect();
            all.pop();
            req.headers.remove_all(&HeaderName::Route);
            for r in all {
                req.headers.push(Header::new(HeaderName::Route, &r));
            }
        }
        let mut ctx = RouteCtx {
            // An application server (the Participating Function) is ours: inside the trust
            // domain.
            trusted: self.cfg.is_trusted(peer.addr.ip()) || self.cfg.is_application_server(&peer),
            ingress: Some(peer.transport),
            ..RouteCtx::default()
        };
        // Loose routing: pop every Route that names us.
        match self.pop_own_routes(&mut req) {
            Ok((popped, phase, dialog)) => {
                ctx.routed_via_us = popped > 0;
                ctx.phase = phase;
                ctx.dialog = dialog && !initial;
            }
            Err(()) => {
                return self.reply_status(now, &key, &req, StatusCode::BAD_REQUEST, "Bad Route");
            }
        }
        let routed = req.headers.contains(&HeaderName::Route);

        // 16.3 step 3 and 6: Max-Forwards, Proxy-Require.
        let to_registrar = req.method == Method::Register
            && !routed
            && matches!(&req.uri, Uri::Sip(u) if self.is_local_target(u));
        if !to_registrar && req.headers.max_forwards().ok().flatten() == Some(0) {
            return self.reply_status(now, &key, &req, StatusCode::TOO_MANY_HOPS, "Too Many Hops");
        }
        let proxy_require = req.headers.proxy_require().unwrap_or_default();
        if !proxy_require.is_empty() {
            return self.bad_extension(now, &key, &req, &proxy_require);
        }
        ctx.initial = initial;
        ctx.hash = self.request_hash(&req, &ctx);
        // 16.3 step 4: loop detection. Not for a request another shard's core handed over:
        // it carries that core's Via with the hash we would compute (the same request at
        // the same step), and it cannot cross again (it is on its target's shard now).
        if peer.function() != Some(Function::Core) && self.is_loop(&req, &ctx) {
            return self.reply_status(now, &key, &req, StatusCode::LOOP_DETECTED, "Loop Detected");
        }
        // 16.3 step 2: URI scheme.
        match &req.uri {
            Uri::Sip(_) => {}
            Uri::Tel(_) => {
                return self.reply_status(
                    now,
                    &key,
                    &req,
                    StatusCode::NOT_FOUND,
                    "No Route For tel URI",
                );
            }
            _ => {
                return self.reply_status(
                    now,
                    &key,
                    &req,
                    StatusCode::UNSUPPORTED_URI_SCHEME,
                    "Unsupported URI Scheme",
                );
            }
        }
        if to_registrar {
            return self.on_register(now, key, req, peer, None);
        }
        if let Uri::Sip(u) = &req.uri
            && u.user.is_none()
            && self.is_us(u)
            && !routed
            && self.pf_dialog(u).is_none()
        {
            return self.answer_for_self(now, &key, &req);
        }
        if !ctx.trusted {
            // RFC 3325: only the trust domain asserts identities.
            req.headers.remove_all(&HeaderName::PAssertedIdentity);
        }
        // A trusted peer (a P-CSCF or SBC in front) asserts who sends: the originating
        // services run for that user as for one of our own clients (TS 24.229 5.4.3.2). Not
        // for the PF itself, whose requests are already served.
        if initial
            && ctx.trusted
            && !self.cfg.is_application_server(&peer)
            && let Some(aor) = req.headers.p_asserted_identity().ok().and_then(|ids| {
                ids.into_iter()
                    .find_map(|a| a.uri.as_sip().and_then(|u| self.local_aor(u)))
            })
        {
            ctx.origin = Some(aor);
        }
        if !ctx.trusted {
            match self.sender_verdict(now, &req, &peer, &ctx, initial) {
                SenderVerdict::Origin(aor) => ctx.origin = Some(aor),
                SenderVerdict::Pass => {}
                SenderVerdict::Challenge => {
                    return self.authenticate_request(now, key, req, peer, ctx);
                }
                SenderVerdict::Refuse { reason, relay } => {
                    if relay {
                        self.stats.relay_refused += 1;
                    } else {
                        self.stats.sender_refused += 1;
                    }
                    return self.reply_status(now, &key, &req, StatusCode::FORBIDDEN, reason);
                }
            }
        }
        self.continue_request(now, key, req, peer, ctx);
    }

    /// RFC 3261 16.3 step 4: a request that carries a Via of ours whose branch hash equals the
    /// one we would compute now has looped; a different hash is a spiral.
    fn is_loop(&self, req: &Request, ctx: &RouteCtx) -> bool {
        // Most requests carry no Via of ours at all: look at the raw bytes before parsing.
        let ours = |raw: &[u8]| {
            raw.windows(BRANCH_PREFIX.len())
                .any(|w| w == BRANCH_PREFIX.as_bytes())
        };
        if !req.headers.get_all(&HeaderName::Via).any(|h| ours(h.raw())) {
            return false;
        }
        let Ok(vias) = req.headers.via() else {
            return false;
        };
        let hash = format!("{:016x}", ctx.hash);
        vias.iter().any(|v| {
            v.branch()
                .and_then(|b| b.strip_prefix(BRANCH_PREFIX))
                .is_some_and(|rest| rest.starts_with(&hash))
                && v.port.unwrap_or(5060) == self.cfg.advertised.port()
        })
    }

    /// The branch hash of RFC 3261 16.6 step 8: Request-URI, To tag, From tag, Call-ID, CSeq
    /// number, the Route set, and the CPM routing phase.
    pub(super) fn request_hash(&self, req: &Request, ctx: &RouteCtx) -> u64 {
        let h = &req.headers;
        let to_tag = h
            .to()
            .ok()
            .flatten()
            .and_then(|t| t.tag().map(str::to_owned))
            .unwrap_or_default();
        let from_tag = h
            .from()
            .ok()
            .flatten()
            .and_then(|t| t.tag().map(str::to_owned))
            .unwrap_or_default();
        let call_id = h.call_id().ok().flatten().map(|c| c.0).unwrap_or_default();
        let cseq = h.cseq().ok().flatten().map(|c| c.seq).unwrap_or_default();
        let routes: Vec<Bytes> = h
            .get_all(&HeaderName::Route)
            .map(|r| r.raw().clone())
            .collect();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(8 + routes.len());
        let ruri = req.uri.to_string();
        let cseq = cseq.to_string();
        parts.extend([
            ruri.as_bytes(),
            to_tag.as_bytes(),
            from_tag.as_bytes(),
            call_id.as_bytes(),
            cseq.as_bytes(),
            ctx.phase.map_or("", Phase::as_str).as_bytes(),
        ]);
        parts.extend(routes.iter().map(|r| &r[..]));
        fnv(&parts)
    }

    fn answer_for_self(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        if req.method == Method::Options {
            let tag = self.tag();
            let mut resp = response_to(req, StatusCode::OK, Some(&tag));
            resp.headers.push(Header::new(
                HeaderName::Allow,
                "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE, PRACK",
            ));
            resp.headers.push(Header::new(
                HeaderName::Accept,
                "application/sdp, message/cpim",
            ));
            return self.reply(now, key, resp);
        }
        let tag = self.tag();
        let mut resp = response_to(req, StatusCode::METHOD_NOT_ALLOWED, Some(&tag));
        resp.headers
            .push(Header::new(HeaderName::Allow, "OPTIONS, REGISTER"));
        self.reply(now, key, resp);
    }

    /// After identity: CPM routing, then target determination and forwarding.
    pub(super) fn continue_request(
        &mut self,
        now: Instant,
        key: ServerKey,
        mut req: Request,
        peer: Peer,
        ctx: RouteCtx,
    ) {
        if let Some(aor) = &ctx.origin
            && !req.headers.contains(&HeaderName::PAssertedIdentity)
        {
            req.headers.push(Header::new(
                HeaderName::PAssertedIdentity,
                &format!("<sip:{aor}>"),
            ));
            req.headers.remove_all(&HeaderName::PPreferredIdentity);
        }
        let initial = ctx.initial;
        let routed = req.headers.contains(&HeaderName::Route);
        let local_target = match &req.uri {
            Uri::Sip(u) => self.local_aor(u),
            _ => None,
        };
        // CPM enabler usage indication routing (outline 5.2.3.2).
        // The application-server table says which function serves the request's service.
        let server = self.cfg.application_server_for(&req.method).filter(|_| {
            initial
                && !routed
                // A new request an application server originates (no phase of ours) is
                // already served.
                && (!self.cfg.is_application_server(&peer) || ctx.phase.is_some())
                && is_cpm(&req)
        });
        // RFC 6050: the network asserts the service the user asked for.
        if server.is_some() && ctx.origin.is_some() {
            let preferred = req.headers.p_preferred_service().unwrap_or_default();
            if !preferred.is_empty() {
                req.headers.remove_all(&HeaderName::PPreferredService);
                req.headers
                    .set(HeaderName::PAssertedService, &preferred.join(","));
            }
        }
        // On a sharded node, what remains to do for a local target (its terminating phase,
        // its bindings) is done by the core of the target's shard, once the originating
        // phase (the sender's, here) is over.
        let orig_pending = server.is_some() && ctx.origin.is_some() && ctx.phase.is_none();
        if !orig_pending
            && !routed
            && let Some(aor) = &local_target
            && let Some(shard) = self.other_shard(aor)
        {
            let routes = ctx
                .phase
                .map(|p| vec![self.our_uri(&format!(";{}={}", Phase::PARAM, p.as_str()))])
                .unwrap_or_default();
            let target = Target {
                ruri: req.uri.clone(),
                dest: Peer::local_on(Function::Core, self.cfg.advertised, shard),
                routes,
            };
            return self.forward(now, key, req, vec![target], &ctx);
        }
        if let Some(server) = server {
            let phase = if ctx.origin.is_some() && ctx.phase.is_none() {
                Some(Phase::Orig)
            } else if local_target.is_some() && ctx.phase != Some(Phase::Term) {
                Some(Phase::Term)
            } else {
                None
            };
            if let Some(phase) = phase {
                // Only an existing user has a PF to serve it; a user with a binding exists.
                if phase == Phase::Term
                    && !ctx.target_exists
                    && let Some(aor) = &local_target
                    && self.registrar.lookup(aor, now).next().is_none()
                {
                    let aor = aor.clone();
                    return self.park_for_user(
                        now,
                        Parked {
                            key,
                            req,
                            peer,
                            purpose: Purpose::TermUserExists,
                            ctx,
                        },
                        aor,
                    );
                }
                // Our own Route, with the phase, brings the request back to us once served;
                // a server on the network gets a Route of its own on top (a function of the
                // node is handed the request directly).
                let back = self.our_uri(&format!(";{}={}", Phase::PARAM, phase.as_str()));
                let routes = match server.function() {
                    Some(_) => vec![back],
                    None => vec![format!("<sip:{};lr>", server.addr), back],
                };
                let target = Target {
                    ruri: req.uri.clone(),
                    dest: server,
                    routes,
                };
                return self.forward(now, key, req, vec![target], &ctx);
            }
        }
        // Target determination (RFC 3261 16.5).
        if routed {
            let next = req.headers.route().ok().and_then(|r| r.into_iter().next());
            let dest = next.as_ref().and_then(|n| self.resolve(&n.uri));
            return match dest {
                Some(dest) if !self.may_send(&ctx, &dest) => {
                    self.stats.relay_refused += 1;
                    self.reply_status(now, &key, &req, StatusCode::FORBIDDEN, "Route Not Allowed")
                }
                Some(dest) => {
                    let target = Target {
                        ruri: req.uri.clone(),
                        dest,
                        routes: Vec::new(),
                    };
                    self.forward(now, key, req, vec![target], &ctx)
                }
                None => self.reply_status(
                    now,
                    &key,
                    &req,
                    StatusCode::NOT_FOUND,
                    "No Route To Next Hop",
                ),
            };
        }
        if let Some(aor) = local_target {
            let required = required_services(&req);
            let targets: Vec<Target> = self
                .registrar
                .lookup(&aor, now)
                .filter(|b| accepts(b, &required))
                .map(|b| Target {
                    ruri: b.contact.uri.clone(),
                    dest: self.binding_destination(b),
                    routes: b.path.clone(),
                })
                .collect();
            if targets.is_empty() {
                return self.park_for_user(
                    now,
                    Parked {
                        key,
                        req,
                        peer,
                        purpose: Purpose::TargetExists,
                        ctx,
                    },
                    aor,
                );
            }
            return self.forward(now, key, req, targets, &ctx);
        }
        let Uri::Sip(u) = &req.uri else {
            return self.reply_status(
                now,
                &key,
                &req,
                StatusCode::UNSUPPORTED_URI_SCHEME,
                "Unsupported URI Scheme",
            );
        };
        // A dialog of the node's PF (its Contact): in-dialog requests go to it; the PF
        // knows its dialogs (unguessable tags) and answers 481 for any other.
        if !initial && let Some(pf) = self.pf_dialog(u) {
            let target = Target {
                ruri: req.uri.clone(),
                dest: pf,
                routes: Vec::new(),
            };
            return self.forward(now, key, req, vec![target], &ctx);
        }
        // No open relay: only a local user, the trust domain or a dialog of ours may send to
        // other domains.
        let may_relay = ctx.origin.is_some() || ctx.trusted || ctx.dialog;
        let peer_domain = match &u.host {
            cpm_sip::Host::Domain(d) => self
                .cfg
                .peer_domains
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(d))
                .map(|(_, a)| *a),
            _ => None,
        };
        match peer_domain {
            Some(addr) if may_relay => {
                let target = Target {
                    ruri: req.uri.clone(),
                    dest: Peer::udp(addr),
                    routes: Vec::new(),
                };
                self.forward(now, key, req, vec![target], &ctx)
            }
            Some(_) => {
                self.stats.relay_refused += 1;
                self.reply_status(now, &key, &req, StatusCode::FORBIDDEN, "Relaying Denied")
            }
            // In-dialog requests that came along our Record-Route go to the remote target
            // (its Contact); without a route through us they are not ours to relay (this is
            // how Kamailio's reference configuration answers them too).
            None if ctx.dialog => match self.resolve(&req.uri) {
                Some(dest) => {
                    let target = Target {
                        ruri: req.uri.clone(),
                        dest,
                        routes: Vec::new(),
                    };
                    self.forward(now, key, req, vec![target], &ctx)
                }
                None => self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Not Found"),
            },
            None if !initial => {
                self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Not Here")
            }
            None => self.reply_status(now, &key, &req, StatusCode::NOT_FOUND, "Domain Not Served"),
        }
    }

    /// Where a request for a registered device goes: over its own connection when it
    /// registered over a stream (connection reuse) or as an RFC 5626 outbound flow (`reg-id`);
    /// otherwise to its Contact URI (RFC 3261 16.5), falling back to the flow's address for
    /// names we cannot resolve.
    pub(super) fn binding_destination(&self, b: &Binding) -> Peer {
        if b.flow.conn.is_some() || b.reg_id.is_some() {
            return b.flow;
        }
        self.resolve(&b.contact.uri).unwrap_or(b.flow)
    }

    /// The node's Participating Function behind a dialog Contact it wrote (ours, with the
    /// `cpm-pf` parameter naming its shard): in-dialog requests of its sessions go to it.
    pub(super) fn pf_dialog(&self, u: &SipUri) -> Option<Peer> {
        let shard = u
            .param(PF_CONTACT_PARAM)?
            .value
            .as_deref()?
            .parse::<u16>()
            .ok()?;
        if u.user.is_some() || !self.is_us(u) || shard >= self.cfg.shards.count.max(1) {
            return None;
        }
        self.cfg
            .application_servers
            .iter()
            .find(|a| a.server.function() == Some(Function::Participating))
            .map(|a| Peer::local_on(Function::Participating, a.server.addr, shard))
    }

    /// The transport address of a URI: IP literals (and `localhost`), our peer domains, with
    /// the `transport` parameter. Other names would need DNS (RFC 3263), not done yet.
    pub(super) fn resolve(&self, uri: &Uri) -> Option<Peer> {
        let Uri::Sip(u) = uri else { return None };
        if let Some(pf) = self.pf_dialog(u) {
            return Some(pf);
        }
        let transport = match u.param("transport").and_then(|p| p.value.as_deref()) {
            Some(t) => TransportKind::from_via_token(t)?,
            None => TransportKind::Udp,
        };
        let port = u.port.unwrap_or(5060);
        let ip = match &u.host {
            cpm_sip::Host::Ipv4(a) => IpAddr::V4(*a),
            cpm_sip::Host::Ipv6(a) => a.parse().ok()?,
            cpm_sip::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
                IpAddr::V4(core::net::Ipv4Addr::LOCALHOST)
            }
            cpm_sip::Host::Domain(d) => {
                let addr = self
                    .cfg
                    .peer_domains
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(d))
                    .map(|(_, a)| *a)?;
                return Some(Peer {
                    transport,
                    addr,
                    conn: None,
                });
            }
        };
        let addr = SocketAddr::new(ip, port);
        is_sendable(&addr).then_some(Peer {
            transport,
            addr,
            conn: None,
        })
    }
}
