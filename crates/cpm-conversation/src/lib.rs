//! The CPM Conversation Server as sans-IO cores (SYSTEM.md section 2).
//!
//! - [`participating`]: the Participating Function (PF), the per-user B2BUA on the
//!   originating and terminating side: pager mode and 1-N pager, conversation histories,
//!   deferred delivery, multi-device delivery through the core's forking, IMDN state.
//! - [`ids`]: CPM service identifiers, derived UUIDs, RFC 3339 times, AORs.
//!
//! Like every core here it does no IO and reads no clock: inputs come with `now`, outputs
//! are values (SIP transmits and store operations), and store outcomes come back as inputs.
//! The Controlling Function (groups) comes with the group issue.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod ids;
pub mod participating;

pub use participating::{
    FILE_RECORD_TYPE, ICSI_FILETRANSFER, ICSI_SESSION, Input, Output, PF_CONTACT_PARAM,
    ParticipatingFunction, PfConfig, PfStats, Refusal, msrp_session_shard,
};
