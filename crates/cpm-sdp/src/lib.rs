//! SDP for CPM: session descriptions (RFC 8866) as MSRP sessions use them, with the typed MSRP
//! media view and the offer/answer rules for it.
//!
//! This crate is pure: no IO, no clock, no randomness. Session ids and versions come in as
//! arguments.
//!
//! # Shape
//!
//! * [`Sdp`]: a whole description. [`Sdp::parse`] reads one (CRLF or LF, bounded by
//!   [`MAX_BYTES`], [`MAX_LINES`] and [`MAX_MEDIA`]); [`Sdp::to_bytes`] writes it back with
//!   CRLF in RFC 8866 order, and parsing that gives an equal value. [`Origin`],
//!   [`Connection`], [`Bandwidth`], [`Timing`], [`Attribute`] and [`Media`] are its lines,
//!   unknown attributes kept in order.
//! * [`MsrpMedia`]: one `m=message` line over `TCP/MSRP` or `TCP/TLS/MSRP`, typed: `a=path`
//!   as [`cpm_msrp::MsrpUri`]s (RFC 4975 section 8.2), `a=accept-types` and
//!   `a=accept-wrapped-types` (section 8.6), `a=max-size`, [`Setup`] (RFC 4145, RFC 6135),
//!   [`Direction`] and the RFC 5547 file attributes ([`FileTransfer`], [`FileSelector`],
//!   [`FileHash`]). [`Sdp::msrp`] finds it in a description; [`Sdp::for_msrp`] builds a
//!   whole description around one.
//! * [`offer_answer`]: [`offer_answer::answer`] turns an offered [`MsrpMedia`] and our
//!   [`offer_answer::AnswerPolicy`] into our answer or a [`offer_answer::Rejection`];
//!   [`offer_answer::connects`] says whether we open the TCP connection afterwards.
//! * Every failure is an [`SdpError`] whose [`SdpError::status`] is the SIP response to the
//!   request that carried the description: 400 when it does not parse, 488 when it parses
//!   but offers nothing usable. Nothing in here panics on input.
//!
//! # Use
//!
//! Answering an INVITE: `Sdp::parse(body)`, then `sdp.msrp()` (`None`: 488), then
//! `offer_answer::answer(&offer, &policy)` (`Err`: its status), then
//! `Sdp::for_msrp(user, id, version, our_ip, &answer).to_bytes()` as the 200 OK body, with
//! the answer's m-line at the offer's index (RFC 3264 section 6: the answer has as many
//! m-lines as the offer; set the others' port to 0). After the exchange,
//! `offer_answer::connects(ours.setup, theirs.setup, we_offered)` says whether to connect to
//! the peer's first `a=path` URI or to wait for it.
//!
//! # Why our own
//!
//! The crates.io SDP crates (`sdp`, `webrtc-sdp`, `sdp-types`, `sdp-rs`) target RTP and
//! WebRTC: none types `a=path`, `accept-types`, RFC 5547's `file-selector` or the RFC 6135
//! setup defaults, so MSRP would be string handling on top of them anyway, and the generic
//! grammar they would save is about 500 lines here.
//!
//! # Conformance
//!
//! The SDP examples of RFC 4975 (section 8.7) and RFC 5547 (sections 9.1 and 9.2) parse, write
//! back to the same octets, type and answer as those RFCs show (`tests/rfc_examples.rs`);
//! random bytes never panic and every description that parses survives a round trip
//! (`tests/properties.rs`).

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod error;
mod file;
mod msrp;
pub mod offer_answer;
mod sdp;

pub use error::{SdpError, SdpErrorKind};
pub use file::{FileHash, FileSelector, FileTransfer};
pub use msrp::{Direction, MsrpMedia, Setup};
pub use sdp::{
    Attribute, Bandwidth, Connection, MAX_BYTES, MAX_LINES, MAX_MEDIA, Media, Origin, Sdp, Timing,
};
