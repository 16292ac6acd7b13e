//! What the PF reads from a MESSAGE (RFC 3428, RFC 3862 CPIM, RFC 5438 IMDN; PROTOCOL.md
//! 2.1): the asserted identity (RFC 3325), the CPM identifiers, and the body's kind.

use cpm_content::{Cpim, Disposition, Imdn, mime};
use cpm_sip::{HeaderName, Request, Uri};

use super::Refusal;
use crate::ids::{aor_of, derived_uuid};

/// Whether a CPIM body names `aor` as its sender and nobody else: exactly one header line
/// called `From` (in any namespace, under any prefix: some reader would show each), in the
/// CPIM namespace, whose URI is `aor`.
pub(super) fn names_only(cpim: &Cpim, aor: &str) -> bool {
    let froms = cpim
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("From"))
        .count();
    froms == 1
        && cpim
            .from()
            .ok()
            .flatten()
            .and_then(|a| Uri::parse(&a.uri).ok())
            .and_then(|u| aor_of(&u))
            .is_some_and(|n| n.eq_ignore_ascii_case(aor))
}

/// The first P-Asserted-Identity SIP URI (set by the core, RFC 3325).
pub(super) fn asserted_identity(req: &Request) -> Option<Uri> {
    req.headers
        .p_asserted_identity()
        .ok()?
        .into_iter()
        .map(|a| a.uri)
        .find(|u| matches!(u, Uri::Sip(_)))
}

/// `Conversation-ID`, `Contribution-ID` and `InReplyTo-Contribution-ID` of a request, the
/// first two created (derived from the Call-ID) when missing.
#[derive(Clone, Debug)]
pub(super) struct ConversationIds {
    pub(super) conversation: String,
    pub(super) contribution: String,
    pub(super) in_reply_to: Option<String>,
}

impl ConversationIds {
    pub(super) fn of(req: &Request) -> Self {
        let call_id = req
            .headers
            .call_id()
            .ok()
            .flatten()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let conversation = req
            .headers
            .conversation_id()
            .ok()
            .flatten()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| derived_uuid(&[&call_id, "conversation"]));
        let contribution = req
            .headers
            .contribution_id()
            .ok()
            .flatten()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| derived_uuid(&[&call_id, "contribution"]));
        let in_reply_to = req
            .headers
            .in_reply_to_contribution_id()
            .ok()
            .flatten()
            .filter(|s| !s.is_empty());
        Self {
            conversation,
            contribution,
            in_reply_to,
        }
    }
}

/// What the PF needs from a MESSAGE body.
#[derive(Debug)]
pub(super) struct MessageBody {
    pub(super) content_type: String,
    /// `imdn.Message-ID` of a CPIM body.
    pub(super) message_id: Option<String>,
    pub(super) disposition: Vec<String>,
    /// The body is a notification.
    pub(super) imdn: Option<Imdn>,
    /// The size of the message content: the body inside CPIM, else the whole body.
    pub(super) content_len: usize,
}

impl MessageBody {
    /// Parses the body as far as the PF needs: a CPIM body must be valid CPIM (400), an IMDN
    /// inside must be valid IMDN (400).
    pub(super) fn parse(req: &Request) -> Result<Self, Refusal> {
        let content_type = req
            .headers
            .get(&HeaderName::ContentType)
            .and_then(|h| h.value().ok().map(|v| v.trim().to_owned()))
            .unwrap_or_default();
        if req.body.is_empty() {
            return Err(Refusal::EmptyMessage);
        }
        let media = mime::media_type(&content_type);
        if media == mime::MESSAGE_CPIM {
            let cpim = Cpim::parse(req.body.clone())?;
            let inner = cpim
                .content_type()
                .map(mime::media_type)
                .unwrap_or_default();
            let imdn = if inner == mime::MESSAGE_IMDN_XML {
                Some(Imdn::parse(&cpim.body)?)
            } else {
                None
            };
            let disposition = cpim
                .disposition_notification()
                .iter()
                .map(|d| d.as_str().to_ascii_lowercase())
                .filter(|d| !matches!(Disposition::parse(d), Disposition::Other(_)))
                .collect();
            Ok(Self {
                content_type,
                message_id: cpim.message_id().map(str::to_owned),
                disposition,
                imdn,
                content_len: cpim.body.len(),
            })
        } else if media == mime::MESSAGE_IMDN_XML {
            let imdn = Imdn::parse(&req.body)?;
            Ok(Self {
                content_type,
                message_id: None,
                disposition: Vec::new(),
                imdn: Some(imdn),
                content_len: req.body.len(),
            })
        } else {
            Ok(Self {
                content_type: if content_type.is_empty() {
                    "text/plain".to_owned()
                } else {
                    content_type
                },
                message_id: None,
                disposition: Vec::new(),
                imdn: None,
                content_len: req.body.len(),
            })
        }
    }

    /// The message's identity for the history: `imdn.Message-ID`, or one derived from the
    /// Call-ID and CSeq (a retransmission gets the same one).
    pub(super) fn message_id(&self, req: &Request) -> String {
        if let Some(id) = &self.message_id {
            return id.clone();
        }
        let call_id = req
            .headers
            .call_id()
            .ok()
            .flatten()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let cseq = req
            .headers
            .get(&HeaderName::CSeq)
            .and_then(|h| h.value().ok().map(|v| v.into_owned()))
            .unwrap_or_default();
        derived_uuid(&[&call_id, &cseq, "message-id"])
    }
}
