//! Parse errors and the wire verdict each one deserves.
//!
//! Every way a message can be malformed is a [`ParseErrorKind`]; [`ParseError::verdict`] maps it,
//! in code, to what the receiving element must do (RFC 3261 section 8.2 and 16.3, RFC 4475): answer
//! a request with a status code, or silently drop a response. [`ParseError::scope`] says whether
//! the error only loses this message or the whole stream connection (framing lost).

use std::fmt;

use crate::status::StatusCode;

/// What the element must do with a message it could not parse.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Verdict {
    /// Answer the request with this status code and reason phrase (a stateless error response).
    Respond(StatusCode, &'static str),
    /// Discard silently: malformed responses are never answered (RFC 3261 section 18.1.2), and
    /// a request too broken to answer (no way to route a response) is dropped too.
    Drop,
}

/// How much is lost when parsing fails.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Scope {
    /// Only this message: its end is known, the next message on the stream can still be read.
    Message,
    /// The stream's framing is lost (bad or oversized Content-Length, overlong header section):
    /// after answering, the connection must be closed (RFC 3261 section 18.3).
    Connection,
}

/// Which kind of start line the broken message had, as far as could be told.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum StartKind {
    /// The start line looked like a request (anything not starting with `SIP/`).
    Request,
    /// The start line starts with `SIP/`: a response.
    Response,
}

/// The specific syntax fault.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The start line is not `Method SP Request-URI SP SIP-Version` or
    /// `SIP-Version SP Status-Code SP Reason-Phrase`.
    #[error("malformed start line")]
    BadStartLine,
    /// The Request-URI does not follow the URI grammar (RFC 3261 section 25.1) or carries
    /// headers (`?...`), which are not allowed in a Request-URI (RFC 3261 section 19.1.5).
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// The SIP-Version is not `SIP/<digits>.<digits>`.
    #[error("malformed SIP-Version")]
    BadVersion,
    /// The Status-Code is not three digits.
    #[error("malformed Status-Code")]
    BadStatusCode,
    /// A header line is not `field-name HCOLON field-value`.
    #[error("malformed header line")]
    BadHeaderLine,
    /// A bare CR or LF, or a control character, where the grammar does not allow it.
    #[error("bare CR or LF in the header section")]
    BareLineBreak,
    /// A known header's value does not follow its grammar.
    #[error("malformed {0} header")]
    BadHeaderValue(&'static str),
    /// Content-Length is not a non-negative number.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// Content-Length promises more octets than the datagram holds (RFC 3261 section 18.3).
    #[error("Content-Length larger than the message")]
    ContentLengthTooLarge,
    /// Several Content-Length headers with different values on a stream: framing is lost.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// The header section did not end with an empty line.
    #[error("header section not terminated")]
    Truncated,
    /// The message exceeds a configured [`Limits`](crate::Limits) value.
    #[error("message too large: {0}")]
    TooLarge(&'static str),
}

/// A message that could not be parsed, with what to answer.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ParseError {
    kind: ParseErrorKind,
    start: StartKind,
    scope: Scope,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, start: StartKind, scope: Scope) -> Self {
        Self { kind, start, scope }
    }

    /// The specific fault.
    pub fn kind(&self) -> &ParseErrorKind {
        &self.kind
    }

    /// Whether the broken message was a request or a response.
    pub fn start_kind(&self) -> StartKind {
        self.start
    }

    /// Whether the stream connection is still usable.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// What the element must do: responses are dropped (RFC 3261 section 18.1.2: a malformed
    /// response is discarded), requests get an error response (RFC 3261 section 21.4.1 400,
    /// 513 for oversized messages).
    pub fn verdict(&self) -> Verdict {
        if self.start == StartKind::Response {
            return Verdict::Drop;
        }
        match &self.kind {
            ParseErrorKind::TooLarge(_) => {
                Verdict::Respond(StatusCode::MESSAGE_TOO_LARGE, "Message Too Large")
            }
            kind => Verdict::Respond(StatusCode::BAD_REQUEST, kind.reason()),
        }
    }
}

impl ParseErrorKind {
    /// A reason phrase for a 400 that tells the sender what was wrong.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadStartLine => "Bad Request Line",
            Self::BadRequestUri => "Bad Request-URI",
            Self::BadVersion => "Bad SIP-Version",
            Self::BadStatusCode => "Bad Status-Code",
            Self::BadHeaderLine => "Bad Header Line",
            Self::BareLineBreak => "Bare CR or LF",
            Self::BadHeaderValue(name) => match *name {
                "Via" => "Bad Via",
                "From" => "Bad From",
                "To" => "Bad To",
                "Call-ID" => "Bad Call-ID",
                "CSeq" => "Bad CSeq",
                "Max-Forwards" => "Bad Max-Forwards",
                "Contact" => "Bad Contact",
                "Route" => "Bad Route",
                "Record-Route" => "Bad Record-Route",
                "Content-Type" => "Bad Content-Type",
                "Date" => "Bad Date",
                _ => "Bad Header",
            },
            Self::BadContentLength => "Bad Content-Length",
            Self::ContentLengthTooLarge => "Content-Length Larger Than Message",
            Self::ConflictingContentLength => "Conflicting Content-Length",
            Self::Truncated => "Truncated Message",
            Self::TooLarge(_) => "Message Too Large",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for ParseError {}

/// A typed header value that does not follow its grammar (from a typed accessor).
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The value does not follow the header's grammar.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// A header that must appear once appears several times (RFC 3261 section 7.3).
    #[error("more than one {0} header")]
    Multiple(&'static str),
}

impl HeaderError {
    /// The header the error is about.
    pub fn header(&self) -> &'static str {
        match self {
            Self::Malformed(h) | Self::Multiple(h) => h,
        }
    }
}
