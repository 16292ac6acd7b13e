//! Forwarding (RFC 3261 16.6-16.11): one client transaction per target, Record-Route with the
//! dialog token, responses and best-response selection (16.7), 408 for silent branches (16.8),
//! CANCEL (16.10) and stateless ACK forwarding (16.11).

use std::time::{Duration, Instant};

use cpm_sip::{Header, HeaderName, Method, Request, Response, StatusCode, Uri};
use cpm_sip_core::Peer;
use cpm_sip_core::transaction::{ClientKey, ResponseDisposition, ServerKey, response_to};

use super::routing::RouteCtx;
use super::{BRANCH_PREFIX, DIALOG_PARAM, Proxy, pop_top_via};

/// One forwarded request and what its branches answered.
#[derive(Debug)]
pub(super) struct Fork {
    /// The request as received, to build responses of our own (408 for a silent branch);
    /// dropped once every branch answered.
    request: Option<Request>,
    invite: bool,
    branches: Vec<ClientKey>,
    pending: usize,
    best: Option<Response>,
    answered: bool,
    cancelled: bool,
    done_at: Option<Instant>,
}

/// A destination chosen by target determination.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) ruri: Uri,
    pub(super) dest: Peer,
    pub(super) routes: Vec<String>,
}

impl Proxy {
    /// RFC 3261 16.6: copy, Request-URI, Max-Forwards, Record-Route, Route, Via; one client
    /// transaction per target, all in parallel.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        targets: Vec<Target>,
        ctx: &RouteCtx,
    ) {
        let hash = ctx.hash;
        let initial = ctx.initial;
        let record_route = initial
            && matches!(
                req.method,
                Method::Invite | Method::Subscribe | Method::Refer
            );
        let invite = req.method == Method::Invite;
        let dialog_token = if record_route {
            let call_id = req.headers.call_id().ok().flatten().map(|c| c.0);
            self.dialog_token(&call_id.unwrap_or_default())
        } else {
            String::new()
        };
        let mut fork = Fork {
            request: Some(req.clone()),
            invite,
            branches: Vec::new(),
            pending: 0,
            best: None,
            answered: false,
            cancelled: false,
            done_at: None,
        };
        let max_forwards = req
            .headers
            .max_forwards()
            .ok()
            .flatten()
            .map_or(70, |m| m.saturating_sub(1));
        for (i, t) in targets.into_iter().enumerate() {
            let mut out = req.clone();
            out.uri = t.ruri;
            out.headers
                .set(HeaderName::MaxForwards, &max_forwards.to_string());
            // The core of another shard records the route itself (one entry per node).
            if record_route && t.dest.function() != Some(cpm_sip_core::Function::Core) {
                // Toward a function of the node the dialog's other requests come from the
                // side the request came from: name that transport.
                let transport = match (t.dest.function(), ctx.ingress) {
                    (Some(_), Some(ingress))
                        if !matches!(ingress, cpm_sip_core::TransportKind::Local(_)) =>
                    {
                        ingress
                    }
                    _ => t.dest.transport,
                };
                let rr = format!(
                    "<sip:{};transport={};lr;{DIALOG_PARAM}={}>",
                    self.cfg.advertised,
                    transport.as_via_token().to_ascii_lowercase(),
                    dialog_token
                );
                out.headers
                    .push_front(Header::new(HeaderName::RecordRoute, &rr));
            }
            for r in t.routes.iter().rev() {
                out.headers.push_front(Header::new(HeaderName::Route, r));
            }
            let salt = self.random() & 0xffff;
            let via = format!(
                "SIP/2.0/{} {};branch={BRANCH_PREFIX}{hash:016x}-{i}{salt:x}{}",
                t.dest.transport.as_via_token(),
                self.cfg.advertised,
                self.branch_tag
            );
            out.headers.push_front(Header::new(HeaderName::Via, &via));
            // Keep the header order readable: our Via first, then the rest.
            // A hop to another shard's core is not a forward of the node's: that core counts
            // the one it makes.
            let counted = t.dest.function() != Some(cpm_sip_core::Function::Core);
            match self.tx.send_request(now, out, t.dest) {
                Ok(ck) => {
                    if counted {
                        self.stats.requests_forwarded += 1;
                        if req.method == Method::Message {
                            self.stats.messages_forwarded += 1;
                        }
                    }
                    self.branch_fork.insert(ck.clone(), key.clone());
                    fork.branches.push(ck);
                    fork.pending += 1;
                }
                Err(_) => continue,
            }
        }
        if fork.pending == 0 {
            return self.reply_status(
                now,
                &key,
                &req,
                StatusCode::SERVER_INTERNAL_ERROR,
                "No Branch Sent",
            );
        }
        self.forks.insert(key, Box::new(fork));
    }

    pub(super) fn on_response(&mut self, now: Instant, mut resp: Response) {
        self.stats.responses_received += 1;
        match self.tx.handle_response(now, &resp) {
            ResponseDisposition::Pass(ckey) => {
                if !pop_top_via(&mut resp.headers) || !resp.headers.contains(&HeaderName::Via) {
                    return;
                }
                if resp.status.is_provisional() {
                    if resp.status == StatusCode::TRYING {
                        return;
                    }
                    if let Some(server) = self.branch_fork.get(&ckey).cloned() {
                        let _ = self.tx.respond(now, &server, &resp);
                    }
                    return;
                }
                self.branch_final(now, &ckey, resp, false);
            }
            ResponseDisposition::Absorbed => {}
            // RFC 6026 keeps 2xx retransmissions matched (the Accepted state): a response with
            // no client transaction is not one we must pass on, and forwarding it to whatever
            // its second Via names would relay for anyone who writes a Via of ours.
            ResponseDisposition::Stray => {}
        }
    }

    /// RFC 3261 16.8: a timed-out branch counts as a 408 response.
    pub(super) fn branch_timeout(&mut self, now: Instant, ckey: &ClientKey) {
        let synthetic = self
            .branch_fork
            .get(ckey)
            .and_then(|server| self.forks.get(server))
            .and_then(|fork| fork.request.as_ref())
            .map(|req| response_to(req, StatusCode::REQUEST_TIMEOUT, Some("cpm-timeout")));
        if let Some(r) = synthetic {
            self.branch_final(now, ckey, r, true);
        }
    }

    /// A branch got a final response (or timed out): RFC 3261 16.7 steps 4-10.
    fn branch_final(&mut self, now: Instant, ckey: &ClientKey, resp: Response, timeout: bool) {
        let Some(server) = self.branch_fork.get(ckey).cloned() else {
            return;
        };
        let Some(fork) = self.forks.get_mut(&server) else {
            return;
        };
        if resp.status.is_success() {
            // 2xx (and its retransmissions from other forks) go upstream at once.
            let first = !fork.answered;
            fork.answered = true;
            if first {
                fork.pending = fork.pending.saturating_sub(1);
            }
            let (invite, branches) = (fork.invite, fork.branches.clone());
            let _ = self.tx.respond_owned(now, &server, resp);
            if invite && first {
                for b in branches.iter().filter(|b| *b != ckey) {
                    self.tx.cancel(now, b);
                }
            }
            self.finish_fork_if_done(now, &server);
            return;
        }
        if !timeout || fork.pending > 0 {
            fork.pending = fork.pending.saturating_sub(1);
        }
        let better = match &fork.best {
            None => true,
            Some(b) => rank(resp.status) < rank(b.status),
        };
        let six = resp.status.class() == 6;
        if better {
            fork.best = Some(resp);
        }
        if six && fork.invite && !fork.cancelled {
            fork.cancelled = true;
            let branches = fork.branches.clone();
            for b in branches.iter().filter(|b| *b != ckey) {
                self.tx.cancel(now, b);
            }
        }
        self.finish_fork_if_done(now, &server);
    }

    fn finish_fork_if_done(&mut self, now: Instant, server: &ServerKey) {
        let Some(fork) = self.forks.get_mut(server) else {
            return;
        };
        if fork.pending > 0 || fork.done_at.is_some() {
            return;
        }
        fork.done_at = Some(now);
        if !fork.answered
            && let Some(mut best) = fork.best.take()
        {
            // 16.7 step 6: a 503 from downstream becomes 500 (it is not our overload).
            if best.status == StatusCode::SERVICE_UNAVAILABLE {
                best.status = StatusCode::SERVER_INTERNAL_ERROR;
                best.reason = "Server Internal Error".to_owned();
            }
            let _ = self.tx.respond_owned(now, server, best);
        }
        fork.request = None;
        if !fork.invite {
            // Nothing maps to a finished non-INVITE fork any more.
            if let Some(f) = self.forks.remove(server) {
                for b in f.branches {
                    self.branch_fork.remove(&b);
                }
            }
            return;
        }
        // Keep an INVITE fork a while: 2xx retransmissions still map to it (RFC 6026).
        let at = now + 64 * self.cfg.timers.t1 + Duration::from_secs(1);
        self.done_forks.push_back((at, server.clone()));
        if self.sweep_at.is_none() {
            self.sweep_at = Some(at);
        }
    }

    pub(super) fn sweep(&mut self, now: Instant) {
        // `done_forks` is in deadline order: `now` only grows.
        while let Some((at, _)) = self.done_forks.front() {
            if *at > now {
                break;
            }
            let Some((_, key)) = self.done_forks.pop_front() else {
                break;
            };
            if let Some(f) = self.forks.remove(&key) {
                for b in f.branches {
                    self.branch_fork.remove(&b);
                }
            }
        }
        self.sweep_at = self.done_forks.front().map(|(at, _)| *at);
        // Parked queries whose transaction is gone are dropped too.
        let tx = &self.tx;
        self.parked.retain(|_, p| tx.is_proceeding(&p.key));
    }

    pub(super) fn on_cancel(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        // RFC 3261 16.10: answer the CANCEL, then cancel every pending branch.
        let Some(invite_key) = self.tx.invite_for_cancel(key) else {
            return self.reply_status(
                now,
                key,
                req,
                StatusCode::CALL_DOES_NOT_EXIST,
                "Call/Transaction Does Not Exist",
            );
        };
        let ok = response_to(req, StatusCode::OK, None);
        self.reply(now, key, ok);
        match self.forks.get_mut(&invite_key) {
            Some(fork) => {
                fork.cancelled = true;
                let branches = fork.branches.clone();
                for b in &branches {
                    self.tx.cancel(now, b);
                }
            }
            None => {
                // Not forwarded yet (waiting for the user directory): answer 487 ourselves.
                self.parked.retain(|_, p| p.key != invite_key);
                let mut fake = req.clone();
                fake.method = Method::Invite;
                fake.headers.set(
                    HeaderName::CSeq,
                    &format!(
                        "{} INVITE",
                        req.headers.cseq().ok().flatten().map_or(0, |c| c.seq)
                    ),
                );
                let tag = self.tag();
                let resp = response_to(&fake, StatusCode::REQUEST_TERMINATED, Some(&tag));
                self.reply(now, &invite_key, resp);
            }
        }
    }

    /// ACK for a 2xx (and other requests outside transactions) is forwarded statelessly along
    /// its Route set or to its Request-URI (RFC 3261 16.11).
    ///
    /// The relay rule holds here too: an ACK goes where it names only inside a dialog of ours
    /// (our Record-Route's token), from the trust domain, to a known next hop, or to a
    /// registered device of a local user.
    pub(super) fn forward_stateless_ack(&mut self, now: Instant, mut req: Request, peer: Peer) {
        let ctx = RouteCtx::default();
        let Ok((_, _, dialog)) = self.pop_own_routes(&mut req) else {
            return;
        };
        let allowed =
            dialog || self.cfg.is_trusted(peer.addr.ip()) || self.cfg.is_application_server(&peer);
        let dest = match req.headers.route().ok().and_then(|r| r.into_iter().next()) {
            Some(next) => self
                .resolve(&next.uri)
                .filter(|d| allowed || self.cfg.is_known_next_hop(d)),
            None => match &req.uri {
                Uri::Sip(u) => match self.local_aor(u) {
                    Some(aor) => self
                        .registrar
                        .lookup(&aor, now)
                        .next()
                        .map(|b| self.binding_destination(b)),
                    // Not along our route and not for our users: not ours to relay.
                    None if allowed => self.resolve(&req.uri),
                    None => None,
                },
                _ => None,
            },
        };
        let Some(dest) = dest else {
            self.stats.relay_refused += 1;
            return;
        };
        let mf = req.headers.max_forwards().ok().flatten().unwrap_or(70);
        if mf == 0 {
            return;
        }
        req.headers
            .set(HeaderName::MaxForwards, &(mf - 1).to_string());
        // A stateless branch must be the same for retransmissions (RFC 3261 16.11).
        let hash = self.request_hash(&req, &ctx);
        let via = format!(
            "SIP/2.0/{} {};branch={BRANCH_PREFIX}{hash:016x}-a{}",
            dest.transport.as_via_token(),
            self.cfg.advertised,
            self.branch_tag
        );
        req.headers.push_front(Header::new(HeaderName::Via, &via));
        self.stats.requests_forwarded += 1;
        self.send_message(dest, cpm_sip::Message::Request(req));
    }
}

/// Response preference for best-response selection (RFC 3261 16.7 step 6): 6xx first, then
/// the lowest class; within 4xx, 401/407/415/420/484 carry information and beat the rest;
/// 408 (our own timeout) and 503 come last.
fn rank(s: StatusCode) -> u32 {
    let code = u32::from(s.as_u16());
    match code {
        600..=699 => 0,
        300..=399 => 100 + code,
        401 | 407 | 415 | 420 | 484 => 200 + code,
        408 => 900,
        400..=499 => 300 + code,
        503 => 950,
        _ => 500 + code,
    }
}
