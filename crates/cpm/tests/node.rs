//! End-to-end tests of `cpm serve` with a minimal SIP user agent written with our own codec:
//! users added while the node runs, UDP and TCP, keep-alives, metrics, configuration, shutdown,
//! one node per data directory.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{Node, TempDir, cpm_bin, free_port};
use cpm_sip::{Frame, HeaderName, Message, Response, StreamFramer};
use cpm_sip_core::digest::{self, Challenge};

fn parse_response(bytes: &[u8]) -> Response {
    match Message::parse(Bytes::copy_from_slice(bytes)) {
        Ok(Message::Response(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

/// A UDP user agent: sends a request and returns the first final response.
struct UdpUa {
    sock: UdpSocket,
}

impl UdpUa {
    fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        Self { sock }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().expect("addr").port()
    }

    fn request(&self, node: &Node, text: &str) -> Response {
        self.sock
            .send_to(text.replace('\n', "\r\n").as_bytes(), node.sip)
            .expect("send");
        let mut buf = [0u8; 65535];
        loop {
            let n = self.sock.recv(&mut buf).expect("an answer within 3 s");
            let r = parse_response(&buf[..n]);
            if r.status.is_final() {
                return r;
            }
        }
    }
}

fn register_text(user: &str, port: u16, transport: &str, cseq: u32, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bKnode{cseq}{port}\n\
         Max-Forwards: 70\nFrom: <sip:{user}@localhost>;tag=n1\nTo: <sip:{user}@localhost>\n\
         Call-ID: node-{user}-{port}\nCSeq: {cseq} REGISTER\nContact: <sip:{user}@127.0.0.1:{port};transport={}>\n\
         Expires: 300\n{auth}Content-Length: 0\n\n",
        transport.to_ascii_lowercase()
    )
}

fn answer_challenge(r: &Response, user: &str, pw: &str) -> String {
    let ch = r
        .headers
        .get(&HeaderName::WwwAuthenticate)
        .expect("a challenge");
    let ch = Challenge::parse(&ch.value().expect("text")).expect("parses");
    digest::respond(&ch, "REGISTER", "sip:localhost", user, pw, "0a4f113b", 1)
}

#[test]
fn user_added_while_running_can_register_at_once() {
    let node = Node::start(&[], &[]);
    let ua = UdpUa::new();
    let r = ua.request(&node, &register_text("carol", ua.port(), "UDP", 1, None));
    assert_eq!(r.status.as_u16(), 401);
    let auth = answer_challenge(&r, "carol", "carolpw");
    // Not a user yet: the same challenge as for a wrong password.
    let r = ua.request(
        &node,
        &register_text("carol", ua.port(), "UDP", 2, Some(&auth)),
    );
    assert_eq!(r.status.as_u16(), 401);
    let st = Command::new(cpm_bin())
        .args([
            "admin",
            "user",
            "add",
            "carol@localhost",
            "--password",
            "carolpw",
            "--data-dir",
        ])
        .arg(node.data.path())
        .status()
        .expect("cpm admin");
    assert!(st.success());
    let auth = answer_challenge(&r, "carol", "carolpw");
    let r = ua.request(
        &node,
        &register_text("carol", ua.port(), "UDP", 3, Some(&auth)),
    );
    assert_eq!(r.status.as_u16(), 200, "log:\n{}", node.log());
    // The metrics are published after the loop turn that sent the 200.
    assert_eq!(
        node.wait_metric("cpm_registrations", |v| v == 1, Duration::from_secs(5)),
        Some(1)
    );
    assert!(node.metric("cpm_auth_challenges_total").unwrap_or(0) >= 2);
}

#[test]
fn tcp_register_message_and_keepalive() {
    let node = Node::start(
        &[("dave@localhost", "davepw"), ("erin@localhost", "erinpw")],
        &[],
    );
    let mut tcp = TcpStream::connect(node.sip).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let port = tcp.local_addr().expect("addr").port();
    let mut framer = StreamFramer::default();
    let mut buf = BytesMut::new();
    let mut next_frame = |tcp: &mut TcpStream| -> Frame {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(f) = framer.decode(&mut buf).expect("well-framed") {
                return f;
            }
            assert!(Instant::now() < deadline, "no frame in 3 s");
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let mut final_response = |tcp: &mut TcpStream| -> Response {
        loop {
            if let Frame::Message(Message::Response(r)) = next_frame(tcp)
                && r.status.is_final()
            {
                return r;
            }
        }
    };
    tcp.write_all(
        register_text("dave", port, "TCP", 1, None)
            .replace('\n', "\r\n")
            .as_bytes(),
    )
    .expect("write");
    let r = final_response(&mut tcp);
    assert_eq!(r.status.as_u16(), 401);
    let auth = answer_challenge(&r, "dave@localhost", "davepw");
    tcp.write_all(
        register_text("dave", port, "TCP", 2, Some(&auth))
            .replace('\n', "\r\n")
            .as_bytes(),
    )
    .expect("write");
    let r = final_response(&mut tcp);
    assert_eq!(r.status.as_u16(), 200, "log:\n{}", node.log());

    // RFC 5626 keep-alive: CRLFCRLF ping, CRLF pong.
    tcp.write_all(b"\r\n\r\n").expect("write");
    let mut pong = [0u8; 2];
    tcp.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");

    // erin (registered over UDP) sends dave a MESSAGE from her registered flow: it arrives
    // over dave's own TCP connection.
    let ua = UdpUa::new();
    let r = ua.request(&node, &register_text("erin", ua.port(), "UDP", 1, None));
    let auth = answer_challenge(&r, "erin", "erinpw");
    let r = ua.request(
        &node,
        &register_text("erin", ua.port(), "UDP", 2, Some(&auth)),
    );
    assert_eq!(r.status.as_u16(), 200, "log:\n{}", node.log());
    ua.sock
        .send_to(
            format!(
                "MESSAGE sip:dave@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bKm1\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:erin@localhost>;tag=e\r\nTo: <sip:dave@localhost>\r\n\
                 Call-ID: m1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
                ua.port()
            )
            .as_bytes(),
            node.sip,
        )
        .expect("send");
    let req = loop {
        if let Frame::Message(Message::Request(r)) = next_frame(&mut tcp) {
            break r;
        }
    };
    assert_eq!(&req.body[..], b"hi");
    let mut ok = cpm_sip_core::transaction::response_to(&req, cpm_sip::StatusCode::OK, Some("d"));
    ok.reason = "OK".into();
    tcp.write_all(&ok.to_bytes()).expect("write");
    let mut b = [0u8; 65535];
    let r = loop {
        let n = ua.sock.recv(&mut b).expect("the 200 comes back");
        let r = parse_response(&b[..n]);
        if r.status.is_final() {
            break r;
        }
    };
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(node.metric("cpm_messages_forwarded_total"), Some(1));
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let mut node = Node::start(&[], &[]);
    assert!(
        node.stop(),
        "exit status 0 after SIGTERM; log:\n{}",
        node.log()
    );
    assert!(node.log().contains("shutting down"));
}

#[test]
fn config_file_and_print_config() {
    let dir = TempDir::new("cfg");
    let path = dir.path().join("cpm.toml");
    std::fs::write(
        &path,
        "domains = [\"example.org\"]\ntrusted_peers = [\"10.0.0.0/8\"]\n[registrar]\nmin_expires = 30\n",
    )
    .expect("write");
    let out = Command::new(cpm_bin())
        .args(["serve", "--print-config", "--config"])
        .arg(&path)
        .args(["--sip-listen", "127.0.0.1:5999"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("domains = [\"example.org\"]"), "{text}");
    assert!(text.contains("min_expires = 30"), "{text}");
    assert!(text.contains("sip_listen = \"127.0.0.1:5999\""), "{text}");

    // A typo is an error, not a silently ignored key.
    std::fs::write(&path, "domian = \"x\"\n").expect("write");
    let out = Command::new(cpm_bin())
        .args(["serve", "--print-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("domian"));

    // A bad trusted peer and a port in use are clear errors too.
    let out = Command::new(cpm_bin())
        .args([
            "serve",
            "--print-config",
            "--trusted-peer",
            "not-an-address",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let node = Node::start(&[], &[]);
    let out = Command::new(cpm_bin())
        .args([
            "serve",
            "--sip-listen",
            &node.sip.to_string(),
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen for SIP"));
}

/// A second `cpm serve` on a data directory a node is using stops at once with a clear
/// message and exit status 1 (its own ports are free: the lock is what refuses it); the lock
/// goes with its holder, even one killed with SIGKILL.
#[test]
fn second_node_on_one_data_directory_is_refused() {
    let mut node = Node::start(&[], &[]);
    let mut second = Command::new(cpm_bin())
        .arg("serve")
        .args(["--sip-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(node.data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second cpm serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(st)) = second.try_wait() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = second.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the second node must stop with status 1; stderr: {err}"
    );
    let pid = node.child.id().to_string();
    assert!(
        err.contains("is in use by another cpm serve") && err.contains(&pid),
        "{err}"
    );
    assert!(err.contains("cpm.lock"), "{err}");
    // The first node is unaffected, and after a SIGKILL the lock is free again.
    assert!(node.http_get("/health").is_some_and(|b| b.contains("ok")));
    node.kill9_and_restart();
    assert!(node.stop(), "log:\n{}", node.log());
}
