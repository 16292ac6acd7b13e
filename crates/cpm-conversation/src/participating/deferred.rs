//! Deferred delivery (outline section Deferred Messaging; TS 24.229 5.4.1.7): a third-party
//! REGISTER from the core starts a run over the user's deferred queue, one message at a time
//! with the `…oma.cpm.deferred` ICSI; expired messages produce a failure IMDN (RFC 5438).

use std::time::Instant;

use bytes::Bytes;
use cpm_sip::{Header, HeaderName, Method, Request, StatusCode, Uri};
use cpm_sip_core::transaction::{ServerKey, response_to};
use cpm_store::{MessageRecord, StoreOp};

use super::{
    BRANCH_PREFIX, ClientPurpose, DEFERRED_BATCH, DeferredRun, OpPurpose, ParticipatingFunction,
    Refusal,
};
use crate::ids::{ICSI_DEFERRED, accept_contact, aor_of, derived_uuid};

impl ParticipatingFunction {
    pub(super) fn on_third_party_register(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        let aor = req.headers.to().ok().flatten().and_then(|t| aor_of(&t.uri));
        let expires = req.headers.expires().ok().flatten().unwrap_or(3600);
        let Some(aor) = aor else {
            return self.refuse(now, key, req, Refusal::RegisterToNotAor);
        };
        let tag = self.tag();
        let resp = response_to(req, StatusCode::OK, Some(&tag));
        let _ = self.tx.respond_owned(now, key, resp);
        if expires > 0 {
            *self.reg_epoch.entry(aor.clone()).or_insert(0) += 1;
            self.start_deferred_run(aor);
        }
    }

    pub(super) fn start_deferred_run(&mut self, owner: String) {
        if let Some(run) = self.runs.get_mut(&owner) {
            run.again = true;
            return;
        }
        self.runs.insert(
            owner.clone(),
            DeferredRun {
                reading: true,
                ..DeferredRun::default()
            },
        );
        self.store(
            OpPurpose::DeferredRead {
                owner: owner.clone(),
            },
            StoreOp::PendingDeferred {
                owner,
                limit: DEFERRED_BATCH,
            },
        );
    }

    pub(super) fn on_deferred_read(
        &mut self,
        now: Instant,
        owner: String,
        records: Vec<MessageRecord>,
    ) {
        let in_flight = &self.in_flight;
        let Some(run) = self.runs.get_mut(&owner) else {
            return;
        };
        run.reading = false;
        let total = records.len();
        run.queue = records
            .into_iter()
            .filter(|r| {
                !in_flight.contains(&(r.owner.clone(), r.peer.clone(), r.message_id.clone()))
            })
            .collect();
        // More may follow a full read, unless everything read is still in flight (then a
        // failed delivery runs the queue again, see `rerun`; reading again now would spin).
        run.more = total >= DEFERRED_BATCH && !run.queue.is_empty();
        if run.queue.len() < total {
            self.rerun.insert(owner.clone());
        }
        self.deferred_next(now, owner);
    }

    pub(super) fn deferred_next(&mut self, now: Instant, owner: String) {
        let Some(run) = self.runs.get_mut(&owner) else {
            return;
        };
        let Some(record) = run.queue.front().cloned() else {
            if run.again || run.more {
                run.again = false;
                run.reading = true;
                self.store(
                    OpPurpose::DeferredRead {
                        owner: owner.clone(),
                    },
                    StoreOp::PendingDeferred {
                        owner,
                        limit: DEFERRED_BATCH,
                    },
                );
            } else {
                self.runs.remove(&owner);
            }
            return;
        };
        let out = self.deferred_request(&record);
        let dest = self.core_peer();
        match self.tx.send_request(now, out, dest) {
            Ok(ckey) => {
                if let Some(run) = self.runs.get_mut(&owner) {
                    run.sending = Some(ckey.clone());
                }
                self.clients.insert(ckey, ClientPurpose::Deferred { owner });
            }
            Err(_) => {
                self.runs.remove(&owner);
            }
        }
    }

    /// A stored message re-sent to its owner's devices with the deferred ICSI, the original
    /// sender identity, identifiers and body (PROTOCOL.md row 13).
    fn deferred_request(&mut self, r: &MessageRecord) -> Request {
        let ruri = Uri::parse(&format!("sip:{}", r.owner))
            .unwrap_or_else(|_| Uri::parse("sip:invalid@invalid").expect("static URI"));
        let mut out = Request::new(Method::Message, ruri);
        let branch = format!("{BRANCH_PREFIX}{:016x}", self.random());
        let tag = self.tag();
        let h = &mut out.headers;
        h.push(Header::new(
            HeaderName::Via,
            &format!(
                "SIP/2.0/{} {};branch={branch}",
                self.cfg.core.transport.as_via_token(),
                self.cfg.address
            ),
        ));
        h.push(Header::new(HeaderName::MaxForwards, "70"));
        h.push(Header::new(
            HeaderName::From,
            &format!("<{}>;tag={tag}", r.sender),
        ));
        h.push(Header::new(HeaderName::To, &format!("<sip:{}>", r.owner)));
        let call_id = derived_uuid(&[&r.owner, &r.peer, &r.message_id, "deferred"]);
        h.push(Header::new(
            HeaderName::CallId,
            &format!("{call_id}@{}", self.cfg.address.ip()),
        ));
        h.push(Header::new(HeaderName::CSeq, "1 MESSAGE"));
        h.push(Header::new(
            HeaderName::PAssertedIdentity,
            &format!("<{}>", r.sender),
        ));
        h.push(Header::new(HeaderName::PAssertedService, ICSI_DEFERRED));
        // `require`: only devices that take deferred messages (or that announce no CPM
        // service at all, such as a plain RFC 3428 UA) get them (RFC 3841).
        h.push(Header::new(
            HeaderName::AcceptContact,
            &format!("{};require", accept_contact(ICSI_DEFERRED)),
        ));
        h.push(Header::new(HeaderName::ConversationId, &r.conversation_id));
        h.push(Header::new(HeaderName::ContributionId, &r.contribution_id));
        if let Some(irt) = &r.in_reply_to {
            h.push(Header::new(HeaderName::InReplyToContributionId, irt));
        }
        h.push(Header::new(HeaderName::ContentType, &r.content_type));
        h.push(Header::new(
            HeaderName::ContentLength,
            &r.body.len().to_string(),
        ));
        out.body = Bytes::from(r.body.clone());
        out
    }

    /// A deferred message expired: tell its sender when asked to (RFC 5438 failed).
    pub(super) fn on_expired(&mut self, now: Instant, r: &MessageRecord) {
        if !r.disposition.iter().any(|d| d == "negative-delivery") {
            return;
        }
        let (Ok(from), Ok(to)) = (Uri::parse(&r.recipient), Uri::parse(&r.sender)) else {
            return;
        };
        // Through the core as the recipient's originating side, so that the sender's PF
        // records the failure in the sender's history too.
        let route = format!("<sip:{};lr;cpm=orig>", self.cfg.core.addr);
        self.send_failure_imdn(now, &from, &to, r, Some(&route));
    }
}
