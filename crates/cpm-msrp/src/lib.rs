//! MSRP for CPM: the Message Session Relay Protocol (RFC 4975) with the relay headers of
//! RFC 4976, as a sans-IO codec and the session-level rules a sender and a receiver follow.
//!
//! This crate is pure: no IO, no clock, no randomness. Sessions (chat, Large Message Mode,
//! file transfer) and the relay are built on it.
//!
//! # Shape
//!
//! * [`MsrpUri`]: `msrp://` / `msrps://` URIs (RFC 4975 section 9), kept as written, with
//!   the comparison of section 6.1 in [`MsrpUri::equivalent`].
//! * [`Request`] / [`Response`] ([`Head`]) with typed [`Headers`]: To-Path and From-Path
//!   first, then Message-ID, Success-Report, Failure-Report, Byte-Range, Status,
//!   Content-Type, Use-Path, the RFC 4976 authentication and expiry headers, and unknown
//!   headers in order. [`Message::parse`] / [`Message::to_bytes`] handle a whole message.
//! * [`Decoder`]: the stream decoder for a TCP/TLS connection. It yields [`Frame::Head`],
//!   then the body as [`Frame::Data`] pieces of bounded size, then [`Frame::End`] with the
//!   end-line's [`Flag`] (RFC 4975 section 6), so a chunk of any size crosses in bounded
//!   memory. [`encode`] (or [`encode_head`] + [`encode_end`] for a streamed body) writes one.
//! * [`Reassembler`]: per Message-ID, which byte ranges of a chunked message arrived, and
//!   when it is whole or interrupted; [`Chunker`] splits an outgoing one (RFC 4975 section
//!   5.1).
//! * [`report`]: when a response, a success REPORT or a failure REPORT is due (RFC 4975
//!   sections 7.1.2 and 7.2), and building them.
//! * [`Transactions`]: client-side transactions with their timeout (RFC 4975 section 7.1.1).
//! * [`ConnEvent`] / [`ConnCommand`]: what a driver's MSRP transport and a core say to each
//!   other about connections ([`ConnId`]).
//! * Every failure is an [`Error`] whose [`Error::status`] is the code to answer with
//!   ([`StatusCode`]), and whose [`Error::scope`] says whether the connection survives.
//!   Nothing in here panics on input.
//!
//! # Driver contract
//!
//! Decoding: append each read to the connection's buffer, call [`Decoder::decode`] until it
//! returns `Ok(None)`, then read again. For each request head, find the session from the
//! To-Path (481 if none); for a SEND, [`Reassembler::begin`] with its Message-ID and
//! Byte-Range, feed every data piece to the store and to [`Reassembler::data`], and at
//! [`Frame::End`] call [`Reassembler::end`]. Answer with [`report::response`] (which is `None`
//! when Failure-Report forbids an answer) once the chunk is stored, and send
//! [`report::success_report`] when the message is [`Progress::Complete`].
//!
//! Transactions: after writing a request, [`Transactions::start`] with the time it was sent;
//! feed every response to [`Transactions::handle_response`]. Arm one timer at
//! [`Transactions::poll_timeout`]; when it fires, call [`Transactions::handle_timeout`] with
//! the current time (an early call does nothing). After either call drain
//! [`Transactions::poll_outcome`] until it returns `None`. Time only ever comes in as an
//! argument.
//!
//! # Conformance
//!
//! The message examples of RFC 4975 (sections 4, 5.1 and 11) and RFC 4976 (sections 3 and
//! 5.1), copied from the RFC text, parse and serialize back to the same bytes
//! (`tests/rfc4975_examples.rs`); the same messages and generated ones are cross-checked
//! against an independent implementation (`tests/cross_check.rs`); the decoder yields the
//! same frames for every split of a stream and survives arbitrary input
//! (`tests/properties.rs`).

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod chunk;
mod conn;
mod framing;
mod header;
mod message;
pub mod report;
mod status;
mod transaction;
mod uri;

pub use chunk::{Chunk, ChunkCursor, Chunker, Progress, Reassembler, ReassemblyLimits};
pub use conn::{ConnCommand, ConnEvent, ConnId};
pub use framing::{Decoder, Frame, Limits, encode, encode_end, encode_head};
pub use header::{ByteRange, FailureReport, Header, Headers, Status};
pub use message::{Flag, Head, Message, Method, Request, Response, TransactId};
pub use status::{Error, ErrorKind, Scope, StatusCode};
pub use transaction::{Outcome, TransactionConfig, Transactions};
pub use uri::{Host, MsrpUri};
