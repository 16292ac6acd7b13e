//! Attack tests against the real `cpm serve` (issue 10): each module runs one attack the way
//! an internet attacker would, over UDP, TCP or HTTP as it applies, asserts the refusal, and
//! runs the legitimate control case beside it.

#[path = "../common/mod.rs"]
mod common;

mod cpim_from;
mod digest_replay;
mod disk_fill;
mod flood;
mod guessing;
mod identity;
mod relay;
mod tcp_lockout;
#[allow(dead_code)] // Each attack uses a different part.
mod ua;
