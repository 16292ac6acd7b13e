//! A sans-IO CPM client (UE): registration with digest authentication, pager-mode messages in
//! CPIM (1-1, and 1-N through the server's exploder, RFC 5365), received messages with
//! duplicate suppression, disposition notifications (RFC 5438) sent and received, and
//! sessions over MSRP (RFC 4975): 1-1 chat and Large Message Mode, both ways, several at once.
//!
//! No sockets, no clock, no threads: time comes in as `now`, the wall clock is the `unix_ms`
//! given to [`Client::new`] plus the `now` offsets, every random identifier comes from
//! [`ClientConfig::seed`], and outputs are values. The same core runs under the `cpm client`
//! command (a tokio driver), in tests on virtual time, and later in the load tool.
//!
//! # Driver contract
//!
//! 1. Build the [`Client`] with the address the server will see (for TCP, open the connection
//!    first and pass its local address; report later connections with
//!    [`Client::handle_connected`]).
//! 2. Give it commands ([`Client::register`], [`Client::send_message`],
//!    [`Client::send_displayed`], [`Client::unregister`]; sessions: [`Client::start_session`],
//!    [`Client::send_chat`], [`Client::send_composing`], [`Client::end_session`],
//!    [`Client::accept_session`], [`Client::reject_session`]) and inputs: every UDP datagram
//!    ([`Client::handle_datagram`]), every chunk read from the TCP connection
//!    ([`Client::handle_stream_data`]), a closed or failed connection
//!    ([`Client::handle_connection_closed`]), and what the MSRP transport reports
//!    ([`Client::handle_conn_event`]: `Connected`/`ConnectFailed` for a connection the core
//!    asked for, each decoded `Frame` of it in order, `Closed`).
//! 3. Drain the outputs until none are left: [`Client::poll_transmit`] (send each to its
//!    peer; over TCP open the connection first if there is none), [`Client::poll_close`]
//!    (close the TCP connection, then report it closed), [`Client::poll_conn_command`] (MSRP:
//!    open a TCP connection to an address, write bytes, close), [`Client::poll_event`] (for
//!    the application).
//! 4. Sleep until [`Client::poll_timeout`], call [`Client::handle_timeout`], go to 3.
//!
//! # What goes on the wire
//!
//! - `REGISTER sip:<domain>` with `Contact: <sip:user@addr[;transport=tcp]>;+sip.instance=
//!   "<urn:uuid:…>";+g.3gpp.icsi-ref="…oma.cpm.msg,…oma.cpm.largemsg,…oma.cpm.deferred"`, the
//!   instance UUID stable per (AOR, device) ([`instance_id`]); digest retry on 401 (SHA-256
//!   preferred, MD5), refresh at half the granted expiry, re-registration after a lost
//!   connection, `Expires: 0` on [`Client::unregister`].
//! - `MESSAGE` with `P-Preferred-Service` and `Accept-Contact` of the `oma.cpm.msg` ICSI,
//!   `Conversation-ID` (stable per set of peers), `Contribution-ID` (new per message) and a
//!   `message/cpim` body asking for delivery and display notifications; for several
//!   recipients the request goes to `sip:cpm-exploder@<domain>` with `Require:
//!   recipient-list-message`, the `oma.cpm.msg.group` ICSI and a `multipart/mixed` body of a
//!   resource list and the CPIM message. Digest retry on 401/407.
//! - Every received `MESSAGE` is answered 200 (duplicates too, malformed CPIM or IMDN bodies
//!   get 400); a delivery notification goes back by itself when the sender asked for
//!   `positive-delivery`.
//! - Sessions (PROTOCOL.md flows 2.2 and 2.3): `INVITE` with the `oma.cpm.session` ICSI (or
//!   `oma.cpm.largemsg` for a text over [`LARGE_MESSAGE_THRESHOLD`] bytes given to
//!   [`Client::send_message`]) and an SDP offer `m=message 9 TCP/MSRP *`, `a=setup:active`
//!   (the client never listens, RFC 6135); ACK in the dialog, a connection to the answer's
//!   first `a=path` URI, a binding SEND, then each message as SENDs of at most 64 KiB whose
//!   200 gives [`Event::SendResult`]. Incoming INVITEs get 180 and 200 with an active answer
//!   ([`ClientConfig::auto_accept`]); their SENDs are answered per chunk and reach the
//!   application as [`Event::Message`]/[`Event::Imdn`] like pager ones, their notifications
//!   go back in the session. BYE either way, CANCEL (487), a lost MSRP connection (BYE).

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod client;
mod config;
mod file;
mod rng;
pub mod time;

pub use client::{
    Client, DEDUP_CAPACITY, EXPLODER_USER, Event, FILE_CHUNK, FILE_WINDOW, ICSI_DEFERRED,
    ICSI_FILETRANSFER, ICSI_LARGEMSG, ICSI_MSG, ICSI_MSG_GROUP, ICSI_SESSION,
    LARGE_MESSAGE_THRESHOLD, MAX_QUEUED, ReceivedImdn, ReceivedMessage, SendError, SendId,
    SessionId, SessionKind, aor_of, notification_kind, notification_status,
};
pub use config::{ClientConfig, ConfigError, MsrpRelay, instance_id};
pub use cpm_content::{DeliveryStatus, DisplayStatus, Notification, ProcessingStatus};
pub use cpm_msrp::{ConnCommand, ConnEvent, ConnId, MsrpUri};
pub use cpm_sip_core::{Peer, Transmit, TransportKind};
pub use file::{FileDescription, FileHasher, hex, media_type_for, sanitize_file_name};
