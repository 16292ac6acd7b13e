//! Receiving: a pager MESSAGE or a message read off a session, as CPIM (RFC 3862), with
//! duplicate suppression by `imdn.Message-ID`, and the notifications (RFC 5438) it asks for,
//! sent back in its session while that lasts, else by pager MESSAGE.

use std::time::Instant;

use bytes::Bytes;
use cpm_content::{
    Cpim, CpimAddress, CpimBuilder, DeliveryStatus, Disposition, Imdn, Notification, mime,
};
use cpm_sip::{Header, HeaderName, Method, Request, StatusCode, Uri};
use cpm_sip_core::transaction::ServerKey;

use super::{
    Client, DEDUP_CAPACITY, DISPLAY_CAPACITY, Event, ICSI_MSG, Purpose, ReceivedImdn,
    ReceivedMessage, SessionId, add_icsi_headers, aor_of, set_body,
};
use crate::time::rfc3339_ms;

/// Where the notifications about a received message go.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    /// The sender's URI.
    sender: String,
    /// The recipient URI the message named us by.
    recipient: String,
    conversation_id: Option<String>,
    contribution_id: Option<String>,
    /// The session the message came in, if any: its notifications go back in it while it
    /// lasts (RFC 5438 section 7.1.1.2 over MSRP), else by pager MESSAGE.
    session: Option<SessionId>,
}

/// What the transport of a received CPIM message says about it (SIP headers of a MESSAGE,
/// or of the INVITE that set up the session).
#[derive(Clone, Debug)]
pub(crate) struct Inbound {
    /// The SIP From (of the MESSAGE or INVITE).
    pub(crate) sip_from: String,
    /// The SIP To.
    pub(crate) sip_to: String,
    /// The id when the CPIM has no `imdn.Message-ID`: the Call-ID, or the MSRP Message-ID.
    pub(crate) fallback_id: String,
    pub(crate) conversation_id: Option<String>,
    pub(crate) contribution_id: Option<String>,
    pub(crate) deferred: bool,
    pub(crate) session: Option<SessionId>,
}

/// A received CPIM message, read.
#[derive(Debug)]
pub(crate) enum Received {
    /// Seen before (same `imdn.Message-ID`): answered, not reported again.
    Duplicate,
    /// A disposition notification.
    Imdn(ReceivedImdn),
    /// A message, with where its notifications go (when it has an `imdn.Message-ID`) and
    /// whether it asked for a delivery notification.
    Message {
        message: Box<ReceivedMessage>,
        origin: Option<(String, Origin)>,
        delivery: bool,
    },
}

impl Client {
    /// Remembers a received id; false if it was seen before (a duplicate).
    pub(super) fn remember(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.seen_order.len() >= DEDUP_CAPACITY
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.to_owned());
        self.seen_order.push_back(id.to_owned());
        true
    }

    pub(super) fn on_message(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        let h = &req.headers;
        let call_id = h.call_id().ok().flatten().map(|c| c.0).unwrap_or_default();
        let sip_from = h
            .from()
            .ok()
            .flatten()
            .map(|a| a.uri.to_string())
            .unwrap_or_default();
        let sip_to = h
            .to()
            .ok()
            .flatten()
            .map(|a| a.uri.to_string())
            .unwrap_or_default();
        let content_type = h.content_type().ok().flatten();
        let conversation_id = h.conversation_id().ok().flatten();
        let contribution_id = h.contribution_id().ok().flatten();
        let deferred = h
            .get_all(&HeaderName::AcceptContact)
            .chain(h.get_all(&HeaderName::PAssertedService))
            .any(|x| {
                String::from_utf8_lossy(x.value_bytes())
                    .to_ascii_lowercase()
                    .contains("oma.cpm.deferred")
            });
        let is_cpim = content_type
            .as_ref()
            .is_some_and(|c| c.is("message", "cpim"));
        if !is_cpim {
            // A plain SIP MESSAGE (text/plain from baresip, ...): the SIP headers are all the
            // metadata there is, and the Call-ID is the only id.
            let ok = self.remember(&format!("call-id:{call_id}"));
            self.respond(now, key, req, StatusCode::OK, None, &[]);
            if ok {
                self.events
                    .push_back(Event::Message(Box::new(ReceivedMessage {
                        from: aor_of(&sip_from),
                        to: aor_of(&sip_to),
                        recipients: vec![aor_of(&sip_to)],
                        text: String::from_utf8_lossy(&req.body).into_owned(),
                        content_type: content_type
                            .map_or_else(|| "text/plain".to_owned(), |c| c.to_string()),
                        conversation_id,
                        contribution_id,
                        message_id: call_id,
                        date_time: None,
                        deferred,
                        display_requested: false,
                    })));
            }
            return;
        }
        let ctx = Inbound {
            sip_from,
            sip_to,
            fallback_id: call_id,
            conversation_id,
            contribution_id,
            deferred,
            session: None,
        };
        match self.read_cpim(req.body.clone(), ctx) {
            Ok(received) => {
                self.respond(now, key, req, StatusCode::OK, None, &[]);
                self.take_received(now, received);
            }
            Err((status, reason)) => {
                let status = StatusCode::new(status).unwrap_or(StatusCode::BAD_REQUEST);
                self.respond(now, key, req, status, Some(reason), &[]);
            }
        }
    }

    /// Reads a received CPIM message (RFC 3862), from a pager MESSAGE or an MSRP session:
    /// a notification (RFC 5438 section 7: `message/imdn+xml` or `Content-Disposition:
    /// notification`) or a message, remembered by its `imdn.Message-ID` for duplicate
    /// suppression. The error is the status to answer with (400/413/415) and its reason.
    pub(crate) fn read_cpim(
        &mut self,
        body: Bytes,
        ctx: Inbound,
    ) -> Result<Received, (u16, &'static str)> {
        let cpim = Cpim::parse(body).map_err(|e| (e.status(), e.reason_phrase()))?;
        let inner_type = cpim.content_type().unwrap_or("text/plain").to_owned();
        let notification = mime::media_type(&inner_type) == mime::MESSAGE_IMDN_XML
            || cpim
                .content_header("Content-Disposition")
                .is_some_and(|d| d.trim().to_ascii_lowercase().starts_with("notification"));
        let from = cpim.from().ok().flatten().map_or(ctx.sip_from, |a| a.uri);
        let dedup = cpim
            .message_id()
            .map_or_else(|| format!("call-id:{}", ctx.fallback_id), str::to_owned);
        if notification {
            let imdn = Imdn::parse(&cpim.body).map_err(|e| (e.status(), e.reason_phrase()))?;
            if !self.remember(&dedup) {
                return Ok(Received::Duplicate);
            }
            return Ok(Received::Imdn(ReceivedImdn {
                from: aor_of(&from),
                message_id: imdn.message_id,
                notification: imdn.notification,
                datetime: imdn.datetime,
                recipient: imdn.recipient_uri,
            }));
        }
        if !self.remember(&dedup) {
            return Ok(Received::Duplicate);
        }
        let to_uris: Vec<String> = cpim
            .to_all()
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.uri)
            .collect();
        let own = aor_of(&self.own_uri);
        let recipient_uri = to_uris
            .iter()
            .find(|u| aor_of(u) == own)
            .or_else(|| to_uris.first())
            .cloned()
            .unwrap_or(ctx.sip_to);
        let dispositions = cpim.disposition_notification();
        let message_id = cpim.message_id().map(str::to_owned);
        let display_requested =
            message_id.is_some() && dispositions.contains(&Disposition::Display);
        let message = ReceivedMessage {
            from: aor_of(&from),
            to: aor_of(&recipient_uri),
            recipients: if to_uris.is_empty() {
                vec![aor_of(&recipient_uri)]
            } else {
                to_uris.iter().map(|u| aor_of(u)).collect()
            },
            text: String::from_utf8_lossy(&cpim.body).into_owned(),
            content_type: inner_type,
            conversation_id: ctx.conversation_id.clone(),
            contribution_id: ctx.contribution_id.clone(),
            message_id: message_id.clone().unwrap_or(ctx.fallback_id),
            date_time: cpim.date_time().map(str::to_owned),
            deferred: ctx.deferred,
            display_requested,
        };
        let origin = message_id.map(|id| {
            (
                id,
                Origin {
                    sender: from,
                    recipient: recipient_uri,
                    conversation_id: ctx.conversation_id,
                    contribution_id: ctx.contribution_id,
                    session: ctx.session,
                },
            )
        });
        Ok(Received::Message {
            message: Box::new(message),
            origin,
            delivery: dispositions.contains(&Disposition::PositiveDelivery),
        })
    }

    /// Hands a received message or notification to the application, sends the delivery
    /// notification the sender asked for (RFC 5438 section 5.1: `positive-delivery`), and
    /// remembers a display request for [`Client::send_displayed`].
    pub(crate) fn take_received(&mut self, now: Instant, received: Received) {
        let (message, origin, delivery) = match received {
            Received::Duplicate => return,
            Received::Imdn(i) => {
                self.events.push_back(Event::Imdn(Box::new(i)));
                return;
            }
            Received::Message {
                message,
                origin,
                delivery,
            } => (message, origin, delivery),
        };
        let display_requested = message.display_requested;
        self.events.push_back(Event::Message(message));
        let Some((message_id, origin)) = origin else {
            return;
        };
        if delivery {
            self.send_notification(
                now,
                &origin,
                &message_id,
                Notification::Delivery(DeliveryStatus::Delivered),
            );
        }
        if display_requested {
            if self.display_order.len() >= DISPLAY_CAPACITY
                && let Some(old) = self.display_order.pop_front()
            {
                self.display_requests.remove(&old);
            }
            self.display_order.push_back(message_id.clone());
            self.display_requests.insert(message_id, origin);
        }
    }

    /// Sends an IMDN about `message_id` to its sender: a pager MESSAGE with CPIM wrapping
    /// `message/imdn+xml` (RFC 5438 section 7), in the original's conversation.
    pub(super) fn send_notification(
        &mut self,
        now: Instant,
        origin: &Origin,
        message_id: &str,
        notification: Notification,
    ) {
        let datetime = rfc3339_ms(self.unix_ms(now));
        let xml = Imdn {
            message_id: message_id.to_owned(),
            datetime: datetime.clone(),
            recipient_uri: Some(self.own_uri.clone()),
            original_recipient_uri: Some(origin.recipient.clone()),
            notification,
        }
        .to_xml();
        let Ok(cpim) = CpimBuilder::new()
            .from(&CpimAddress::new(self.own_uri.clone()))
            .to(&CpimAddress::new(origin.sender.clone()))
            .date_time(datetime)
            .message_id(self.rng.token(16))
            .content_type(mime::MESSAGE_IMDN_XML)
            .content_header("Content-Disposition", "notification")
            .body(xml)
            .build()
        else {
            // Only a sender URI with a line break could fail here; such a message gets no
            // notification.
            return;
        };
        // In the session the message came in, while it lasts (RFC 5438 section 7.1.1.2 over
        // MSRP); else a pager MESSAGE.
        if let Some(session) = origin.session
            && self.notify_in_session(
                now,
                session,
                cpim.to_bytes(),
                Purpose::Notification {
                    to: aor_of(&origin.sender),
                    message_id: message_id.to_owned(),
                    notification,
                },
                Origin {
                    session: None,
                    ..origin.clone()
                },
            )
        {
            return;
        }
        let call_id = self.rng.hex(24);
        let from_tag = self.rng.hex(12);
        let sender = origin.sender.clone();
        let Ok(uri) = Uri::parse(&sender) else {
            return;
        };
        let mut req = self.request(
            Method::Message,
            uri,
            &format!("<{sender}>"),
            &call_id,
            &from_tag,
            1,
        );
        add_icsi_headers(&mut req, ICSI_MSG);
        let conversation = origin
            .conversation_id
            .clone()
            .unwrap_or_else(|| self.rng.uuid());
        let contribution = origin
            .contribution_id
            .clone()
            .unwrap_or_else(|| self.rng.uuid());
        req.headers
            .push(Header::new(HeaderName::ConversationId, &conversation));
        req.headers
            .push(Header::new(HeaderName::ContributionId, &contribution));
        set_body(&mut req, mime::MESSAGE_CPIM, cpim.to_bytes());
        if !self.registered {
            self.preauthorize(&mut req, true);
        }
        self.start(
            now,
            req,
            Purpose::Notification {
                to: aor_of(&sender),
                message_id: message_id.to_owned(),
                notification,
            },
        );
    }
}
