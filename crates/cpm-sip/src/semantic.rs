//! Message-level request validation that does not depend on the element's role
//! (RFC 3261 section 8.2.2-8.2.3 for a UAS, 16.3 steps 1-2 for a proxy).
//!
//! Role-dependent checks (Max-Forwards 483, Proxy-Require 420, URI scheme 416, Content-Type
//! 415, authentication) belong to the element that knows its role: the SIP/IP Core and the
//! user agents.

use crate::error::HeaderError;
use crate::header::HeaderName;
use crate::message::{Request, Version};
use crate::status::StatusCode;

/// Why a request is refused, and the response it gets.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Rejection {
    /// The status code to answer with.
    pub status: StatusCode,
    /// A reason phrase that says what was wrong.
    pub reason: String,
}

impl Rejection {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

impl From<HeaderError> for Rejection {
    fn from(e: HeaderError) -> Self {
        let reason = match e {
            HeaderError::Multiple(h) => format!("Multiple {h} Values"),
            HeaderError::Malformed(h) => format!("Bad {h}"),
        };
        Self::new(StatusCode::BAD_REQUEST, reason)
    }
}

/// Checks what every RFC 3261 element checks before acting on a request:
///
/// * the version is SIP/2.0, else `505` (RFC 4475 section 3.1.2.16);
/// * To, From, Call-ID, CSeq and Via are present, else `400` (RFC 3261 section 8.1.1,
///   RFC 4475 section 3.3.1);
/// * To, From, Call-ID, CSeq, Max-Forwards and Content-Length appear once, else `400`
///   (RFC 4475 sections 3.3.8 and 3.3.9);
/// * the CSeq method equals the request method, else `400` (RFC 4475 sections 3.1.2.17-18).
pub fn check_request(req: &Request) -> Result<(), Rejection> {
    if req.version != Version::SIP_2_0 {
        return Err(Rejection::new(
            StatusCode::VERSION_NOT_SUPPORTED,
            "Version Not Supported",
        ));
    }
    let h = &req.headers;
    for (name, label) in [
        (HeaderName::To, "To"),
        (HeaderName::From, "From"),
        (HeaderName::CallId, "Call-ID"),
        (HeaderName::CSeq, "CSeq"),
        (HeaderName::Via, "Via"),
    ] {
        if !h.contains(&name) {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("Missing {label} Header"),
            ));
        }
    }
    h.to()?;
    h.from()?;
    h.call_id()?;
    h.max_forwards()?;
    h.content_length()?;
    h.via()?;
    // Invariant: CSeq is present (checked above) and single (the accessor checks).
    let Some(cseq) = h.cseq()? else {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "Missing CSeq Header",
        ));
    };
    if cseq.method != req.method {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "CSeq Method Does Not Match Request Method",
        ));
    }
    Ok(())
}
