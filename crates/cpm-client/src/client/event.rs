//! What the client reports to its application ([`Event`]) and why a command is refused
//! ([`SendError`]).

use bytes::Bytes;
use cpm_content::Notification;

use super::{SendId, SessionId, SessionKind};
use crate::file::FileDescription;

/// A message received from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The sender's address: the CPIM `From` (the SIP From for non-CPIM bodies), as
    /// `user@domain` for SIP URIs, the whole URI otherwise.
    pub from: String,
    /// The recipient this device got it as: our own AOR if the CPIM `To`s list it, else the
    /// first `To` (the SIP To for non-CPIM bodies), in the same form as `from`.
    pub to: String,
    /// Every CPIM `To` (several for a 1-N message), in the same form.
    pub recipients: Vec<String>,
    /// The content, as text (invalid UTF-8 replaced).
    pub text: String,
    /// The content's media type (the encapsulated one for CPIM).
    pub content_type: String,
    /// The SIP `Conversation-ID`.
    pub conversation_id: Option<String>,
    /// The SIP `Contribution-ID`.
    pub contribution_id: Option<String>,
    /// The CPIM `imdn.Message-ID`; the SIP Call-ID when there is none (a non-CPIM body).
    pub message_id: String,
    /// The CPIM `DateTime`, as written.
    pub date_time: Option<String>,
    /// Delivered by the network from storage: the request's Accept-Contact or
    /// P-Asserted-Service carries the `…oma.cpm.deferred` ICSI.
    pub deferred: bool,
    /// The sender asked for a display notification ([`Client::send_displayed`](crate::Client::send_displayed)).
    pub display_requested: bool,
}

/// A disposition notification (RFC 5438) received for a message we sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedImdn {
    /// Who sent the notification (CPIM `From`, else SIP From), as `user@domain`.
    pub from: String,
    /// The `imdn.Message-ID` of the original message.
    pub message_id: String,
    /// What happened to it.
    pub notification: Notification,
    /// The IMDN `datetime`, as written.
    pub datetime: String,
    /// The IMDN `recipient-uri`, if present.
    pub recipient: Option<String>,
}

/// What the client reports to its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A REGISTER (first or refresh) succeeded; the binding lives `expires` seconds.
    Registered {
        /// The granted lifetime of our binding.
        expires: u32,
    },
    /// A REGISTER failed with this final status (408 on timeout, 503 when the connection
    /// closed). `will_retry`: the client tries again by itself (timeouts, 5xx, lost
    /// connections); otherwise (wrong password, unknown user, ...) it stops.
    RegistrationFailed {
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
        /// Whether a retry is scheduled.
        will_retry: bool,
    },
    /// The de-registration ([`Client::unregister`](crate::Client::unregister)) ended with this status (0 when there was
    /// nothing to remove).
    Unregistered {
        /// The status code.
        status: u16,
    },
    /// The final response to a [`Client::send_message`](crate::Client::send_message).
    SendResult {
        /// Which send.
        id: SendId,
        /// The status code (408 on timeout, 503 when the connection closed).
        status: u16,
        /// The reason phrase.
        reason: String,
        /// The `imdn.Message-ID` the message carried.
        message_id: String,
    },
    /// A message arrived (duplicates are reported once).
    Message(Box<ReceivedMessage>),
    /// A disposition notification arrived.
    Imdn(Box<ReceivedImdn>),
    /// A notification we sent (automatic delivery notification, or
    /// [`Client::send_displayed`](crate::Client::send_displayed)) got its final response.
    NotificationSent {
        /// The original sender the notification went to (`user@domain`).
        to: String,
        /// The `imdn.Message-ID` of the message it is about.
        message_id: String,
        /// What it said.
        notification: Notification,
        /// The final status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// A peer invites us to a session (a chat, or one large message). With
    /// [`ClientConfig::auto_accept`](crate::ClientConfig::auto_accept) the client has already answered it; otherwise the
    /// application answers with [`Client::accept_session`](crate::Client::accept_session) or [`Client::reject_session`](crate::Client::reject_session).
    SessionIncoming {
        /// The session.
        session: SessionId,
        /// Who invites (`user@domain`).
        from: String,
        /// Chat or Large Message Mode.
        kind: SessionKind,
    },
    /// The session's MSRP connection is open and bound: messages flow
    /// ([`Client::send_chat`](crate::Client::send_chat)).
    SessionStarted {
        /// The session.
        session: SessionId,
        /// The peer (`user@domain`).
        peer: String,
        /// Chat or Large Message Mode.
        kind: SessionKind,
        /// Whether the peer invited us.
        incoming: bool,
    },
    /// The session is over (or never came up). `status`: the SIP final status of a refused
    /// INVITE (408 on timeout, 487 when cancelled), 200 after a BYE from either side, 503
    /// when the MSRP connection failed or closed. Messages still queued or unanswered got
    /// their [`Event::SendResult`] before this.
    SessionEnded {
        /// The session.
        session: SessionId,
        /// Why, as a SIP status.
        status: u16,
        /// The reason phrase.
        reason: String,
        /// Whether the peer (or the network) ended it, rather than [`Client::end_session`](crate::Client::end_session).
        by_peer: bool,
    },
    /// The peer's composing state changed (RFC 3994 `application/im-iscomposing+xml`).
    Composing {
        /// The session.
        session: SessionId,
        /// The peer (`user@domain`).
        from: String,
        /// `true` for `active` (typing), `false` for `idle`.
        active: bool,
    },
    /// A peer offers a file (RFC 5547 push, ICSI `…oma.cpm.filetransfer`). With
    /// [`crate::ClientConfig::auto_accept`] the client has already answered it; otherwise the
    /// application answers with [`crate::Client::accept_session`] or
    /// [`crate::Client::reject_session`]. Its data follows as [`Event::FileData`], then
    /// [`Event::FileReceived`] or [`Event::FileFailed`].
    FileIncoming {
        /// The session that carries the file.
        session: SessionId,
        /// Who sends it (`user@domain`).
        from: String,
        /// What the offer says: the name already made safe ([`crate::sanitize_file_name`]),
        /// the declared size and SHA-1.
        file: FileDescription,
    },
    /// Sending a file ([`crate::Client::send_file`]): the core wants the octets
    /// `offset..offset + len` of the file (0-based), to be given in order with
    /// [`crate::Client::provide_file_data`] (or [`crate::Client::file_read_failed`]). At most
    /// [`crate::FILE_WINDOW`] chunks are asked for or unanswered at a time.
    FileNeeded {
        /// The session.
        session: SessionId,
        /// Where the octets start in the file.
        offset: u64,
        /// How many octets ([`crate::FILE_CHUNK`], less for the last chunk).
        len: u64,
    },
    /// Receiving a file: the next octets, at `offset` (0-based) in the file, in order and
    /// each once. Write them to a temporary file: the file is whole only with
    /// [`Event::FileReceived`].
    FileData {
        /// The session.
        session: SessionId,
        /// Where the octets go in the file.
        offset: u64,
        /// The octets.
        data: Bytes,
    },
    /// Sending a file: the network acknowledged (MSRP 200) this many of its octets.
    FileProgress {
        /// The session.
        session: SessionId,
        /// Octets acknowledged so far.
        done: u64,
        /// The file's size.
        total: u64,
    },
    /// Sending a file: the 200 to its last chunk came, the network stored the whole file
    /// and checked its hash. The session ends (BYE) right after.
    FileSent {
        /// The session.
        session: SessionId,
        /// The file as offered.
        file: FileDescription,
    },
    /// Receiving a file: every octet came, the size and the SHA-1 match the offer's
    /// file-selector (the SHA-1 here is the one computed over the data).
    FileReceived {
        /// The session.
        session: SessionId,
        /// Who sent it (`user@domain`).
        from: String,
        /// The file: safe name, size, SHA-1.
        file: FileDescription,
    },
    /// A file transfer failed, either way: refused, timed out, an MSRP error, aborted by the
    /// sender (`#`), the size or hash did not match, the session or connection ended first.
    /// A receiver discards what it wrote.
    FileFailed {
        /// The session.
        session: SessionId,
        /// Whether we were receiving.
        incoming: bool,
        /// The file's (safe) name.
        name: String,
        /// A SIP or MSRP status code.
        status: u16,
        /// Why.
        reason: String,
    },
}

/// Why [`Client::send_message`](crate::Client::send_message) refused to send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No recipient was given.
    #[error("no recipient")]
    NoRecipient,
    /// A recipient is not `user@domain` or a URI.
    #[error("bad recipient {0:?}")]
    BadRecipient(String),
    /// The body could not be built (a value that breaks CPIM or multipart syntax).
    #[error("cannot build the message body: {0}")]
    Body(String),
    /// The session does not exist (any more).
    #[error("no such session")]
    NoSession,
    /// The session is not up yet and its queue of waiting messages is full.
    #[error("too many messages waiting for the session")]
    QueueFull,
    /// A file to send needs a name and a media type.
    #[error("bad file description: {0}")]
    BadFile(String),
}
