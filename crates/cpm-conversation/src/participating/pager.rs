//! The 1-1 pager flow (RFC 3428 MESSAGE through the B2BUA; PROTOCOL.md 2.1, outline sections
//! Messaging and Multiple Devices): the originating side (asserted identity, CPM identifiers,
//! stored in the sender's history, sent on to the core) and the terminating side (forked to
//! the recipient's devices, stored once with the outcome, 200 or 202 after that commit).

use std::time::Instant;

use cpm_content::{Cpim, CpimAddress, mime};
use cpm_sip::{Header, HeaderName, Request, StatusCode, Uri};
use cpm_sip_core::transaction::ServerKey;
use cpm_store::{DeliveryState, Direction, MessageRecord, StoreOp};

use super::message::{ConversationIds, MessageBody, asserted_identity, names_only};
use super::{BRANCH_PREFIX, ClientPurpose, JobKind, OpPurpose, ParticipatingFunction, Refusal};
use crate::ids::{aor_of, derived_uuid};

impl ParticipatingFunction {
    pub(super) fn on_orig(&mut self, now: Instant, key: ServerKey, req: Request) {
        if self.jobs.len() >= self.cfg.max_in_progress {
            return self.refuse(now, &key, &req, Refusal::Overloaded);
        }
        // The core asserted the served user (RFC 3325); without it the request did not come
        // through authentication.
        let Some(sender_uri) = asserted_identity(&req) else {
            return self.refuse(now, &key, &req, Refusal::NoAssertedIdentity);
        };
        let Some(sender) = aor_of(&sender_uri) else {
            return self.refuse(now, &key, &req, Refusal::NoAssertedIdentity);
        };
        let req = match self.vouch_cpim_from(req, &sender_uri) {
            Ok(r) => r,
            Err(req) => return self.refuse(now, &key, &req, Refusal::CpimFromNotSender),
        };
        let list = req
            .headers
            .require()
            .unwrap_or_default()
            .iter()
            .any(|t| t.eq_ignore_ascii_case("recipient-list-message"));
        let unix = self.unix_ms(now);
        let ids = ConversationIds::of(&req);
        if list {
            return self.on_orig_list(now, key, req, &sender, &sender_uri, &ids, unix);
        }
        let body = match MessageBody::parse(&req) {
            Ok(b) => b,
            Err(r) => return self.refuse(now, &key, &req, r),
        };
        if body.imdn.is_none() && body.content_len > self.cfg.max_pager_message {
            // OMA CPM 5.2.2: larger messages go in Large Message Mode.
            return self.refuse(now, &key, &req, Refusal::PagerTooLarge);
        }
        let Some(recipient) = aor_of(&req.uri) else {
            return self.refuse(now, &key, &req, Refusal::RecipientNotAor);
        };
        let out = self.onward(&req, &ids, req.uri.clone(), None);
        if let Some(imdn) = body.imdn {
            // The recipient's own notification on its way back to the sender: its record of
            // the message (direction received) takes the state.
            return self.imdn_job(
                now,
                key,
                req,
                out,
                &sender,
                &recipient,
                Direction::Received,
                &imdn,
            );
        }
        let record = MessageRecord {
            owner: sender.clone(),
            direction: Direction::Sent,
            peer: recipient,
            conversation_id: ids.conversation.clone(),
            contribution_id: ids.contribution.clone(),
            in_reply_to: ids.in_reply_to.clone(),
            message_id: body.message_id(&req),
            sender: sender_uri.to_string(),
            recipient: req.uri.to_string(),
            content_type: body.content_type.clone(),
            body: req.body.to_vec(),
            disposition: body.disposition.clone(),
            created_at_ms: unix,
            expires_at_ms: None,
            state: DeliveryState::Pending,
            state_at_ms: unix,
        };
        self.stats.messages_sent += 1;
        let job = self.new_job(key, req, JobKind::Orig { out }, 1);
        self.store(OpPurpose::Job(job), StoreOp::AppendMessage(record));
    }

    /// The onward request of the B2BUA: the incoming request with our Via only, a new
    /// Call-ID, From tag and CSeq, the CPM identifiers set, credentials removed.
    pub(super) fn onward(
        &mut self,
        req: &Request,
        ids: &ConversationIds,
        ruri: Uri,
        to_aor: Option<&str>,
    ) -> Request {
        let mut out = req.clone();
        out.uri = ruri;
        let h = &mut out.headers;
        h.remove_all(&HeaderName::Via);
        h.remove_all(&HeaderName::Authorization);
        h.remove_all(&HeaderName::ProxyAuthorization);
        h.remove_all(&HeaderName::PPreferredIdentity);
        h.remove_all(&HeaderName::PPreferredService);
        h.remove_all(&HeaderName::RecordRoute);
        h.remove_all(&HeaderName::Contact);
        let call_id = req
            .headers
            .call_id()
            .ok()
            .flatten()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let branch = format!("{BRANCH_PREFIX}{:016x}", self.random());
        h.push_front(Header::new(
            HeaderName::Via,
            &format!(
                "SIP/2.0/{} {};branch={branch}",
                self.cfg.core.transport.as_via_token(),
                self.cfg.address
            ),
        ));
        let from_uri = req.headers.from().ok().flatten().map_or_else(
            || "<sip:anonymous@anonymous.invalid>".to_owned(),
            |f| format!("<{}>", f.uri),
        );
        let tag = self.tag();
        h.set(HeaderName::From, &format!("{from_uri};tag={tag}"));
        if let Some(aor) = to_aor {
            h.set(HeaderName::To, &format!("<sip:{aor}>"));
        }
        // Derived, so that a retransmission after a restart produces the same onward leg.
        let leg = derived_uuid(&[&call_id, "pf-leg", &out.uri.to_string()]);
        h.set(
            HeaderName::CallId,
            &format!("{leg}@{}", self.cfg.address.ip()),
        );
        h.set(HeaderName::CSeq, "1 MESSAGE");
        let mf = req
            .headers
            .max_forwards()
            .ok()
            .flatten()
            .map_or(70, |m| m.saturating_sub(1));
        h.set(HeaderName::MaxForwards, &mf.to_string());
        h.set(HeaderName::ConversationId, &ids.conversation);
        h.set(HeaderName::ContributionId, &ids.contribution);
        h.set(HeaderName::ContentLength, &out.body.len().to_string());
        out
    }

    /// The CPIM `From` a recipient sees and both histories keep is the identity the network
    /// vouches for (the asserted identity; on the terminating side, for a sender from
    /// another domain, its From): a body naming someone else gets `From: <identity>`. A
    /// display name is kept only when the URI already was the identity, since a forged
    /// display name is how look-alikes work. A body that is not valid CPIM is left for
    /// [`MessageBody::parse`] to refuse. A body that still does not name exactly the
    /// identity once corrected (a `From` in another namespace, the default namespace bound
    /// elsewhere by `NS`) is given back as `Err`: it cannot be made to tell the truth.
    pub(super) fn vouch_cpim_from(
        &mut self,
        mut req: Request,
        identity: &Uri,
    ) -> Result<Request, Box<Request>> {
        let ct = req
            .headers
            .get(&HeaderName::ContentType)
            .and_then(|h| h.value().ok().map(|v| v.into_owned()))
            .unwrap_or_default();
        if mime::media_type(&ct) != mime::MESSAGE_CPIM {
            return Ok(req);
        }
        let Ok(mut cpim) = Cpim::parse(req.body.clone()) else {
            return Ok(req);
        };
        let Some(want) = aor_of(identity) else {
            return Ok(req);
        };
        if names_only(&cpim, &want) {
            return Ok(req);
        }
        cpim.set_from(&CpimAddress::new(identity.to_string()));
        let body = cpim.to_bytes();
        // Read back as a recipient will: one From, the identity's.
        if !Cpim::parse(body.clone()).is_ok_and(|c| names_only(&c, &want)) {
            return Err(Box::new(req));
        }
        req.body = body;
        req.headers
            .set(HeaderName::ContentLength, &req.body.len().to_string());
        self.stats.cpim_from_corrected += 1;
        Ok(req)
    }

    pub(super) fn on_term(&mut self, now: Instant, key: ServerKey, req: Request) {
        if self.jobs.len() >= self.cfg.max_in_progress {
            return self.refuse(now, &key, &req, Refusal::Overloaded);
        }
        let Some(owner) = aor_of(&req.uri) else {
            return self.refuse(now, &key, &req, Refusal::UserNotAor);
        };
        let sender_uri =
            asserted_identity(&req).or_else(|| req.headers.from().ok().flatten().map(|f| f.uri));
        let Some(sender_uri) = sender_uri else {
            return self.refuse(now, &key, &req, Refusal::NoSender);
        };
        let sender = aor_of(&sender_uri).unwrap_or_else(|| sender_uri.to_string());
        let req = match self.vouch_cpim_from(req, &sender_uri) {
            Ok(r) => r,
            Err(req) => return self.refuse(now, &key, &req, Refusal::CpimFromNotSender),
        };
        let body = match MessageBody::parse(&req) {
            Ok(b) => b,
            Err(r) => return self.refuse(now, &key, &req, r),
        };
        let ids = ConversationIds::of(&req);
        // To the core with no CPM phase: the core forks it to the owner's devices.
        let mut out = self.onward(&req, &ids, req.uri.clone(), None);
        out.headers.remove_all(&HeaderName::Route);
        if let Some(imdn) = body.imdn {
            // A notification for a served user about a message it sent.
            return self.imdn_job(now, key, req, out, &owner, &sender, Direction::Sent, &imdn);
        }
        let unix = self.unix_ms(now);
        let message_id = body.message_id(&req);
        let record = MessageRecord {
            owner: owner.clone(),
            direction: Direction::Received,
            peer: sender.clone(),
            conversation_id: ids.conversation.clone(),
            contribution_id: ids.contribution.clone(),
            in_reply_to: ids.in_reply_to.clone(),
            message_id: message_id.clone(),
            sender: sender_uri.to_string(),
            recipient: req.uri.to_string(),
            content_type: body.content_type.clone(),
            body: req.body.to_vec(),
            disposition: body.disposition.clone(),
            created_at_ms: unix,
            expires_at_ms: self.cfg.deferred_ttl.map(|t| unix + t.as_millis() as u64),
            state: DeliveryState::Pending,
            state_at_ms: unix,
        };
        self.stats.messages_received += 1;
        // Deliver first, store once with the outcome: the sender's 2xx still waits for that
        // commit (rule 3), and the message costs one write instead of append + update. A
        // crash before the commit leaves the sender without a 2xx: it sends again, and the
        // device drops the duplicate by Message-ID.
        let at = now + self.cfg.delivery_timeout;
        let epoch = self.reg_epoch.get(&owner).copied().unwrap_or(0);
        self.in_flight
            .insert((owner.clone(), sender.clone(), message_id.clone()));
        let job = self.new_job(
            key,
            req,
            JobKind::Term {
                owner,
                peer: sender,
                message_id,
                record: Some(Box::new(record)),
                deadline: Some(at),
                answer: None,
                epoch,
                plain_retry: false,
                leg: None,
            },
            0,
        );
        self.deadlines.push_back((at, job));
        self.send_leg(now, out, ClientPurpose::Job(job));
    }

    /// Stores a terminating job's record with the outcome the devices gave, then answers
    /// `answer` (from `job_stored`).
    pub(super) fn store_term(
        &mut self,
        now: Instant,
        job_id: u64,
        state: DeliveryState,
        answer: StatusCode,
    ) {
        let unix = self.unix_ms(now);
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let JobKind::Term {
            record, answer: a, ..
        } = &mut job.kind
        else {
            return;
        };
        let Some(mut record) = record.take() else {
            return;
        };
        record.state = state;
        record.state_at_ms = unix;
        *a = Some(answer);
        job.waiting = 1;
        let op = match self.cfg.deferred_quota {
            // Queued for later: the queue's limits are checked where the record is written.
            Some(quota) if state == DeliveryState::Pending => StoreOp::AppendDeferred {
                record: *record,
                quota,
            },
            _ => StoreOp::AppendMessage(*record),
        };
        self.store(OpPurpose::Job(job_id), op);
    }

    pub(super) fn on_delivery_deadline(&mut self, now: Instant, job_id: u64, at: Instant) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let JobKind::Term {
            deadline, record, ..
        } = &job.kind
        else {
            return;
        };
        // Not due, or the devices answered and the record is being stored already.
        if *deadline != Some(at) || record.is_none() {
            return;
        }
        // No device accepted in time: the message is stored as pending (the deferred queue),
        // the sender gets 202 after that commit, and the delivery goes on in the background.
        self.stats.deferred += 1;
        self.store_term(now, job_id, DeliveryState::Pending, StatusCode::ACCEPTED);
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if let JobKind::Term {
            owner,
            peer,
            message_id,
            leg: Some(leg),
            ..
        } = &job.kind
            && let Some(purpose) = self.clients.get_mut(leg)
        {
            *purpose = ClientPurpose::LateTerm {
                owner: owner.clone(),
                peer: peer.clone(),
                message_id: message_id.clone(),
            };
        }
    }

    /// The terminating leg of `req` with its CPIM body replaced by the text inside it
    /// (`None` unless the body is CPIM wrapping `text/*`).
    pub(super) fn unwrapped_leg(&mut self, req: &Request) -> Option<Request> {
        let ct = req.headers.get(&HeaderName::ContentType)?.value().ok()?;
        if mime::media_type(&ct) != mime::MESSAGE_CPIM {
            return None;
        }
        let cpim = Cpim::parse(req.body.clone()).ok()?;
        let inner = cpim.content_type().unwrap_or("text/plain").to_owned();
        if !mime::media_type(&inner).starts_with("text/") {
            return None;
        }
        let ids = ConversationIds::of(req);
        let mut out = self.onward(req, &ids, req.uri.clone(), None);
        out.headers.remove_all(&HeaderName::Route);
        out.headers.set(HeaderName::CSeq, "2 MESSAGE");
        out.headers.set(HeaderName::ContentType, &inner);
        out.headers
            .set(HeaderName::ContentLength, &cpim.body.len().to_string());
        out.body = cpim.body;
        Some(out)
    }
}
