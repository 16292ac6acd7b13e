//! Status codes (RFC 4975 section 10, RFC 4976 section 5) and the one error type, whose
//! [`Error::status`] says which code a failure is answered with.

use std::fmt;

use crate::message::TransactId;

/// The MSRP status codes this crate produces or acts on.
///
/// A response on the wire can carry any three digits (`status-code = 3DIGIT`, RFC 4975
/// section 9); [`crate::Response::status`] is a plain `u16` for that reason, and
/// [`StatusCode::from_code`] names the ones defined here.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
#[non_exhaustive]
pub enum StatusCode {
    /// 200: the transaction succeeded (RFC 4975 section 10.1).
    Ok,
    /// 400: the request was unintelligible: a syntax fault (RFC 4975 section 10.2).
    BadRequest,
    /// 403: the attempted action is not allowed (RFC 4975 section 10.3).
    Forbidden,
    /// 408: no response arrived in time; generated locally, never sent (RFC 4975 section 10.4).
    RequestTimeout,
    /// 413: the receiver wants the sender to stop sending this message (RFC 4975 section 10.5).
    MessageTooLarge,
    /// 415: the media type is not one the receiver accepts (RFC 4975 section 10.6).
    UnsupportedMediaType,
    /// 423: an Expires value is out of the relay's bounds (RFC 4976 section 5).
    IntervalOutOfBounds,
    /// 481: the session-id in the To-Path names no session here (RFC 4975 section 10.7).
    SessionDoesNotExist,
    /// 501: the method is not understood (RFC 4975 section 10.8).
    UnknownMethod,
    /// 506: the session is already bound to another connection (RFC 4975 section 10.9).
    SessionAlreadyBound,
}

impl StatusCode {
    /// Every code, in numeric order.
    pub const ALL: [Self; 10] = [
        Self::Ok,
        Self::BadRequest,
        Self::Forbidden,
        Self::RequestTimeout,
        Self::MessageTooLarge,
        Self::UnsupportedMediaType,
        Self::IntervalOutOfBounds,
        Self::SessionDoesNotExist,
        Self::UnknownMethod,
        Self::SessionAlreadyBound,
    ];

    /// The three-digit code.
    pub fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::BadRequest => 400,
            Self::Forbidden => 403,
            Self::RequestTimeout => 408,
            Self::MessageTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::IntervalOutOfBounds => 423,
            Self::SessionDoesNotExist => 481,
            Self::UnknownMethod => 501,
            Self::SessionAlreadyBound => 506,
        }
    }

    /// The code named here for a three-digit value, if any.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The comment sent after the code (`MSRP <tid> 413 Message Too Large`). RFC 4975 leaves
    /// comments free text; these follow the wording of its section 10.
    pub fn comment(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::BadRequest => "Bad Request",
            Self::Forbidden => "Forbidden",
            Self::RequestTimeout => "Request Timeout",
            Self::MessageTooLarge => "Message Too Large",
            Self::UnsupportedMediaType => "Unsupported Media Type",
            Self::IntervalOutOfBounds => "Interval Out Of Bounds",
            Self::SessionDoesNotExist => "Session Does Not Exist",
            Self::UnknownMethod => "Unknown Method",
            Self::SessionAlreadyBound => "Session Already Bound",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.comment())
    }
}

/// How much is lost when decoding fails.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Scope {
    /// Only this message: its end-line is known, the stream decoder skips the rest of it and
    /// the next message on the connection can still be read.
    Message,
    /// Framing is lost (no start line, no transact-id to find the end-line with, a header
    /// section over the limit): the connection must be closed.
    Connection,
}

/// What went wrong.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A syntax fault; the text names the part (`"start line"`, `"Byte-Range"`, ...).
    #[error("malformed {0}")]
    Syntax(&'static str),
    /// A body without Content-Type, or Content-Type without a body (RFC 4975 section 9,
    /// `content-stuff`).
    #[error("body and Content-Type must come together")]
    BodyWithoutContentType,
    /// A header that must appear (To-Path, From-Path; Message-ID and Byte-Range where
    /// required) is missing, or one that must appear once appears twice.
    #[error("missing or repeated {0} header")]
    Header(&'static str),
    /// The method is syntactically fine but not one we implement (RFC 4975 section 12: 501).
    #[error("unknown method")]
    UnknownMethod,
    /// A configured limit is exceeded (header section, message size).
    #[error("too large: {0}")]
    TooLarge(&'static str),
    /// The media type is not accepted by the session (RFC 4975 section 7.3: 415).
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The To-Path names no session we have (RFC 4975 section 7.3: 481).
    #[error("no such session")]
    SessionNotFound,
    /// The session is bound to another connection (RFC 4975 section 7.3: 506).
    #[error("session already bound to another connection")]
    SessionAlreadyBound,
    /// The request is not allowed (RFC 4975 section 10.3, RFC 4976 AUTH failures: 403).
    #[error("forbidden")]
    Forbidden,
    /// An Expires value is outside the relay's Min-Expires/Max-Expires (RFC 4976: 423).
    #[error("interval out of bounds")]
    IntervalOutOfBounds,
    /// A transaction got no response in time (RFC 4975 section 7.1.1: 408).
    #[error("transaction timed out")]
    Timeout,
}

/// A decode, parse or validation failure, with the status code it deserves.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Error {
    kind: ErrorKind,
    scope: Scope,
    transact_id: Option<TransactId>,
}

impl Error {
    /// An error that loses only the message at hand.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            scope: Scope::Message,
            transact_id: None,
        }
    }

    /// A syntax fault in the named part (400).
    pub(crate) fn syntax(part: &'static str) -> Self {
        Self::new(ErrorKind::Syntax(part))
    }

    /// The same error, but framing is lost.
    pub(crate) fn connection(mut self) -> Self {
        self.scope = Scope::Connection;
        self
    }

    /// The same error, naming the transaction it belongs to.
    pub(crate) fn with_transact_id(mut self, id: &TransactId) -> Self {
        self.transact_id = Some(id.clone());
        self
    }

    /// The transaction of the broken message, when its start line could be read: a request
    /// whose head was refused with [`Scope::Message`] can still be answered with
    /// [`Error::status`] under this transact-id.
    pub fn transact_id(&self) -> Option<&TransactId> {
        self.transact_id.as_ref()
    }

    /// The specific fault.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Whether the connection survives.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The status code this failure is answered with (RFC 4975 section 10).
    pub fn status_code(&self) -> StatusCode {
        match self.kind {
            ErrorKind::Syntax(_) | ErrorKind::BodyWithoutContentType | ErrorKind::Header(_) => {
                StatusCode::BadRequest
            }
            ErrorKind::UnknownMethod => StatusCode::UnknownMethod,
            ErrorKind::TooLarge(_) => StatusCode::MessageTooLarge,
            ErrorKind::UnsupportedMediaType => StatusCode::UnsupportedMediaType,
            ErrorKind::SessionNotFound => StatusCode::SessionDoesNotExist,
            ErrorKind::SessionAlreadyBound => StatusCode::SessionAlreadyBound,
            ErrorKind::Forbidden => StatusCode::Forbidden,
            ErrorKind::IntervalOutOfBounds => StatusCode::IntervalOutOfBounds,
            ErrorKind::Timeout => StatusCode::RequestTimeout,
        }
    }

    /// The three-digit status code of [`Error::status_code`].
    pub fn status(&self) -> u16 {
        self.status_code().code()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in StatusCode::ALL {
            assert_eq!(StatusCode::from_code(s.code()), Some(s));
        }
        assert_eq!(StatusCode::from_code(299), None);
        assert_eq!(
            StatusCode::MessageTooLarge.to_string(),
            "413 Message Too Large"
        );
    }

    #[test]
    fn errors_map_to_the_wire() {
        let cases = [
            (ErrorKind::Syntax("Byte-Range"), 400),
            (ErrorKind::BodyWithoutContentType, 400),
            (ErrorKind::Header("To-Path"), 400),
            (ErrorKind::UnknownMethod, 501),
            (ErrorKind::TooLarge("message"), 413),
            (ErrorKind::UnsupportedMediaType, 415),
            (ErrorKind::SessionNotFound, 481),
            (ErrorKind::SessionAlreadyBound, 506),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::IntervalOutOfBounds, 423),
            (ErrorKind::Timeout, 408),
        ];
        for (kind, code) in cases {
            let e = Error::new(kind);
            assert_eq!(e.status(), code, "{e}");
            assert_eq!(e.scope(), Scope::Message);
        }
        assert_eq!(Error::syntax("x").connection().scope(), Scope::Connection);
    }
}
