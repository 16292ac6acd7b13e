//! Several [`Node`](crate::Node)s as the shards of one node (`cpm serve --threads N`): each
//! shard has its own transactions, registrar partition, Participating Function and timers,
//! on its own thread, with no lock between them (ARCHITECTURE.md, "Using every core").
//!
//! Which shard handles what is decided here, as pure functions, so that every driver
//! dispatches the same way:
//!
//! - **A user's world lives on one shard**, [`Shards::of_user`]: bindings, flows,
//!   terminating PF state, deferred queue, per-user order. A request from one of our users
//!   goes to its sender's shard (authentication by registered flow, nonce counts); a
//!   REGISTER, a request from a trusted peer (an SBC or P-CSCF that asserts the sender: no
//!   flow or nonce of the sender is needed) and any other request to its target's shard, so
//!   that behind an SBC a message or a call never crosses between shards.
//! - **Responses** go to the shard whose core sent the request, named at the end of our
//!   branch ([`cpm_proxy::branch_shard`]).
//! - **What remains to do for a target on another shard** (the terminating phase, the
//!   lookup of its bindings) is handed by the sender's core to the target's core as a value
//!   ([`ShardHop`], a hop to `Peer::local_on(Function::Core, …)`); the answer comes back the
//!   same way. That decision is the core's (`ProxyConfig::shards`), like its other routing.
//!
//! Store operation ids carry the shard that asked in their high bits ([`shard_of_op`]), so
//! store receipts go back to it; user-directory answers are routed by the driver, which
//! knows which shard asked.

use core::hash::BuildHasher;

use cpm_proxy::ProxyConfig;
pub use cpm_proxy::Shards;
use cpm_sip::{Message, Method, Uri};
use cpm_sip_core::Function;
use cpm_store::OpId;
use foldhash::fast::FixedState;

/// The bits of an [`OpId`] below the shard's number.
const OP_SHARD_SHIFT: u32 = 48;

/// The first store operation id of a shard (ids above it up to the next shard's).
pub(crate) fn first_op(shards: Shards) -> u64 {
    u64::from(shards.index) << OP_SHARD_SHIFT
}

/// The shard that asked for a store operation ([`Shards`]), for routing its outcome back.
pub fn shard_of_op(id: OpId) -> u16 {
    u16::try_from(id.0 >> OP_SHARD_SHIFT).unwrap_or(0)
}

/// A message from a function on one shard to a function on another: the cross-shard
/// counterpart of a [`Handoff`](cpm_sip_core::Handoff). The driver gives it to shard
/// `shard` as [`Input::Shard`](crate::Input::Shard), in order (the link between two shards
/// is a FIFO channel).
#[derive(Debug)]
pub struct ShardHop {
    /// The receiving shard.
    pub shard: u16,
    /// The receiving function.
    pub to: Function,
    /// The sending shard.
    pub from_shard: u16,
    /// The sending function.
    pub from: Function,
    /// When it was sent: the wait until the receiving shard handles it is that shard's
    /// queue delay (overload control).
    pub sent: std::time::Instant,
    /// The message.
    pub message: Message,
}

/// Where a network event goes.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Dispatch {
    /// To this shard.
    One(u16),
    /// To every shard (a closed connection: each forgets its flows).
    All,
}

/// Decides which shard handles what (see the module docs). Cheap to clone; one per driver
/// task that dispatches.
#[derive(Clone, Debug)]
pub struct Router {
    shards: Shards,
    /// What "one of our users" means: the core's served domains and own addresses.
    core: ProxyConfig,
    hasher: FixedState,
}

impl Router {
    /// A router for `count` shards of the node whose core has this configuration.
    pub fn new(core: &ProxyConfig, count: u16) -> Self {
        Self {
            shards: Shards {
                index: 0,
                count: count.max(1),
            },
            core: core.clone(),
            hasher: FixedState::with_seed(0x5a4d_0001),
        }
    }

    /// How many shards.
    pub fn count(&self) -> u16 {
        self.shards.count
    }

    /// The shard of an address-of-record `user@host` (a stored binding's).
    pub fn shard_of_aor(&self, aor: &str) -> u16 {
        self.shards.of_aor(aor)
    }

    /// The shard whose PF owns the MSRP session a message head is for: the one named in the
    /// session id of the To-Path's last URI (the PF writes its shard there); shard 0 for
    /// anything else (it answers 481).
    pub fn msrp_shard(&self, head: &cpm_msrp::Head) -> u16 {
        head.headers()
            .to_path()
            .last()
            .and_then(|u| u.session_id())
            .and_then(cpm_conversation::msrp_session_shard)
            .filter(|s| *s < self.shards.count)
            .unwrap_or(0)
    }

    /// The user part of `uri` if it names one of our users.
    fn our_user(&self, uri: &Uri) -> Option<String> {
        let Uri::Sip(u) = uri else { return None };
        self.core.own_domain(&u.host)?;
        let aor = cpm_sip::cpm::aor_of(u)?;
        let (user, _) = aor.rsplit_once('@')?;
        Some(user.to_owned())
    }

    /// The shard that must handle a message from the network, received from `source`.
    pub fn shard_of(&self, message: &Message, source: core::net::SocketAddr) -> u16 {
        let count = self.shards.count;
        if count == 1 {
            return 0;
        }
        let mut by_target = false;
        let headers = match message {
            Message::Response(r) => {
                let ours = r
                    .headers
                    .via()
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .and_then(|v| v.branch().and_then(cpm_proxy::branch_shard));
                if let Some(s) = ours.filter(|&s| s < count) {
                    return s;
                }
                &r.headers
            }
            Message::Request(r) => {
                // The sender's shard matters only where the sender's own state is needed:
                // not for a REGISTER (the registered user's), nor behind a trusted peer.
                by_target = r.method == Method::Register || self.core.is_trusted(source.ip());
                &r.headers
            }
        };
        let from = headers.from().ok().flatten();
        let to = headers.to().ok().flatten();
        let from = from.filter(|_| !by_target);
        let user = from
            .as_ref()
            .and_then(|f| self.our_user(&f.uri))
            .or_else(|| to.as_ref().and_then(|t| self.our_user(&t.uri)));
        match user {
            Some(user) => self.shards.of_user(&user),
            // Nobody of ours: any shard will do, the same one for every message of the
            // exchange (retransmissions, the ACK, the CANCEL).
            None => {
                let call_id = headers.call_id().unwrap_or_default();
                (self.hasher.hash_one(call_id) % u64::from(count)) as u16
            }
        }
    }

    /// The shard for what is not a message (a parse error, a keep-alive): by the source
    /// address, so that consecutive CRLFs of one connection meet on one shard.
    pub fn shard_of_source(&self, addr: core::net::SocketAddr) -> u16 {
        let count = self.shards.count;
        if count == 1 {
            return 0;
        }
        (self.hasher.hash_one(addr) % u64::from(count)) as u16
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A source that is not a trusted peer.
    const SRC: core::net::SocketAddr = core::net::SocketAddr::new(
        core::net::IpAddr::V4(core::net::Ipv4Addr::new(198, 51, 100, 7)),
        5060,
    );

    impl Router {
        fn shard_of_resp(&self, m: &Message) -> u16 {
            self.shard_of(m, SRC)
        }
    }

    fn router(n: u16) -> Router {
        Router::new(
            &ProxyConfig::new("example.com", "192.0.2.1:5060".parse().unwrap()),
            n,
        )
    }

    fn msg(text: &str) -> Message {
        Message::parse(text.replace('\n', "\r\n").into_bytes()).unwrap()
    }

    fn request(from: &str, to: &str, ruri: &str) -> Message {
        msg(&format!(
            "MESSAGE {ruri} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx\n\
             From: <{from}>;tag=1\nTo: <{to}>\nCall-ID: c1\nCSeq: 1 MESSAGE\n\
             Max-Forwards: 70\nContent-Length: 0\n\n"
        ))
    }

    #[test]
    fn a_user_has_one_shard_whatever_the_host() {
        let r = router(4);
        let users: Vec<u16> = (0..64)
            .map(|i| r.shards.of_user(&format!("u{i}")))
            .collect();
        // Spread over every shard.
        for s in 0..4 {
            assert!(users.contains(&s), "{users:?}");
        }
        let a = request(
            "sip:alice@example.com",
            "sip:bob@example.com",
            "sip:bob@example.com",
        );
        let b = request(
            "sip:alice@192.0.2.1",
            "sip:carol@x.test",
            "sip:carol@x.test",
        );
        assert_eq!(r.shard_of(&a, SRC), r.shards.of_user("alice"));
        assert_eq!(r.shard_of(&b, SRC), r.shards.of_user("alice"));
        assert_eq!(
            r.shard_of_aor("alice@example.com"),
            r.shards.of_user("alice")
        );
    }

    #[test]
    fn foreign_senders_and_registers_go_to_the_target() {
        let r = router(4);
        let m = request(
            "sip:carol@x.test",
            "sip:bob@example.com",
            "sip:bob@example.com",
        );
        assert_eq!(r.shard_of(&m, SRC), r.shards.of_user("bob"));
        let reg = msg(
            "REGISTER sip:example.com SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKr\n\
             From: <sip:u1@example.com>;tag=1\nTo: <sip:u2@example.com>\nCall-ID: r1\n\
             CSeq: 1 REGISTER\nMax-Forwards: 70\nContent-Length: 0\n\n",
        );
        assert_eq!(r.shard_of(&reg, SRC), r.shards.of_user("u2"));
    }

    #[test]
    fn behind_a_trusted_peer_a_request_goes_to_its_target() {
        let mut core = ProxyConfig::new("example.com", "192.0.2.1:5060".parse().unwrap());
        core.trusted_peers
            .push(cpm_proxy::TrustedPeer::parse("203.0.113.5").unwrap());
        let r = Router::new(&core, 4);
        let m = request(
            "sip:alice@example.com",
            "sip:bob@example.com",
            "sip:bob@example.com",
        );
        let sbc = "203.0.113.5:5060".parse().unwrap();
        assert_eq!(r.shard_of(&m, sbc), r.shards.of_user("bob"));
        assert_eq!(r.shard_of(&m, SRC), r.shards.of_user("alice"));
    }

    #[test]
    fn responses_follow_the_shard_in_our_branch() {
        let r = router(4);
        let resp = |branch: &str| {
            msg(&format!(
                "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.1;branch={branch}\n\
                 Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx\n\
                 From: <sip:alice@example.com>;tag=1\nTo: <sip:bob@example.com>;tag=2\n\
                 Call-ID: c1\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n"
            ))
        };
        assert_eq!(r.shard_of_resp(&resp("z9hG4bK-cpm-00ff-0a.s3")), 3);
        assert_eq!(r.shard_of_resp(&resp("z9hG4bK-cpm-00ff-0a.s2")), 2);
        // Not ours, or a shard the node does not have: by the users, like a request.
        assert_eq!(
            r.shard_of_resp(&resp("z9hG4bKother")),
            r.shards.of_user("alice")
        );
        assert_eq!(
            r.shard_of_resp(&resp("z9hG4bK-cpm-00ff-0a.s9")),
            r.shards.of_user("alice")
        );
    }

    #[test]
    fn one_shard_routes_everything_to_it() {
        let r = router(1);
        let m = request(
            "sip:carol@x.test",
            "sip:bob@example.com",
            "sip:bob@example.com",
        );
        assert_eq!(r.shard_of(&m, SRC), 0);
        assert_eq!(
            shard_of_op(OpId(first_op(Shards { index: 3, count: 4 }) + 7)),
            3
        );
    }
}
