//! Overload control in the core (RFC 5390): new out-of-dialog requests from the network are
//! refused with a stateless 503 and Retry-After while [`cpm_sip_core::overload::LoadControl`]
//! says the node cannot take more, before any transaction state or store work.

use core::time::Duration;
use std::time::Instant;

use cpm_sip::{Header, HeaderName, Method, Request, StatusCode};
use cpm_sip_core::transaction::response_to;
use cpm_sip_core::{Peer, TransportKind};

use super::Proxy;

impl Proxy {
    /// Whether `req` is new work to refuse now: overload control says so (or the transaction
    /// table or the store queue is full), and it is neither in a dialog through us, an ACK or CANCEL, a message from one of
    /// the node's own functions (work already accepted), nor a request of a live transaction.
    pub(super) fn overloaded_for(
        &mut self,
        now: Instant,
        req: &Request,
        peer: Peer,
        sojourn: Duration,
    ) -> bool {
        let full = self.tx.len() >= self.cfg.max_transactions
            || self.store_backlog >= self.cfg.max_store_in_flight;
        if !full && self.load.admit(now, sojourn) {
            return false;
        }
        if matches!(peer.transport, TransportKind::Local(_))
            || matches!(req.method, Method::Ack | Method::Cancel)
        {
            return false;
        }
        // In-dialog means a dialog through us: the request carries our Record-Route's token.
        // A To tag alone proves nothing (anyone can add one to skip the queue), and
        // dialogs we do not record-route are not ours to favour.
        let in_dialog = self.carries_dialog_token(req)
            && req
                .headers
                .to()
                .ok()
                .flatten()
                .is_some_and(|to| to.tag().is_some());
        // A retransmission is absorbed by its transaction (a 503 for it would contradict the
        // final answer the transaction will give).
        !in_dialog && !self.tx.matches(req)
    }

    /// Answers an overloaded request with 503 and Retry-After, statelessly (RFC 3261 section
    /// 21.5.4; RFC 5390 requirement 5: the refusal must cost far less than the service). Over
    /// UDP too: the answer is no larger than the request, so it amplifies nothing.
    pub(super) fn refuse_overloaded(&mut self, req: &Request, peer: Peer) {
        let secs = self.load.refuse();
        let mut resp = response_to(req, StatusCode::SERVICE_UNAVAILABLE, Some("cpm-ovl"));
        resp.reason = "Overloaded".to_owned();
        resp.headers
            .push(Header::new(HeaderName::RetryAfter, &secs.to_string()));
        self.stats.local_failures += 1;
        self.send_stateless(peer, &resp);
    }
}
