//! The 1-N pager flow (RFC 5365 `recipient-list-message`, outline section Messaging): the
//! originating PF explodes the request into one stored record and one MESSAGE per recipient,
//! answers `202 Accepted` once every record is stored, and reports a copy's failure with a
//! failure IMDN (RFC 5438).

use std::time::Instant;

use cpm_content::{Multipart, ResourceList, mime};
use cpm_sip::{HeaderName, Request, Uri};
use cpm_sip_core::transaction::ServerKey;
use cpm_store::{DeliveryState, Direction, MessageRecord, StoreOp};

use super::message::{ConversationIds, MessageBody};
use super::{JobKind, OpPurpose, ParticipatingFunction, Refusal};
use crate::ids::{ICSI_MSG, accept_contact, aor_of, derived_uuid};

impl ParticipatingFunction {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_orig_list(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        sender: &str,
        sender_uri: &Uri,
        ids: &ConversationIds,
        unix: u64,
    ) {
        let ct = req
            .headers
            .get(&HeaderName::ContentType)
            .and_then(|h| h.value().ok().map(|v| v.into_owned()))
            .unwrap_or_default();
        let multipart = match Multipart::parse_with_content_type(&ct, req.body.clone()) {
            Ok(m) => m,
            Err(e) => return self.refuse(now, &key, &req, e.into()),
        };
        let mut list = None;
        let mut message = None;
        for part in &multipart.parts {
            let pct = part
                .content_type()
                .map(mime::media_type)
                .unwrap_or_default();
            if pct == mime::APPLICATION_RESOURCE_LISTS_XML && list.is_none() {
                list = Some(ResourceList::parse(&part.body));
            } else if message.is_none() && pct != mime::APPLICATION_RESOURCE_LISTS_XML {
                message = Some(part.clone());
            }
        }
        let (Some(list), Some(message)) = (list, message) else {
            return self.refuse(now, &key, &req, Refusal::ListAndMessageRequired);
        };
        let list = match list {
            Ok(l) => l,
            Err(e) => return self.refuse(now, &key, &req, e.into()),
        };
        let message_ct = message.content_type().unwrap_or("text/plain").to_owned();
        let mut single = req.clone();
        single.body = message.body;
        single.headers.set(HeaderName::ContentType, &message_ct);
        let Ok(single) = self.vouch_cpim_from(single, sender_uri) else {
            return self.refuse(now, &key, &req, Refusal::CpimFromNotSender);
        };
        let body = match MessageBody::parse(&single) {
            Ok(b) => b,
            Err(r) => return self.refuse(now, &key, &req, r),
        };
        let mut recipients: Vec<(String, Uri)> = Vec::new();
        for e in &list.entries {
            let Ok(uri) = Uri::parse(&e.uri) else {
                return self.refuse(now, &key, &req, Refusal::BadRecipientUri);
            };
            let Some(aor) = aor_of(&uri) else {
                return self.refuse(now, &key, &req, Refusal::BadRecipientUri);
            };
            if !recipients.iter().any(|(a, _)| *a == aor) {
                recipients.push((aor, uri));
            }
        }
        if recipients.is_empty() {
            return self.refuse(now, &key, &req, Refusal::EmptyRecipientList);
        }
        if self.jobs.len() >= self.cfg.max_in_progress {
            return self.refuse(now, &key, &req, Refusal::Overloaded);
        }
        let message_id = body.message_id(&req);
        let mut outs = Vec::with_capacity(recipients.len());
        let mut records = Vec::with_capacity(recipients.len());
        for (aor, uri) in recipients {
            // One Conversation-ID for the set, one Contribution-ID per exploded message.
            let copy_ids = ConversationIds {
                conversation: ids.conversation.clone(),
                contribution: derived_uuid(&[&ids.contribution, &aor]),
                in_reply_to: ids.in_reply_to.clone(),
            };
            let mut out = self.onward(&single, &copy_ids, uri.clone(), Some(&aor));
            out.headers.remove_all(&HeaderName::Require);
            out.headers.set(HeaderName::PAssertedService, ICSI_MSG);
            out.headers
                .set(HeaderName::AcceptContact, &accept_contact(ICSI_MSG));
            outs.push((aor.clone(), out));
            records.push(MessageRecord {
                owner: sender.to_owned(),
                direction: Direction::Sent,
                peer: aor,
                conversation_id: copy_ids.conversation,
                contribution_id: copy_ids.contribution,
                in_reply_to: copy_ids.in_reply_to,
                message_id: message_id.clone(),
                sender: sender_uri.to_string(),
                recipient: uri.to_string(),
                content_type: body.content_type.clone(),
                body: single.body.to_vec(),
                disposition: body.disposition.clone(),
                created_at_ms: unix,
                expires_at_ms: None,
                state: DeliveryState::Pending,
                state_at_ms: unix,
            });
        }
        self.stats.messages_sent += records.len() as u64;
        let template = records[0].clone();
        let job = self.new_job(
            key,
            req,
            JobKind::OrigList {
                outs,
                record: template,
            },
            records.len(),
        );
        for r in records {
            self.store(OpPurpose::Job(job), StoreOp::AppendMessage(r));
        }
    }

    /// A copy of a sender's message failed for one recipient: record it, and tell the
    /// sender with a failure IMDN when asked to.
    pub(super) fn sender_failed(&mut self, now: Instant, record: &MessageRecord, unix: u64) {
        self.mark(
            &record.owner,
            &record.peer,
            Direction::Sent,
            &record.message_id,
            DeliveryState::Failed,
            unix,
        );
        if record.disposition.iter().any(|d| d == "negative-delivery") {
            // Straight to the sender's devices: its record is already updated.
            let to = Uri::parse(&record.sender).ok();
            let from = Uri::parse(&record.recipient).ok();
            if let (Some(to), Some(from)) = (to, from) {
                self.send_failure_imdn(now, &from, &to, record, None);
            }
        }
    }
}
