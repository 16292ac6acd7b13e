//! IMDN (RFC 5438; outline section Messaging): notifications passing through update the
//! message's state in the served user's history before they are sent on, and the failure
//! notifications the PF generates itself (a 1-N copy refused, a deferred message expired).

use std::time::Instant;

use cpm_content::{
    CpimAddress, CpimBuilder, DeliveryStatus, DisplayStatus, Imdn, Notification, mime,
};
use cpm_sip::{Header, HeaderName, Method, Request, Uri};
use cpm_sip_core::transaction::ServerKey;
use cpm_store::{DeliveryState, Direction, MessageRecord, StoreOp};

use super::{BRANCH_PREFIX, ClientPurpose, JobKind, OpPurpose, ParticipatingFunction};
use crate::ids::{ICSI_MSG, accept_contact, derived_uuid, rfc3339};

impl ParticipatingFunction {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn imdn_job(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        out: Request,
        owner: &str,
        peer: &str,
        direction: Direction,
        imdn: &Imdn,
    ) {
        let _ = now;
        self.stats.imdns += 1;
        let state = match imdn.notification {
            Notification::Delivery(DeliveryStatus::Delivered) => Some(DeliveryState::Delivered),
            Notification::Display(DisplayStatus::Displayed) => Some(DeliveryState::Displayed),
            Notification::Delivery(
                DeliveryStatus::Failed | DeliveryStatus::Forbidden | DeliveryStatus::Error,
            ) => Some(DeliveryState::Failed),
            _ => None,
        };
        let job = self.new_job(key, req, JobKind::Imdn { out }, 1);
        let at_ms = self.unix_ms(now);
        match state {
            Some(state) => {
                self.store(
                    OpPurpose::Job(job),
                    StoreOp::UpdateState {
                        owner: owner.to_owned(),
                        peer: Some(peer.to_owned()),
                        direction: Some(direction),
                        message_id: imdn.message_id.clone(),
                        state,
                        at_ms,
                    },
                );
            }
            None => {
                // Nothing to record (a processing notification): pass it on at once.
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.waiting = 0;
                }
                self.job_stored(now, job);
            }
        }
    }

    pub(super) fn send_failure_imdn(
        &mut self,
        now: Instant,
        from: &Uri,
        to: &Uri,
        r: &MessageRecord,
        route: Option<&str>,
    ) {
        let unix = self.unix_ms(now);
        let imdn = Imdn {
            message_id: r.message_id.clone(),
            datetime: rfc3339(r.created_at_ms),
            recipient_uri: Some(from.to_string()),
            original_recipient_uri: Some(from.to_string()),
            notification: Notification::Delivery(DeliveryStatus::Failed),
        };
        let notice_id = derived_uuid(&[&r.message_id, &r.owner, &r.peer, "failed"]);
        let cpim = CpimBuilder::new()
            .from(&CpimAddress::new(from.to_string()))
            .to(&CpimAddress::new(to.to_string()))
            .date_time(rfc3339(unix))
            .message_id(notice_id)
            .content_type(mime::MESSAGE_IMDN_XML)
            .content_header("Content-Disposition", "notification")
            .body(imdn.to_xml())
            .build();
        let Ok(cpim) = cpim else {
            return;
        };
        let body = cpim.to_bytes();
        let mut out = Request::new(Method::Message, to.clone());
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
        if let Some(route) = route {
            h.push(Header::new(HeaderName::Route, route));
        }
        h.push(Header::new(HeaderName::MaxForwards, "70"));
        h.push(Header::new(
            HeaderName::From,
            &format!("<{from}>;tag={tag}"),
        ));
        h.push(Header::new(HeaderName::To, &format!("<{to}>")));
        let call_id = derived_uuid(&[&r.message_id, &r.owner, &r.peer, "imdn-failed"]);
        h.push(Header::new(
            HeaderName::CallId,
            &format!("{call_id}@{}", self.cfg.address.ip()),
        ));
        h.push(Header::new(HeaderName::CSeq, "1 MESSAGE"));
        h.push(Header::new(
            HeaderName::PAssertedIdentity,
            &format!("<{from}>"),
        ));
        h.push(Header::new(HeaderName::PAssertedService, ICSI_MSG));
        h.push(Header::new(
            HeaderName::AcceptContact,
            &accept_contact(ICSI_MSG),
        ));
        h.push(Header::new(HeaderName::ConversationId, &r.conversation_id));
        h.push(Header::new(
            HeaderName::ContributionId,
            &derived_uuid(&[&r.contribution_id, "imdn-failed"]),
        ));
        h.push(Header::new(HeaderName::ContentType, mime::MESSAGE_CPIM));
        h.push(Header::new(
            HeaderName::ContentLength,
            &body.len().to_string(),
        ));
        out.body = body;
        let dest = self.core_peer();
        if let Ok(ckey) = self.tx.send_request(now, out, dest) {
            self.clients.insert(ckey, ClientPurpose::Notice);
        }
    }
}
