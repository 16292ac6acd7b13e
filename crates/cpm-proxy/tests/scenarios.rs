//! Scenario tests of the SIP/IP Core on virtual time: user agents are scripted messages, the
//! user directory is a table, nothing sleeps and no socket is opened.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use core::net::SocketAddr;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_proxy::{Input, Output, Proxy, ProxyConfig, Service, TrustedPeer, UserRecord};
use cpm_sip::{HeaderName, Message, Method, Request, Response, StatusCode};
use cpm_sip_core::digest::{self, Algorithm, Challenge};
use cpm_sip_core::{ConnId, Peer};

const CORE: &str = "127.0.0.1:5060";
const PF: &str = "127.0.0.1:5090";

struct Net {
    proxy: Proxy,
    now: Instant,
    users: HashMap<String, String>,
    /// Everything the core sent, in order.
    sent: Vec<(Peer, Message)>,
    lookups: u32,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn udp(s: &str) -> Peer {
    Peer::udp(addr(s))
}

impl Net {
    fn new(cfg: impl FnOnce(&mut ProxyConfig)) -> Self {
        let mut c = ProxyConfig::new("localhost", addr(CORE));
        // Offer both algorithms, so both paths are exercised.
        c.digest_algorithms = vec![Algorithm::Md5, Algorithm::Sha256];
        cfg(&mut c);
        let now = Instant::now();
        let mut users = HashMap::new();
        users.insert("alice@localhost".to_owned(), "alicepw".to_owned());
        users.insert("bob@localhost".to_owned(), "bobpw".to_owned());
        users.insert("carol@localhost".to_owned(), "carolpw".to_owned());
        Self {
            proxy: Proxy::new(c, now, 1_800_000_000),
            now,
            users,
            sent: Vec::new(),
            lookups: 0,
        }
    }

    fn record(&self, username: &str, realm: &str) -> Option<UserRecord> {
        let aor = if username.contains('@') {
            username.to_owned()
        } else {
            format!("{username}@{realm}")
        };
        let pw = self.users.get(&aor)?;
        Some(UserRecord {
            aor,
            ha1_md5: digest::ha1(Algorithm::Md5, username, realm, pw),
            ha1_sha256: digest::ha1(Algorithm::Sha256, username, realm, pw),
        })
    }

    /// Drains outputs, answering user lookups like the driver does.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let Some(o) = self.proxy.poll_output() else {
                return;
            };
            match o {
                Output::Transmit(t) => {
                    if t.payload[..] == b"\r\n"[..] {
                        self.sent
                            .push((t.peer, Message::Response(Response::new(StatusCode::OK))));
                        continue;
                    }
                    let m = Message::parse(t.payload.clone()).expect("core sends well-formed SIP");
                    self.sent.push((t.peer, m));
                }
                Output::LookupUser {
                    query,
                    username,
                    realm,
                } => {
                    self.lookups += 1;
                    let user = self.record(&username, &realm);
                    self.proxy
                        .handle_input(self.now, Input::User { query, user });
                }
                Output::Close(_) | Output::Persist(_) | Output::Security(_) => {}
                Output::Handoff(h) => panic!("no function of this node in these tests: {h:?}"),
            }
        }
        panic!("core keeps producing output");
    }

    fn send(&mut self, from: Peer, raw: &str) {
        let message =
            Message::parse(raw.replace('\n', "\r\n").into_bytes()).expect("test message parses");
        self.proxy.handle_input(
            self.now,
            Input::Message {
                peer: from,
                message,
            },
        );
        self.pump();
    }

    fn send_msg(&mut self, from: Peer, message: Message) {
        self.proxy.handle_input(
            self.now,
            Input::Message {
                peer: from,
                message,
            },
        );
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            match self.proxy.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.proxy.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn take(&mut self) -> Vec<(Peer, Message)> {
        std::mem::take(&mut self.sent)
    }

    fn responses_to(&mut self, peer: &str) -> Vec<Response> {
        let p = addr(peer);
        self.take()
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::Response(r) if to.addr == p => Some(r),
                _ => None,
            })
            .collect()
    }

    fn register(
        &mut self,
        user: &str,
        ua: &str,
        instance: &str,
        cseq: u32,
        username: Option<&str>,
    ) -> Response {
        let base = format!(
            "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP {ua};branch=z9hG4bKreg{user}{cseq}{instance}\nMax-Forwards: 70\n\
             From: <sip:{user}@localhost>;tag=r1\nTo: <sip:{user}@localhost>\nCall-ID: reg-{user}-{instance}\nCSeq: {cseq} REGISTER\n\
             Contact: <sip:{user}@{ua}>;+sip.instance=\"<urn:uuid:{instance}>\";reg-id=1;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\"\n\
             Expires: 600\nContent-Length: 0\n\n"
        );
        self.send(udp(ua), &base);
        let r = self.responses_to(ua).pop().expect("an answer to REGISTER");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        // Answer the SHA-256 challenge (the second one), as an RFC 8760 client does.
        let ch = r
            .headers
            .get_all(&HeaderName::WwwAuthenticate)
            .map(|h| Challenge::parse(&h.value().unwrap()).unwrap())
            .find(|c| c.algorithm == Algorithm::Sha256)
            .unwrap();
        let pw = self
            .users
            .get(&format!("{user}@localhost"))
            .cloned()
            .unwrap_or_else(|| "nope".into());
        let auth = digest::respond(
            &ch,
            "REGISTER",
            "sip:localhost",
            username.unwrap_or(user),
            &pw,
            "cn1",
            1,
        );
        let with_auth = base
            .replace(
                &format!("CSeq: {cseq} REGISTER"),
                &format!("CSeq: {} REGISTER", cseq + 1),
            )
            .replace(
                &format!("branch=z9hG4bKreg{user}{cseq}"),
                &format!("branch=z9hG4bKreg{user}{}", cseq + 1),
            )
            .replace(
                "Expires: 600\n",
                &format!("Expires: 600\nAuthorization: {auth}\n"),
            );
        self.send(udp(ua), &with_auth);
        self.responses_to(ua)
            .pop()
            .expect("an answer to the authenticated REGISTER")
    }
}

fn message(from: &str, to: &str, ua: &str, branch: &str, extra: &str) -> String {
    format!(
        "MESSAGE sip:{to} SIP/2.0\nVia: SIP/2.0/UDP {ua};branch=z9hG4bK{branch}\nMax-Forwards: 70\n\
         From: <sip:{from}>;tag=m1\nTo: <sip:{to}>\nCall-ID: msg-{branch}\nCSeq: 1 MESSAGE\n{extra}\
         Content-Type: text/plain\nContent-Length: 5\n\nhello"
    )
}

fn respond(req: &Request, status: u16) -> Message {
    let mut r =
        cpm_sip_core::transaction::response_to(req, StatusCode::new(status).unwrap(), Some("uas"));
    r.reason = "test".into();
    Message::Response(r)
}

fn requests(sent: &[(Peer, Message)]) -> Vec<(Peer, Request)> {
    sent.iter()
        .filter_map(|(p, m)| match m {
            Message::Request(r) => Some((*p, r.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn register_challenge_then_both_username_forms() {
    let mut net = Net::new(|_| {});
    let ok = net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let contacts: Vec<_> = ok.headers.get_all(&HeaderName::Contact).collect();
    assert_eq!(contacts.len(), 1);
    assert!(contacts[0].value().unwrap().contains("expires=600"));
    assert!(ok.headers.contains(&HeaderName::Date));
    // The IMS form of the digest username works too, and a second device adds a binding.
    let ok = net.register("alice", "127.0.0.1:5072", "a2", 1, Some("alice@localhost"));
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers.get_all(&HeaderName::Contact).count(), 2);
    assert_eq!(net.proxy.registrations(), 2);
}

#[test]
fn wrong_user_and_wrong_password_look_the_same() {
    let mut net = Net::new(|_| {});
    net.users.insert("mallory@localhost".into(), "x".into());
    // mallory's REGISTER signed with a wrong password...
    net.users.insert("mallory@localhost".into(), "wrong".into());
    let mut wrong_pw = net.register("mallory", "127.0.0.1:5073", "m", 1, None);
    // ...and an unknown user.
    let mut unknown = net.register("nobody", "127.0.0.1:5074", "n", 1, None);
    // The directory answers with the real password for mallory: we re-sign with "wrong" by
    // swapping the table after the fact, so compare the two refusals field by field.
    for r in [&mut wrong_pw, &mut unknown] {
        r.headers.remove_all(&HeaderName::Via);
        r.headers.remove_all(&HeaderName::From);
        r.headers.remove_all(&HeaderName::To);
        r.headers.remove_all(&HeaderName::CallId);
        r.headers.remove_all(&HeaderName::CSeq);
    }
    assert_eq!(
        wrong_pw.status,
        StatusCode::OK,
        "the table had the password used"
    );
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let names = |r: &Response| {
        r.headers
            .iter()
            .map(|h| h.name().clone())
            .collect::<Vec<_>>()
    };
    // An unknown user gets exactly the challenge a first REGISTER gets.
    let mut first = Net::new(|_| {});
    first.send(udp("127.0.0.1:5075"), "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5075;branch=z9hG4bKx\nFrom: <sip:bob@localhost>;tag=1\nTo: <sip:bob@localhost>\nCall-ID: x\nCSeq: 1 REGISTER\nContent-Length: 0\n\n");
    let mut plain = first.responses_to("127.0.0.1:5075").pop().unwrap();
    for n in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        plain.headers.remove_all(&n);
    }
    assert_eq!(names(&plain), names(&unknown));
    assert_eq!(plain.reason, unknown.reason);
}

#[test]
fn wrong_password_is_challenged_again() {
    let mut net = Net::new(|_| {});
    net.send(udp("127.0.0.1:5071"), "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKw1\nFrom: <sip:alice@localhost>;tag=1\nTo: <sip:alice@localhost>\nCall-ID: w\nCSeq: 1 REGISTER\nContact: <sip:alice@127.0.0.1:5071>\nContent-Length: 0\n\n");
    let r = net.responses_to("127.0.0.1:5071").pop().unwrap();
    let ch = Challenge::parse(
        &r.headers
            .get(&HeaderName::WwwAuthenticate)
            .unwrap()
            .value()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        ch.algorithm,
        Algorithm::Md5,
        "MD5 first by default, for deployed UAs"
    );
    let algs: Vec<Algorithm> = r
        .headers
        .get_all(&HeaderName::WwwAuthenticate)
        .map(|h| Challenge::parse(&h.value().unwrap()).unwrap().algorithm)
        .collect();
    assert_eq!(algs, [Algorithm::Md5, Algorithm::Sha256]);
    let auth = digest::respond(
        &ch,
        "REGISTER",
        "sip:localhost",
        "alice",
        "not-the-password",
        "c",
        1,
    );
    net.send(udp("127.0.0.1:5071"), &format!("REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKw2\nFrom: <sip:alice@localhost>;tag=1\nTo: <sip:alice@localhost>\nCall-ID: w\nCSeq: 2 REGISTER\nContact: <sip:alice@127.0.0.1:5071>\nAuthorization: {auth}\nContent-Length: 0\n\n"));
    let r = net.responses_to("127.0.0.1:5071").pop().unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(net.proxy.registrations(), 0);
    // Registering someone else's address is forbidden even with good credentials.
    let ch = Challenge::parse(
        &r.headers
            .get(&HeaderName::WwwAuthenticate)
            .unwrap()
            .value()
            .unwrap(),
    )
    .unwrap();
    let auth = digest::respond(&ch, "REGISTER", "sip:localhost", "alice", "alicepw", "c", 1);
    net.send(udp("127.0.0.1:5071"), &format!("REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKw3\nFrom: <sip:bob@localhost>;tag=1\nTo: <sip:bob@localhost>\nCall-ID: w\nCSeq: 3 REGISTER\nContact: <sip:alice@127.0.0.1:5071>\nAuthorization: {auth}\nContent-Length: 0\n\n"));
    assert_eq!(
        net.responses_to("127.0.0.1:5071").pop().unwrap().status,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn stale_nonce_gets_stale_true() {
    let mut net = Net::new(|_| {});
    net.send(udp("127.0.0.1:5071"), "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKs1\nFrom: <sip:alice@localhost>;tag=1\nTo: <sip:alice@localhost>\nCall-ID: s\nCSeq: 1 REGISTER\nContent-Length: 0\n\n");
    let r = net.responses_to("127.0.0.1:5071").pop().unwrap();
    let ch = Challenge::parse(
        &r.headers
            .get(&HeaderName::WwwAuthenticate)
            .unwrap()
            .value()
            .unwrap(),
    )
    .unwrap();
    net.advance(Duration::from_secs(400));
    let auth = digest::respond(&ch, "REGISTER", "sip:localhost", "alice", "alicepw", "c", 1);
    net.send(udp("127.0.0.1:5071"), &format!("REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKs2\nFrom: <sip:alice@localhost>;tag=1\nTo: <sip:alice@localhost>\nCall-ID: s\nCSeq: 2 REGISTER\nAuthorization: {auth}\nContent-Length: 0\n\n"));
    let r = net.responses_to("127.0.0.1:5071").pop().unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let ch = Challenge::parse(
        &r.headers
            .get(&HeaderName::WwwAuthenticate)
            .unwrap()
            .value()
            .unwrap(),
    )
    .unwrap();
    assert!(ch.stale);
}

#[test]
fn message_forks_to_every_device_and_first_2xx_wins() {
    let mut net = Net::new(|_| {});
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.register("bob", "127.0.0.1:6002", "b2", 1, None);
    net.take();
    // alice sends from her registered flow: no challenge.
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "bob@localhost",
            "127.0.0.1:5071",
            "m1",
            "",
        ),
    );
    let sent = net.take();
    let out = requests(&sent);
    assert_eq!(out.len(), 2, "{sent:?}");
    let dests: Vec<_> = out.iter().map(|(p, _)| p.addr.port()).collect();
    assert!(dests.contains(&6001) && dests.contains(&6002));
    for (_, r) in &out {
        assert_eq!(r.headers.max_forwards().unwrap(), Some(69));
        assert_eq!(r.headers.via().unwrap().len(), 2);
        let pai = r.headers.p_asserted_identity().unwrap();
        assert_eq!(pai[0].uri.to_string(), "sip:alice@localhost");
        assert_eq!(&r.body[..], b"hello");
    }
    // Device 1 says 200, device 2 says 486: alice sees exactly one 200.
    net.send_msg(out[0].0, respond(&out[0].1, 200));
    net.send_msg(out[1].0, respond(&out[1].1, 486));
    let rs = net.responses_to("127.0.0.1:5071");
    assert_eq!(
        rs.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(),
        [200]
    );
    assert_eq!(rs[0].headers.via().unwrap().len(), 1, "our Via removed");
    assert_eq!(net.proxy.stats().messages_forwarded, 2);
}

#[test]
fn best_response_when_all_fail_and_timeout_is_408() {
    let mut net = Net::new(|_| {});
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.register("bob", "127.0.0.1:6002", "b2", 1, None);
    net.take();
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "bob@localhost",
            "127.0.0.1:5071",
            "m2",
            "",
        ),
    );
    let out = requests(&net.take());
    net.send_msg(out[0].0, respond(&out[0].1, 486));
    assert!(
        net.responses_to("127.0.0.1:5071").is_empty(),
        "waits for every branch"
    );
    // The other device never answers: it is retransmitted, then times out (408); 486 wins.
    net.advance(Duration::from_secs(40));
    let sent = net.take();
    let retrans = requests(&sent)
        .iter()
        .filter(|(p, _)| p.addr.port() == 6002)
        .count();
    assert!(retrans >= 5, "UDP retransmissions: {retrans}");
    let rs: Vec<u16> = sent
        .iter()
        .filter_map(|(p, m)| match m {
            Message::Response(r) if p.addr.port() == 5071 => Some(r.status.as_u16()),
            _ => None,
        })
        .collect();
    assert_eq!(rs, [486]);
}

#[test]
fn unregistered_known_user_is_480_unknown_is_404() {
    let mut net = Net::new(|_| {});
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.take();
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "carol@localhost",
            "127.0.0.1:5071",
            "m3",
            "",
        ),
    );
    assert_eq!(
        net.responses_to("127.0.0.1:5071")[0].status,
        StatusCode::TEMPORARILY_UNAVAILABLE
    );
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "zed@localhost",
            "127.0.0.1:5071",
            "m4",
            "",
        ),
    );
    assert_eq!(
        net.responses_to("127.0.0.1:5071")[0].status,
        StatusCode::NOT_FOUND
    );
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "x@elsewhere.example",
            "127.0.0.1:5071",
            "m5",
            "",
        ),
    );
    assert_eq!(
        net.responses_to("127.0.0.1:5071")[0].status,
        StatusCode::NOT_FOUND,
        "no open relay"
    );
}

#[test]
fn unregistered_flow_is_challenged_with_407_then_forwarded() {
    let mut net = Net::new(|_| {});
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.take();
    let spoof = message(
        "alice@localhost",
        "bob@localhost",
        "127.0.0.1:7000",
        "p1",
        "P-Asserted-Identity: <sip:boss@localhost>\n",
    );
    net.send(udp("127.0.0.1:7000"), &spoof);
    let r = net.responses_to("127.0.0.1:7000").pop().unwrap();
    assert_eq!(r.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    let ch = Challenge::parse(
        &r.headers
            .get(&HeaderName::ProxyAuthenticate)
            .unwrap()
            .value()
            .unwrap(),
    )
    .unwrap();
    let auth = digest::respond(
        &ch,
        "MESSAGE",
        "sip:bob@localhost",
        "alice",
        "alicepw",
        "c",
        1,
    );
    let signed = spoof
        .replace("z9hG4bKp1", "z9hG4bKp2")
        .replace("CSeq: 1", "CSeq: 2")
        .replace(
            "Content-Type",
            &format!("Proxy-Authorization: {auth}\nContent-Type"),
        );
    net.send(udp("127.0.0.1:7000"), &signed);
    let out = requests(&net.take());
    assert_eq!(out.len(), 1);
    let fwd = &out[0].1;
    assert!(!fwd.headers.contains(&HeaderName::ProxyAuthorization));
    let pai = fwd.headers.p_asserted_identity().unwrap();
    assert_eq!(pai.len(), 1);
    assert_eq!(
        pai[0].uri.to_string(),
        "sip:alice@localhost",
        "spoofed PAI stripped, real one set"
    );
}

#[test]
fn trusted_peer_is_not_challenged_and_keeps_its_assertion() {
    let mut net = Net::new(|c| {
        c.trusted_peers
            .push(TrustedPeer::parse("127.0.0.9").unwrap())
    });
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.take();
    net.send(
        udp("127.0.0.9:5060"),
        &message(
            "alice@localhost",
            "bob@localhost",
            "127.0.0.9:5060",
            "t1",
            "P-Asserted-Identity: <sip:alice@localhost>\n",
        ),
    );
    let out = requests(&net.take());
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].1.headers.p_asserted_identity().unwrap()[0]
            .uri
            .to_string(),
        "sip:alice@localhost"
    );
}

#[test]
fn proxy_verdicts_for_the_semantic_torture_cases() {
    // The corpus messages are addressed to example.com: serve it.
    let mut net = Net::new(|c| c.domains = vec!["example.com".into()]);
    let corpus = format!(
        "{}/../../../shared/testdata/sip/rfc4475",
        env!("CARGO_MANIFEST_DIR")
    );
    for (file, code) in [
        ("zeromf.dat", 483),
        ("bext01.dat", 420),
        ("unkscm.dat", 416),
        ("novelsc.dat", 416),
        ("unksm2.dat", 400),
        ("regaut01.dat", 401),
    ] {
        let bytes = std::fs::read(format!("{corpus}/{file}")).unwrap();
        let message = Message::parse(bytes).unwrap();
        net.proxy.handle_input(
            net.now,
            Input::Message {
                peer: udp("192.0.2.1:5060"),
                message,
            },
        );
        net.pump();
        let got: Vec<u16> = net
            .take()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Message::Response(r) if r.status.as_u16() != 100 => Some(r.status.as_u16()),
                _ => None,
            })
            .collect();
        assert_eq!(got, [code], "{file}");
    }
}

#[test]
fn parse_errors_are_answered_from_the_raw_head_and_broadcast_is_dropped() {
    let mut net = Net::new(|_| {});
    let raw = Bytes::from_static(b"INVITE sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKx;;,;,,\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: e\r\nCSeq: 8 INVITE\r\nContent-Length: 0\r\n\r\n");
    let error = Message::parse(raw.clone()).unwrap_err();
    net.proxy.handle_input(
        net.now,
        Input::ParseError {
            peer: udp("192.0.2.15:5060"),
            error,
            raw,
        },
    );
    net.pump();
    let rs = net.responses_to("192.0.2.15:5060");
    assert_eq!(rs[0].status, StatusCode::BAD_REQUEST);
    assert_eq!(rs[0].reason, "Bad Via");
    assert!(rs[0].headers.contains(&HeaderName::CSeq));
    // RFC 4475 bcast.dat: a 200 whose next hop is 255.255.255.255 goes nowhere.
    let bytes = std::fs::read(format!(
        "{}/../../../shared/testdata/sip/rfc4475/bcast.dat",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    net.send_msg(udp("192.0.2.2:5060"), Message::parse(bytes).unwrap());
    assert!(net.take().is_empty());
}

#[test]
fn loop_is_482_and_keepalive_ping_gets_pong() {
    // The stranger's domain is a peer whose core is the sender.
    let mut net = Net::new(|c| {
        c.peer_domains
            .insert("other.example".into(), addr("127.0.0.1:7000"));
    });
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.take();
    // Forward once, then feed the forwarded copy back to the core: it carries our Via.
    net.send(
        udp("127.0.0.1:7000"),
        &message(
            "x@other.example",
            "bob@localhost",
            "127.0.0.1:7000",
            "l1",
            "",
        ),
    );
    let out = requests(&net.take());
    let mut looped = out[0].1.clone();
    looped.uri = "sip:bob@localhost".parse().unwrap();
    net.send_msg(udp("127.0.0.1:5060"), Message::Request(looped));
    let rs = net.responses_to("127.0.0.1:5060");
    assert_eq!(rs[0].status, StatusCode::LOOP_DETECTED);

    let tcp = Peer::tcp(addr("127.0.0.1:7001"), Some(ConnId(3)));
    net.proxy
        .handle_input(net.now, Input::KeepAlive { peer: tcp });
    net.pump();
    assert!(net.take().is_empty());
    net.proxy
        .handle_input(net.now, Input::KeepAlive { peer: tcp });
    net.pump();
    assert_eq!(net.take().len(), 1, "CRLFCRLF ping answered with CRLF");
}

#[test]
fn invite_fork_cancel_and_2xx() {
    let mut net = Net::new(|_| {});
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.register("bob", "127.0.0.1:6002", "b2", 1, None);
    net.take();
    let invite = "INVITE sip:bob@localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKi1\nMax-Forwards: 70\nFrom: <sip:alice@localhost>;tag=a\nTo: <sip:bob@localhost>\nCall-ID: call1\nCSeq: 1 INVITE\nContact: <sip:alice@127.0.0.1:5071>\nContent-Length: 0\n\n";
    net.send(udp("127.0.0.1:5071"), invite);
    let sent = net.take();
    assert!(sent.iter().any(|(p, m)| matches!(m, Message::Response(r) if r.status == StatusCode::TRYING && p.addr.port() == 5071)));
    let out = requests(&sent);
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|(_, r)| r.headers.contains(&HeaderName::RecordRoute))
    );
    // Both ring; device 2 answers; device 1 gets a CANCEL.
    net.send_msg(out[0].0, respond(&out[0].1, 180));
    net.send_msg(out[1].0, respond(&out[1].1, 180));
    let rings = net.responses_to("127.0.0.1:5071");
    assert_eq!(rings.len(), 2);
    net.send_msg(out[1].0, respond(&out[1].1, 200));
    let sent = net.take();
    let ok = sent
        .iter()
        .filter(|(p, m)| {
            p.addr.port() == 5071 && matches!(m, Message::Response(r) if r.status == StatusCode::OK)
        })
        .count();
    assert_eq!(ok, 1);
    let cancels: Vec<_> = requests(&sent)
        .into_iter()
        .filter(|(_, r)| r.method == Method::Cancel)
        .collect();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].0.addr.port(), 6001);
    // Device 1 answers 487 to its INVITE: absorbed (the caller has its 200), ACKed by us.
    net.send_msg(out[0].0, respond(&out[0].1, 487));
    let sent = net.take();
    assert!(sent.iter().all(|(p, _)| p.addr.port() != 5071));
    assert!(
        requests(&sent)
            .iter()
            .any(|(p, r)| r.method == Method::Ack && p.addr.port() == 6001)
    );
}

#[test]
fn caller_cancel_reaches_every_branch() {
    let mut net = Net::new(|_| {});
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.take();
    let invite = "INVITE sip:bob@localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKc1\nMax-Forwards: 70\nFrom: <sip:alice@localhost>;tag=a\nTo: <sip:bob@localhost>\nCall-ID: call2\nCSeq: 1 INVITE\nContent-Length: 0\n\n";
    net.send(udp("127.0.0.1:5071"), invite);
    let out = requests(&net.take());
    net.send_msg(out[0].0, respond(&out[0].1, 180));
    net.take();
    net.send(
        udp("127.0.0.1:5071"),
        &invite
            .replace("INVITE sip", "CANCEL sip")
            .replace("1 INVITE", "1 CANCEL"),
    );
    let sent = net.take();
    assert!(sent.iter().any(|(p, m)| p.addr.port() == 5071
        && matches!(m, Message::Response(r) if r.status == StatusCode::OK)));
    let cancel = requests(&sent)
        .into_iter()
        .find(|(_, r)| r.method == Method::Cancel)
        .expect("CANCEL forwarded");
    net.send_msg(cancel.0, respond(&cancel.1, 200));
    net.send_msg(out[0].0, respond(&out[0].1, 487));
    let rs = net.responses_to("127.0.0.1:5071");
    assert_eq!(
        rs.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(),
        [487]
    );
}

#[test]
fn cpm_requests_go_through_both_participating_functions() {
    let mut net = Net::new(|c| c.application_servers.push(pf_for(Service::Any)));
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.take();
    let cpm = "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\nAccept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\"\n";
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "bob@localhost",
            "127.0.0.1:5071",
            "c1",
            cpm,
        ),
    );
    let out = requests(&net.take());
    assert_eq!(out.len(), 1);
    let (to_pf, orig) = &out[0];
    assert_eq!(to_pf.addr, addr(PF), "originating PF first");
    let routes = orig.headers.route().unwrap();
    assert_eq!(routes.len(), 2);
    assert!(routes[1].uri.to_string().contains("cpm=orig"));
    assert_eq!(
        orig.headers.p_asserted_service().unwrap(),
        ["urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg"]
    );
    // The PF (a proxy here) sends it back along the Route: popped PF route, our route next.
    let mut back = orig.clone();
    back.headers.remove_first(&HeaderName::Route);
    back.headers.push_front(cpm_sip::Header::new(
        HeaderName::Via,
        "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKpf1",
    ));
    net.send_msg(udp(PF), Message::Request(back));
    let out = requests(&net.take());
    assert_eq!(out[0].0.addr, addr(PF), "then the terminating PF");
    assert!(
        out[0].1.headers.route().unwrap()[1]
            .uri
            .to_string()
            .contains("cpm=term")
    );
    let mut back = out[0].1.clone();
    back.headers.remove_first(&HeaderName::Route);
    back.headers.push_front(cpm_sip::Header::new(
        HeaderName::Via,
        "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKpf2",
    ));
    net.send_msg(udp(PF), Message::Request(back));
    let out = requests(&net.take());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.addr.port(), 6001, "finally bob's device");
    // A non-CPM MESSAGE goes straight to the device.
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "bob@localhost",
            "127.0.0.1:5071",
            "c2",
            "",
        ),
    );
    assert_eq!(requests(&net.take())[0].0.addr.port(), 6001);
}

#[test]
fn other_domains_through_their_core() {
    let mut net = Net::new(|c| {
        c.peer_domains
            .insert("example.net".into(), addr("127.0.0.1:5062"));
    });
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.take();
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "dave@example.net",
            "127.0.0.1:5071",
            "d1",
            "",
        ),
    );
    let out = requests(&net.take());
    assert_eq!(out[0].0.addr, addr("127.0.0.1:5062"));
    assert_eq!(out[0].1.uri.to_string(), "sip:dave@example.net");
    // A stranger may not use us to reach example.net.
    net.send(
        udp("127.0.0.1:7777"),
        &message(
            "eve@evil.example",
            "dave@example.net",
            "127.0.0.1:7777",
            "d2",
            "",
        ),
    );
    assert_eq!(
        net.responses_to("127.0.0.1:7777")[0].status,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn retransmitted_request_is_absorbed_not_forwarded_twice() {
    let mut net = Net::new(|_| {});
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.take();
    let m = message(
        "alice@localhost",
        "bob@localhost",
        "127.0.0.1:5071",
        "r1",
        "",
    );
    net.send(udp("127.0.0.1:5071"), &m);
    net.send(udp("127.0.0.1:5071"), &m);
    assert_eq!(requests(&net.take()).len(), 1);
}

#[test]
fn third_party_registration_delivers_to_the_contact_uri() {
    // SIPp-style: the REGISTER comes from one port, the Contact names another (no reg-id):
    // requests go to the Contact URI (RFC 3261 16.5), not to where the REGISTER came from.
    let mut net = Net::new(|c| {
        c.trusted_peers
            .push(TrustedPeer::parse("127.0.0.5").unwrap())
    });
    net.send(
        udp("127.0.0.5:7000"),
        "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.5:7000;branch=z9hG4bKtp1\nFrom: <sip:bob@localhost>;tag=1\nTo: <sip:bob@localhost>\nCall-ID: tp\nCSeq: 1 REGISTER\nContact: <sip:bob@127.0.0.1:7100>\nContent-Length: 0\n\n",
    );
    assert_eq!(net.responses_to("127.0.0.5:7000")[0].status, StatusCode::OK);
    net.send(
        udp("127.0.0.5:7001"),
        &message(
            "x@other.example",
            "bob@localhost",
            "127.0.0.5:7001",
            "tp2",
            "",
        ),
    );
    let out = requests(&net.take());
    assert_eq!(out[0].0.addr, addr("127.0.0.1:7100"));
}

#[test]
fn in_dialog_request_without_our_route_is_not_relayed() {
    let mut net = Net::new(|_| {});
    // A BYE with a To tag and no Route through us, to some address, from a stranger: 403
    // (the sender's domain is not served from there), never relayed.
    net.send(
        udp("127.0.0.1:7200"),
        "BYE sip:someone@192.0.2.99:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:7200;branch=z9hG4bKbye1\nMax-Forwards: 70\nFrom: <sip:x@other.example>;tag=1\nTo: <sip:y@another.example>;tag=2\nCall-ID: d1\nCSeq: 2 BYE\nContent-Length: 0\n\n",
    );
    let sent = net.take();
    assert!(requests(&sent).is_empty());
    assert!(
        sent.iter()
            .any(|(_, m)| matches!(m, Message::Response(r) if r.status == StatusCode::FORBIDDEN))
    );
    // From a peer domain's core, the same request is still not ours to relay: 404.
    let mut net = Net::new(|c| {
        c.peer_domains
            .insert("other.example".into(), addr("127.0.0.1:7200"));
    });
    net.send(
        udp("127.0.0.1:7200"),
        "BYE sip:someone@192.0.2.99:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:7200;branch=z9hG4bKbye1\nMax-Forwards: 70\nFrom: <sip:x@other.example>;tag=1\nTo: <sip:y@another.example>;tag=2\nCall-ID: d1\nCSeq: 2 BYE\nContent-Length: 0\n\n",
    );
    let sent = net.take();
    assert!(requests(&sent).is_empty());
    assert!(
        sent.iter()
            .any(|(_, m)| matches!(m, Message::Response(r) if r.status == StatusCode::NOT_FOUND))
    );
}

/// RFC 3841 `require` on the ICSI: only devices that registered the service get the request;
/// none left is 480.
#[test]
fn required_service_selects_the_devices_that_registered_it() {
    let mut net = Net::new(|_| {});
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.take();
    let deferred = "Accept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.deferred\";require\n";
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "bob@localhost",
            "127.0.0.1:5071",
            "r1",
            deferred,
        ),
    );
    let sent = net.take();
    assert!(requests(&sent).is_empty(), "{sent:?}");
    let rs: Vec<u16> = sent
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Response(r) => Some(r.status.as_u16()),
            _ => None,
        })
        .collect();
    assert_eq!(rs, [480]);
    let msg = "Accept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\";require;explicit\n";
    net.send(
        udp("127.0.0.1:5071"),
        &message(
            "alice@localhost",
            "bob@localhost",
            "127.0.0.1:5071",
            "r2",
            msg,
        ),
    );
    let out = requests(&net.take());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.addr.port(), 6001);
}

/// A CPM request from a trusted peer (a P-CSCF in front) asserting a local user gets that
/// user's originating services: it goes to the originating PF first.
#[test]
fn trusted_peer_asserting_a_local_user_gets_originating_services() {
    let mut net = Net::new(|c| {
        c.application_servers.push(pf_for(Service::Any));
        c.trusted_peers
            .push(TrustedPeer::parse("127.0.0.9").unwrap());
    });
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.take();
    let cpm = "P-Asserted-Identity: <sip:alice@localhost>\nP-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\n";
    net.send(
        udp("127.0.0.9:5060"),
        &message(
            "alice@localhost",
            "bob@localhost",
            "127.0.0.9:5060",
            "tp1",
            cpm,
        ),
    );
    let out = requests(&net.take());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.addr, addr(PF));
    assert!(
        out[0].1.headers.route().unwrap()[1]
            .uri
            .to_string()
            .contains("cpm=orig")
    );
}

/// With a PF that serves MESSAGE only, a CPM INVITE (a chat session) is relayed straight to
/// the target's devices.
#[test]
fn methods_the_pf_does_not_serve_are_relayed() {
    let mut net = Net::new(|c| {
        c.application_servers.push(pf_for(Service::Pager));
    });
    net.register("alice", "127.0.0.1:5071", "a1", 1, None);
    net.register("bob", "127.0.0.1:6001", "b1", 1, None);
    net.take();
    let invite = "INVITE sip:bob@localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKinv1\nMax-Forwards: 70\n\
         From: <sip:alice@localhost>;tag=i1\nTo: <sip:bob@localhost>\nCall-ID: inv-1\nCSeq: 1 INVITE\n\
         Contact: <sip:alice@127.0.0.1:5071>\nP-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session\n\
         Content-Length: 0\n\n";
    net.send(udp("127.0.0.1:5071"), invite);
    let out = requests(&net.take());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.addr.port(), 6001, "straight to bob's device");
}

/// Issue 10, hole 1: a preloaded Route from a sender the core has not authenticated (here a
/// peer domain's core, which passes the sender rule) does not make the core send anywhere;
/// the trust domain's does.
#[test]
fn preloaded_route_is_followed_only_for_the_trust_domain() {
    let mut net = Net::new(|c| {
        c.peer_domains
            .insert("other.example".into(), addr("127.0.0.1:7300"));
        c.trusted_peers
            .push(TrustedPeer::parse("127.0.0.2").unwrap());
    });
    let route = "Route: <sip:192.0.2.50:5060;lr>\n";
    net.send(
        udp("127.0.0.1:7300"),
        &message(
            "x@other.example",
            "bob@localhost",
            "127.0.0.1:7300",
            "pr1",
            route,
        ),
    );
    let sent = net.take();
    assert!(requests(&sent).is_empty(), "nothing forwarded: {sent:?}");
    assert!(sent.iter().any(
        |(_, m)| matches!(m, Message::Response(r) if r.status == StatusCode::FORBIDDEN && r.reason == "Route Not Allowed")
    ));
    net.send(
        udp("127.0.0.2:5060"),
        &message(
            "x@other.example",
            "bob@localhost",
            "127.0.0.2:5060",
            "pr2",
            route,
        ),
    );
    let out = requests(&net.take());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.addr, addr("192.0.2.50:5060"));
    assert_eq!(net.proxy.stats().relay_refused, 1);
}

/// Issue 10, hole 2: the same REGISTER credentials used twice get a stale challenge.
#[test]
fn replayed_register_credentials_get_a_stale_challenge() {
    let mut net = Net::new(|_| {});
    let base = "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:7400;branch=z9hG4bKrp{n}\n\
         Max-Forwards: 70\nFrom: <sip:alice@localhost>;tag=r\nTo: <sip:alice@localhost>\n\
         Call-ID: rp{n}\nCSeq: {n} REGISTER\nContact: <sip:alice@127.0.0.1:7400>\n{auth}Content-Length: 0\n\n";
    let text = |n: u32, auth: &str| base.replace("{n}", &n.to_string()).replace("{auth}", auth);
    net.send(udp("127.0.0.1:7400"), &text(1, ""));
    let r = net.responses_to("127.0.0.1:7400").pop().unwrap();
    let ch = r
        .headers
        .get_all(&HeaderName::WwwAuthenticate)
        .map(|h| Challenge::parse(&h.value().unwrap()).unwrap())
        .next()
        .unwrap();
    let auth = digest::respond(&ch, "REGISTER", "sip:localhost", "alice", "alicepw", "c", 1);
    let line = format!("Authorization: {auth}\n");
    net.send(udp("127.0.0.1:7400"), &text(2, &line));
    assert_eq!(
        net.responses_to("127.0.0.1:7400").pop().unwrap().status,
        StatusCode::OK
    );
    // From another address, later: the same header is a replay.
    net.advance(Duration::from_secs(100));
    net.send(
        udp("127.0.0.1:7401"),
        &text(3, &line).replace("7400", "7401"),
    );
    let r = net.responses_to("127.0.0.1:7401").pop().unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers
            .get(&HeaderName::WwwAuthenticate)
            .unwrap()
            .value()
            .unwrap()
            .contains("stale=true")
    );
    assert_eq!(net.proxy.stats().replays_refused, 1);
    // The next nonce count of the same nonce is a client reusing its nonce: accepted.
    let auth2 = digest::respond(&ch, "REGISTER", "sip:localhost", "alice", "alicepw", "c", 2);
    net.send(
        udp("127.0.0.1:7400"),
        &text(4, &format!("Authorization: {auth2}\n")),
    );
    assert_eq!(
        net.responses_to("127.0.0.1:7400").pop().unwrap().status,
        StatusCode::OK
    );
}

/// Issue 10, hole 3 on virtual time: failures block the source, silently over UDP; the
/// block ends, and the next one lasts twice as long.
#[test]
fn failed_authentications_block_the_source_with_a_growing_back_off() {
    let mut net = Net::new(|c| {
        c.auth_throttle.max_source_failures = 3;
        c.auth_throttle.block = Duration::from_secs(10);
    });
    let ua = "127.0.0.9:7500";
    let mut n = 0;
    let mut attempt = |net: &mut Net| -> Option<StatusCode> {
        n += 1;
        let text = format!(
            "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP {ua};branch=z9hG4bKg{n}\nMax-Forwards: 70\n\
             From: <sip:alice@localhost>;tag=g\nTo: <sip:alice@localhost>\nCall-ID: g{n}\nCSeq: 1 REGISTER\n\
             Contact: <sip:alice@{ua}>\nContent-Length: 0\n\n"
        );
        net.send(udp(ua), &text);
        let r = net.responses_to(ua).pop()?;
        let ch = r
            .headers
            .get_all(&HeaderName::WwwAuthenticate)
            .map(|h| Challenge::parse(&h.value().unwrap()).unwrap())
            .next()?;
        let auth = digest::respond(&ch, "REGISTER", "sip:localhost", "alice", "wrong", "c", 1);
        let signed = text
            .replace(
                &format!("branch=z9hG4bKg{n}"),
                &format!("branch=z9hG4bKg{n}b"),
            )
            .replace("Contact:", &format!("Authorization: {auth}\nContact:"));
        net.send(udp(ua), &signed);
        net.responses_to(ua).pop().map(|r| r.status)
    };
    for _ in 0..3 {
        assert_eq!(attempt(&mut net), Some(StatusCode::UNAUTHORIZED));
    }
    assert_eq!(attempt(&mut net), None, "blocked: silence over UDP");
    net.advance(Duration::from_secs(11));
    for _ in 0..3 {
        assert_eq!(attempt(&mut net), Some(StatusCode::UNAUTHORIZED));
    }
    net.advance(Duration::from_secs(11));
    assert_eq!(attempt(&mut net), None, "the second block lasts 20 s");
    net.advance(Duration::from_secs(10));
    assert_eq!(attempt(&mut net), Some(StatusCode::UNAUTHORIZED));
    let s = net.proxy.stats();
    assert_eq!((s.auth_failures, s.auth_blocks), (7, 2));
}

/// Issue 10, hole 7: past its burst a source's out-of-dialog requests are dropped over UDP
/// and answered 503 with Retry-After over TCP, before any transaction; the bucket refills.
#[test]
fn a_source_over_its_rate_is_dropped_on_udp_and_told_503_on_tcp() {
    let mut net = Net::new(|c| {
        c.source_rate = 10;
        c.source_burst = 5;
    });
    let options = |ua: &str, n: u32| {
        format!(
            "OPTIONS sip:127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {ua};branch=z9hG4bKo{n}\nMax-Forwards: 70\n\
             From: <sip:x@{ua}>;tag=o\nTo: <sip:127.0.0.1:5060>\nCall-ID: o{n}\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
        )
    };
    for n in 0..8 {
        net.send(udp("127.0.0.9:7600"), &options("127.0.0.9:7600", n));
    }
    assert_eq!(net.responses_to("127.0.0.9:7600").len(), 5);
    let tcp = Peer::tcp(addr("127.0.0.8:7601"), Some(ConnId(9)));
    for n in 10..16 {
        net.send(tcp, &options("127.0.0.8:7601", n));
    }
    let rs = net.responses_to("127.0.0.8:7601");
    assert_eq!(rs.iter().filter(|r| r.status == StatusCode::OK).count(), 5);
    let refused: Vec<_> = rs
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].headers.contains(&HeaderName::RetryAfter));
    // 100 ms at 10/s is one more request.
    net.advance(Duration::from_millis(100));
    net.send(udp("127.0.0.9:7600"), &options("127.0.0.9:7600", 30));
    assert_eq!(net.responses_to("127.0.0.9:7600").len(), 1);
    assert_eq!(net.proxy.stats().rate_limited, 4);
}

/// The table row that sends CPM requests of `service` to the PF at [`PF`] over UDP.
fn pf_for(service: Service) -> cpm_proxy::ApplicationServer {
    cpm_proxy::ApplicationServer {
        service,
        server: Peer::udp(addr(PF)),
    }
}

/// The user directory is read off the loop, so its answers can fall behind: past
/// `max_pending_lookups` waiting requests, a new one is refused at once with 503 and
/// Retry-After instead of joining an unbounded queue.
#[test]
fn requests_waiting_for_the_directory_are_bounded() {
    let now = Instant::now();
    let mut c = ProxyConfig::new("localhost", addr(CORE));
    c.trusted_peers
        .push(TrustedPeer::parse("127.0.0.9").unwrap());
    c.max_pending_lookups = 2;
    let mut proxy = Proxy::new(c, now, 1_800_000_000);
    let mut lookups = 0;
    let mut refused = Vec::new();
    for i in 0..3 {
        // bob has no binding: the core asks the directory whether he exists (480 or 404).
        let raw = format!(
            "MESSAGE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKq{i}\r\nMax-Forwards: 70\r\nFrom: <sip:carol@peer.test>;tag={i}\r\nTo: <sip:bob@localhost>\r\nCall-ID: q{i}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        );
        let message = Message::parse(raw.into_bytes()).unwrap();
        proxy.handle_input(
            now,
            Input::Message {
                peer: udp("127.0.0.9:5060"),
                message,
            },
        );
        while let Some(o) = proxy.poll_output() {
            match o {
                Output::LookupUser { .. } => lookups += 1,
                Output::Transmit(t) => match Message::parse(t.payload).unwrap() {
                    Message::Response(r) => refused.push(r),
                    Message::Request(r) => panic!("nothing is forwarded: {r:?}"),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(lookups, 2, "two requests wait for the directory");
    assert_eq!(refused.len(), 1, "the third is answered at once");
    assert_eq!(refused[0].status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused[0].headers.contains(&HeaderName::RetryAfter));
}
