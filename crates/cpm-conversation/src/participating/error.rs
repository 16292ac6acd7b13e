//! Why the PF refuses a request, and the answer each reason gets on the wire (STYLE.md 3.1
//! rule 5: the mapping is code). Every flow refuses through [`Refusal`]: its
//! [`Refusal::status`] is the status code and reason phrase, and
//! `ParticipatingFunction::refuse` is the one place that builds the response (and adds the
//! headers some refusals carry: `Retry-After` for overload, `Allow` for a method).

use std::time::Instant;

use cpm_content::ContentError;
use cpm_sip::{Header, HeaderName, Request, StatusCode};
use cpm_sip_core::transaction::{ServerKey, response_to};
use cpm_store::QuotaExceeded;

use super::{ALLOW, Job, ParticipatingFunction};

/// Why the PF refuses a request (an error response it generates itself, RFC 3261 8.2).
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The Route header cannot be read: `400 Bad Route`.
    #[error("the Route header cannot be read")]
    BadRoute,
    /// A MESSAGE whose Route names no CPM phase did not come through the core: `403 Not
    /// Routed By The SIP/IP Core`.
    #[error("the request was not routed by the SIP/IP Core")]
    NotRoutedByCore,
    /// A method the PF does not serve: `405 Method Not Allowed` with `Allow`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A third-party REGISTER whose To is not a SIP AOR: `400 To Must Be A SIP AOR`.
    #[error("the To of the REGISTER is not a SIP AOR")]
    RegisterToNotAor,
    /// [`PfConfig::max_in_progress`](super::PfConfig::max_in_progress) requests are in
    /// progress already: `503 Overloaded` with `Retry-After: 5`.
    #[error("too many requests in progress")]
    Overloaded,
    /// An originating request without an asserted SIP identity (RFC 3325): `403 No Asserted
    /// Identity`.
    #[error("no asserted identity")]
    NoAssertedIdentity,
    /// A CPIM body whose `From` cannot be made to name the sender: `403 CPIM From Is Not The
    /// Sender`.
    #[error("the CPIM From is not the sender")]
    CpimFromNotSender,
    /// An originating request whose Request-URI is not a SIP AOR: `404 Recipient Is Not A SIP
    /// AOR`.
    #[error("the recipient is not a SIP AOR")]
    RecipientNotAor,
    /// A terminating request whose Request-URI (the served user) is not a SIP AOR: `404 Not
    /// A SIP AOR`.
    #[error("the served user is not a SIP AOR")]
    UserNotAor,
    /// A terminating request with neither an asserted identity nor a From: `400 No Sender`.
    #[error("no sender")]
    NoSender,
    /// A MESSAGE without a body: `400 Empty Message`.
    #[error("empty message")]
    EmptyMessage,
    /// A body that does not parse (CPIM, IMDN, multipart, resource list): the status
    /// [`ContentError::status`] gives, with its reason phrase.
    #[error("bad body: {0}")]
    BadBody(#[from] ContentError),
    /// A 1-N request (RFC 5365) without both a resource list and a message: `400 Recipient
    /// List And Message Required`.
    #[error("a recipient list and a message are required")]
    ListAndMessageRequired,
    /// A recipient of a 1-N request that is not a SIP AOR: `400 Bad Recipient URI`.
    #[error("bad recipient URI")]
    BadRecipientUri,
    /// A 1-N request whose list names nobody: `400 Empty Recipient List`.
    #[error("empty recipient list")]
    EmptyRecipientList,
    /// The message alone is larger than a deferred queue: `413 Message Too Large For The
    /// Deferred Queue`.
    #[error("message too large for the deferred queue")]
    TooLargeForQueue,
    /// The sender's share of the recipient's deferred queue is used up: `486 Too Many
    /// Deferred Messages From You`.
    #[error("too many deferred messages from the sender")]
    SenderShareFull,
    /// The recipient's deferred queue is full (messages or bytes): `486 Recipient Deferred
    /// Queue Full`.
    #[error("the recipient's deferred queue is full")]
    DeferredQueueFull,
    /// A store operation of the request failed: `500 Storage Failure`.
    #[error("storage failure")]
    StorageFailure,
    /// The onward request could not be sent: `500 Cannot Send`.
    #[error("cannot send the onward request")]
    CannotSend,
    /// A session INVITE while the node runs no MSRP listener: `488 Sessions Not Served`.
    #[error("sessions are not served")]
    SessionsNotServed,
    /// A session INVITE without an SDP body (RFC 3264): `415 Session Needs SDP` (a
    /// multipart INVITE carrying the first message is not served yet).
    #[error("a session INVITE needs an SDP offer")]
    SessionNeedsSdp,
    /// An SDP offer that does not parse or cannot be answered: its status (400, 415, 488)
    /// and reason.
    #[error("bad SDP: {1}")]
    BadSdp(u16, &'static str),
    /// An SDP offer without an MSRP media line: `488 No MSRP Media`.
    #[error("no MSRP media in the offer")]
    NoMsrpMedia,
    /// An in-dialog request (or CANCEL) for no session of ours: `481 Call/Transaction Does
    /// Not Exist` (RFC 3261 12.2.2).
    #[error("no such dialog")]
    NoSuchDialog,
    /// A pager MESSAGE over 1,300 octets (OMA CPM 5.2.2: larger messages go in Large
    /// Message Mode): `413 Use Large Message Mode`.
    #[error("pager message too large")]
    PagerTooLarge,
}

impl Refusal {
    /// The status code and reason phrase of the answer.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRoute => (StatusCode::BAD_REQUEST, "Bad Route"),
            Self::NotRoutedByCore => (StatusCode::FORBIDDEN, "Not Routed By The SIP/IP Core"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
            Self::RegisterToNotAor => (StatusCode::BAD_REQUEST, "To Must Be A SIP AOR"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "Overloaded"),
            Self::NoAssertedIdentity => (StatusCode::FORBIDDEN, "No Asserted Identity"),
            Self::CpimFromNotSender => (StatusCode::FORBIDDEN, "CPIM From Is Not The Sender"),
            Self::RecipientNotAor => (StatusCode::NOT_FOUND, "Recipient Is Not A SIP AOR"),
            Self::UserNotAor => (StatusCode::NOT_FOUND, "Not A SIP AOR"),
            Self::NoSender => (StatusCode::BAD_REQUEST, "No Sender"),
            Self::EmptyMessage => (StatusCode::BAD_REQUEST, "Empty Message"),
            Self::BadBody(e) => (
                StatusCode::new(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                e.reason_phrase(),
            ),
            Self::ListAndMessageRequired => (
                StatusCode::BAD_REQUEST,
                "Recipient List And Message Required",
            ),
            Self::BadRecipientUri => (StatusCode::BAD_REQUEST, "Bad Recipient URI"),
            Self::EmptyRecipientList => (StatusCode::BAD_REQUEST, "Empty Recipient List"),
            Self::TooLargeForQueue => (
                StatusCode::REQUEST_ENTITY_TOO_LARGE,
                "Message Too Large For The Deferred Queue",
            ),
            Self::SenderShareFull => (StatusCode::BUSY_HERE, "Too Many Deferred Messages From You"),
            Self::DeferredQueueFull => (StatusCode::BUSY_HERE, "Recipient Deferred Queue Full"),
            Self::StorageFailure => (StatusCode::SERVER_INTERNAL_ERROR, "Storage Failure"),
            Self::CannotSend => (StatusCode::SERVER_INTERNAL_ERROR, "Cannot Send"),
            Self::SessionsNotServed => (StatusCode::NOT_ACCEPTABLE_HERE, "Sessions Not Served"),
            Self::SessionNeedsSdp => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Session Needs SDP"),
            Self::BadSdp(status, reason) => (
                StatusCode::new(*status).unwrap_or(StatusCode::NOT_ACCEPTABLE_HERE),
                reason,
            ),
            Self::NoMsrpMedia => (StatusCode::NOT_ACCEPTABLE_HERE, "No MSRP Media"),
            Self::NoSuchDialog => (
                StatusCode::CALL_DOES_NOT_EXIST,
                "Call/Transaction Does Not Exist",
            ),
            Self::PagerTooLarge => (
                StatusCode::REQUEST_ENTITY_TOO_LARGE,
                "Use Large Message Mode",
            ),
        }
    }
}

/// The store's refusal to queue a message (its deferred queue has no room for it).
impl From<QuotaExceeded> for Refusal {
    fn from(q: QuotaExceeded) -> Self {
        match q {
            QuotaExceeded::MessageTooLarge => Self::TooLargeForQueue,
            QuotaExceeded::SenderMessages => Self::SenderShareFull,
            QuotaExceeded::RecipientMessages | QuotaExceeded::RecipientBytes => {
                Self::DeferredQueueFull
            }
        }
    }
}

impl ParticipatingFunction {
    /// Refuses the request of server transaction `key`: the one place a [`Refusal`] becomes
    /// a response.
    pub(super) fn refuse(&mut self, now: Instant, key: &ServerKey, req: &Request, r: Refusal) {
        self.stats.rejected += 1;
        let (status, reason) = r.status();
        let tag = self.tag();
        let mut resp = response_to(req, status, Some(&tag));
        resp.reason = reason.to_owned();
        match r {
            Refusal::Overloaded => resp.headers.push(Header::new(HeaderName::RetryAfter, "5")),
            Refusal::MethodNotAllowed => resp.headers.push(Header::new(HeaderName::Allow, ALLOW)),
            _ => {}
        }
        let _ = self.tx.respond_owned(now, key, resp);
    }
    /// Passes the failure a downstream leg answered back upstream: the downstream status and
    /// reason, not a refusal of ours (no headers added), but counted with them.
    pub(super) fn relay_failure(
        &mut self,
        now: Instant,
        job: &Job,
        status: StatusCode,
        reason: &str,
    ) {
        // RFC 3261 16.7 step 6 spirit: 503 from downstream is not passed on as 503.
        let status = if status == StatusCode::SERVICE_UNAVAILABLE {
            StatusCode::SERVER_INTERNAL_ERROR
        } else {
            status
        };
        self.stats.rejected += 1;
        let tag = self.tag();
        let mut resp = response_to(&job.req, status, Some(&tag));
        resp.reason = reason.to_owned();
        let _ = self.tx.respond_owned(now, &job.server, resp);
    }
}
