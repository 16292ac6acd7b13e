//! SIP message syntax for CPM: parse and serialize requests and responses (RFC 3261 section 7
//! and 25, RFC 5118 for IPv6), with framing for streams and datagrams.
//!
//! This crate is pure: no IO, no clock, no randomness. It is what every other layer (the
//! transaction layer, the SIP/IP Core, the Conversation Server, the client) uses to read and
//! write SIP.
//!
//! # Shape
//!
//! * [`Message::parse_datagram`] parses one UDP datagram; [`StreamFramer::decode`] takes whole
//!   messages (and CRLF keep-alives) off a TCP connection's buffer, returning `Ok(None)` while
//!   more bytes are needed.
//! * A parsed [`Request`] / [`Response`] holds its start line typed, its header fields as the
//!   exact bytes they arrived with ([`Header::raw`]), and its body as [`bytes::Bytes`]
//!   (no copy). Serializing a parsed message gives back the same header bytes, so a proxy
//!   forwards what it did not change byte for byte.
//! * The headers the proxy and the CPM functions need are checked strictly at ingress (Via,
//!   From, To, Call-ID, CSeq, Max-Forwards, Contact, Route, Record-Route, Content-Type,
//!   Content-Length, Date) and read as types on demand through accessors on [`Headers`]
//!   ([`Headers::via`], [`Headers::cseq`], [`Headers::p_preferred_service`],
//!   [`Headers::conversation_id`], ...).
//! * Every failure is a [`ParseError`] whose [`ParseError::verdict`] says what to do on the
//!   wire (`400` with a reason, `513`, or a silent drop for responses) and whose
//!   [`ParseError::scope`] says whether a stream connection survives. Nothing in here panics on
//!   input; [`Limits`] bound memory.
//! * Message-level semantic checks that do not depend on the element's role (version, the
//!   mandatory headers, single-valued headers, the CSeq method) are in [`check_request`].
//!
//! # Conformance
//!
//! The RFC 4475 and RFC 5118 torture corpora run as one test per file (`tests/torture.rs`).

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod cpm;
mod error;
mod framing;
mod header;
mod limits;
mod message;
mod method;
mod scan;
mod semantic;
mod status;
mod typed;
mod uri;

pub use error::{HeaderError, ParseError, ParseErrorKind, Scope, StartKind, Verdict};
pub use framing::{Frame, StreamFramer};
pub use header::{Header, HeaderName, Headers};
pub use limits::Limits;
pub use message::{Message, Request, Response, Version, is_keepalive};
pub use method::Method;
pub use scan::{quote, unquote};
pub use semantic::{Rejection, check_request};
pub use status::StatusCode;
pub use typed::{
    CSeq, CallId, Contact, ContactPreference, MediaType, NameAddr, Via, feature_list, is_sip_date,
};
pub use uri::{AbsoluteUri, Host, Param, SipUri, TelUri, Uri, UriError, find_param, unescape};
