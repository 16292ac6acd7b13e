//! `cpm client` end to end: the real binary against a real `cpm serve` on free loopback ports
//! (listeners over UDP and TCP, 1-1 and 1-N sends, delivery notifications, errors, exit
//! statuses), and `history` against a scripted HTTP server that checks the digest.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Node, TempDir, cpm_bin, free_port, run_client};
use cpm_sip_core::digest::{self, Algorithm, Credentials};
use serde_json::Value;

const USERS: &[(&str, &str)] = &[
    ("alice@localhost", "alicepw"),
    ("bob@localhost", "bobpw"),
    ("carol@localhost", "carolpw"),
];

/// A `cpm client ... listen --json` child whose stdout lines arrive on a channel.
struct Listener {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: String,
}

impl Listener {
    fn start(node: &Node, user: &str, pw: &str, transport: &str, device: &str) -> Self {
        Self::start_with(node, user, pw, transport, device, &[])
    }

    /// [`Listener::start`] with more `listen` flags.
    fn start_with(
        node: &Node,
        user: &str,
        pw: &str,
        transport: &str,
        device: &str,
        extra: &[&str],
    ) -> Self {
        let mut child = Command::new(cpm_bin())
            .args(["client", "--server", &node.sip.to_string()])
            .args(["--user", user, "--password", pw, "--transport", transport])
            .args(["listen", "--json", "--device", device])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cpm client listen");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut l = Self {
            child,
            lines: rx,
            name: format!("{user}/{device}/{transport}"),
        };
        l.wait_for("registered", |v| v["type"] == "registered");
        l
    }

    /// The next line satisfying `want`, within 15 s (other lines are skipped).
    fn wait_for(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", self.name));
                    if want(&v) {
                        return v;
                    }
                    seen.push(line);
                }
                Err(_) => break,
            }
        }
        panic!("{}: no {what} line; saw {seen:#?}", self.name);
    }

    /// SIGTERM, then a bounded wait for the exit; the lines printed meanwhile.
    fn stop(self) -> (Option<ExitStatus>, Vec<String>) {
        self.stop_with("TERM")
    }

    /// `kill -SIGNAL`, then a bounded wait for the exit; the lines printed meanwhile.
    fn stop_with(mut self, signal: &str) -> (Option<ExitStatus>, Vec<String>) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                status = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader thread may still be forwarding the last lines: read until it sees the
        // end of the pipe (bounded).
        let mut lines = Vec::new();
        if status.is_some() {
            while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
                lines.push(l);
            }
        } else {
            lines.extend(self.lines.try_iter());
        }
        (status, lines)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn alice(node: &Node) -> Vec<String> {
    vec![
        "--server".into(),
        node.sip.to_string(),
        "--user".into(),
        "alice@localhost".into(),
        "--password".into(),
        "alicepw".into(),
    ]
}

fn with(base: &[String], extra: &[&str]) -> Vec<String> {
    base.iter()
        .cloned()
        .chain(extra.iter().map(|s| (*s).to_owned()))
        .collect()
}

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_client(&refs)
}

fn is_uuid(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 36 && s.bytes().filter(|&b| b == b'-').count() == 4)
}

#[test]
fn message_reaches_udp_and_tcp_devices_and_imdn_comes_back() {
    let node = Node::start(USERS, &[]);
    let mut phone = Listener::start(&node, "bob@localhost", "bobpw", "udp", "phone");
    let mut laptop = Listener::start(&node, "bob@localhost", "bobpw", "tcp", "laptop");

    let (code, out, err) = run(&with(
        &alice(&node),
        &["send", "bob@localhost", "hello bob"],
    ));
    assert_eq!(
        code,
        0,
        "stdout {out} stderr {err}\nnode log:\n{}",
        node.log()
    );
    assert_eq!(out.trim(), "200 OK", "{err}");

    let mut ids = Vec::new();
    for l in [&mut phone, &mut laptop] {
        let m = l.wait_for("message", |v| v["type"] == "message");
        assert_eq!(m["from"], "alice@localhost");
        assert_eq!(m["to"], "bob@localhost");
        assert_eq!(m["text"], "hello bob");
        assert_eq!(m["deferred"], false);
        assert!(is_uuid(&m["conversation_id"]), "{m}");
        assert!(is_uuid(&m["contribution_id"]), "{m}");
        assert!(m["message_id"].as_str().is_some_and(|s| !s.is_empty()));
        ids.push((
            m["message_id"].clone(),
            m["conversation_id"].clone(),
            m["contribution_id"].clone(),
        ));
    }
    assert_eq!(ids[0], ids[1], "both devices got the same message");

    // With --wait-imdn the sender registers and prints the delivery notification.
    let (code, out, err) = run(&with(
        &alice(&node),
        &[
            "send",
            "--to",
            "bob@localhost",
            "again",
            "--wait-imdn",
            "10",
            "--json",
        ],
    ));
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0]["type"], "response", "{out}");
    assert_eq!(lines[0]["status"], 200, "{out}");
    let message_id = lines[0]["message_id"].clone();
    let imdn = lines
        .iter()
        .find(|v| v["type"] == "imdn")
        .unwrap_or_else(|| panic!("no imdn line in {out}; stderr {err}"));
    assert_eq!(imdn["status"], "delivered");
    assert_eq!(imdn["from"], "bob@localhost");
    assert_eq!(imdn["message_id"], message_id);
    let m = phone.wait_for("second message", |v| {
        v["type"] == "message" && v["text"] == "again"
    });
    assert_eq!(m["message_id"], message_id);

    // The human form of the same.
    let (code, out, err) = run(&with(
        &alice(&node),
        &["send", "bob@localhost", "third", "--wait-imdn", "10"],
    ));
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("200 OK"));
    let imdn = lines.next().unwrap_or_default();
    assert!(
        imdn.starts_with("imdn delivered from=bob@localhost id="),
        "{out}"
    );

    for l in [phone, laptop] {
        let (status, lines) = l.stop();
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        assert!(
            lines.iter().any(|l| l.contains("\"unregistered\"")),
            "{lines:?}"
        );
    }
}

#[test]
fn one_to_many_reaches_every_recipient() {
    let node = Node::start(USERS, &[]);
    let mut bob = Listener::start(&node, "bob@localhost", "bobpw", "udp", "phone");
    let mut carol = Listener::start(&node, "carol@localhost", "carolpw", "tcp", "phone");
    let (code, out, err) = run(&with(
        &alice(&node),
        &[
            "send",
            "--to",
            "bob@localhost",
            "--to",
            "carol@localhost",
            "hi all",
            "--json",
        ],
    ));
    assert_eq!(
        code,
        0,
        "stdout {out} stderr {err}\nnode log:\n{}",
        node.log()
    );
    let resp: Value = serde_json::from_str(out.lines().next().unwrap_or_default()).expect("JSON");
    assert!(
        resp["status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s)),
        "{resp}"
    );
    for l in [&mut bob, &mut carol] {
        let m = l.wait_for("1-N message", |v| v["type"] == "message");
        assert_eq!(m["from"], "alice@localhost");
        assert_eq!(m["text"], "hi all");
    }
}

#[test]
fn unknown_user_is_404_and_exit_1() {
    let node = Node::start(USERS, &[]);
    let (code, out, err) = run(&with(&alice(&node), &["send", "nobody@localhost", "hi"]));
    assert_eq!(code, 1, "stdout {out} stderr {err}");
    assert_eq!(out.trim(), "404 Not Found");
    assert!(err.contains("404"), "{err}");
    // A wrong password: the proxy challenge cannot be met.
    let (code, out, _) = run_client(&[
        "send",
        "--server",
        &node.sip.to_string(),
        "--user",
        "alice@localhost",
        "--password",
        "wrong",
        "bob@localhost",
        "hi",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("407") || out.starts_with("401") || out.starts_with("403"),
        "{out}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    let common = [
        "--server",
        "127.0.0.1:9",
        "--user",
        "alice@localhost",
        "--password",
        "pw",
    ];
    let cases: Vec<Vec<&str>> = vec![
        vec!["listen"],                                      // no --server/--user/--password
        vec!["send", "--server", "127.0.0.1:9", "bob", "x"], // no --user
        [&common[..], &["send"]].concat(),                   // no text
        [&common[..], &["send", "only text"]].concat(),      // no recipient
        [&common[..], &["send", "a", "b", "c"]].concat(),    // too many words
        [&common[..], &["--transport", "sctp", "listen"]].concat(),
        [&common[..], &["send", "bob", "x", "--wait-imdn", "soon"]].concat(),
        [&common[..], &["history", "--limit", "many"]].concat(),
        [&common[..], &["frobnicate"]].concat(),
        vec![
            "--server",
            "x",
            "--user",
            "nodomain",
            "--password",
            "p",
            "listen",
        ],
        // Servers that are not HOST[:PORT], timeouts that are not seconds.
        [&common[..], &["--server", "127.0.0.1:sip", "listen"]].concat(),
        [&common[..], &["--server", "127.0.0.1:0", "listen"]].concat(),
        [&common[..], &["--server", "127.0.0.1:65536", "listen"]].concat(),
        [&common[..], &["--server", "", "listen"]].concat(),
        [&common[..], &["--server", "bad host", "listen"]].concat(),
        [&common[..], &["--http", "localhost:http", "history"]].concat(),
        [&common[..], &["--timeout", "0", "listen"]].concat(),
        [&common[..], &["--timeout", "soon", "listen"]].concat(),
    ];
    for args in cases {
        let (code, out, err) = run_client(&args);
        assert_eq!(code, 2, "{args:?}: stdout {out} stderr {err}");
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

/// A scripted admin HTTP server: 401 with a digest challenge, then checks the credentials
/// and answers the history. Returns its address and the request targets it saw.
fn fake_history_server(body: &'static str) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).is_ok_and(|n| n == 1) {
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let target = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let _ = tx.send(target.clone());
            let auth = head
                .lines()
                .find_map(|l| l.strip_prefix("Authorization: "))
                .and_then(|v| Credentials::parse(v).ok());
            let answer = match auth {
                Some(c)
                    if c.uri == target
                        && c.username == "alice@localhost"
                        && digest::verify(
                            &c,
                            "GET",
                            &digest::ha1(Algorithm::Md5, "alice@localhost", "localhost", "alicepw"),
                        ) =>
                {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                }
                _ => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"localhost\", nonce=\"abc\", qop=\"auth\", algorithm=MD5\r\nContent-Length: 0\r\n\r\n".to_owned(),
            };
            let _ = s.write_all(answer.as_bytes());
        }
    });
    (addr, rx)
}

const HISTORY: &str = r#"{"messages":[{"direction":"sent","peer":"bob@localhost","from":"sip:alice@localhost","to":"sip:bob@localhost","conversation_id":"c","contribution_id":"k","message_id":"m1","content_type":"text/plain","text":"hello","state":"delivered","created_at_ms":1795622400000},{"direction":"received","peer":"bob@localhost","from":"sip:bob@localhost","to":"sip:alice@localhost","conversation_id":"c","contribution_id":"k2","message_id":"m2","content_type":"text/plain","text":"hi\nthere","state":"displayed","created_at_ms":1795622401000}]}"#;

#[test]
fn history_authenticates_with_digest_and_prints_lines() {
    let (http, targets) = fake_history_server(HISTORY);
    let (code, out, err) = run_client(&[
        "--server",
        "127.0.0.1:9",
        "--user",
        "alice@localhost",
        "--password",
        "alicepw",
        "history",
        "--with",
        "bob@localhost",
        "--limit",
        "5",
        "--http",
        &http,
    ]);
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "2026-11-25T16:00:00Z sent → bob@localhost [delivered] hello",
            "2026-11-25T16:00:01Z received ← bob@localhost [displayed] hi\\nthere",
        ]
    );
    let seen: Vec<String> = targets.try_iter().collect();
    assert_eq!(
        seen,
        [
            "/api/v1/history?with=bob@localhost&limit=5",
            "/api/v1/history?with=bob@localhost&limit=5"
        ]
    );

    // --json: the objects as received, one per line.
    let (http, _) = fake_history_server(HISTORY);
    let (code, out, _) = run_client(&[
        "history",
        "--json",
        "--server",
        "127.0.0.1:9",
        "--user",
        "alice@localhost",
        "--password",
        "alicepw",
        "--http",
        &http,
    ]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["message_id"], "m1");
    assert_eq!(lines[1]["direction"], "received");

    // A wrong password: 401 twice, exit 1.
    let (http, _) = fake_history_server(HISTORY);
    let (code, _, err) = run_client(&[
        "history",
        "--server",
        "127.0.0.1:9",
        "--user",
        "alice@localhost",
        "--password",
        "nope",
        "--http",
        &http,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
}

#[test]
fn history_from_the_node() {
    let node = Node::start(USERS, &[]);
    let mut bob = Listener::start(&node, "bob@localhost", "bobpw", "udp", "phone");
    let (code, _, err) = run(&with(
        &alice(&node),
        &["send", "bob@localhost", "for the record"],
    ));
    assert_eq!(code, 0, "{err}");
    bob.wait_for("message", |v| v["type"] == "message");
    let http = node.http.to_string();
    let (code, out, err) = run(&with(
        &alice(&node),
        &["history", "--with", "bob@localhost", "--http", &http],
    ));
    assert_eq!(
        code,
        0,
        "stdout {out} stderr {err}\nnode log:\n{}",
        node.log()
    );
    assert!(
        out.lines()
            .any(|l| l.contains(" sent → bob@localhost [") && l.ends_with("] for the record")),
        "{out}"
    );
    let (code, out, err) = run(&with(
        &alice(&node),
        &["history", "--json", "--limit", "10", "--http", &http],
    ));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.lines().next().unwrap_or_default()).expect("JSON");
    assert_eq!(v["direction"], "sent");
    assert_eq!(v["peer"], "bob@localhost");
    assert_eq!(v["text"], "for the record");
    // Bob's side of the same conversation.
    let (code, out, _) = run_client(&[
        "history",
        "--server",
        &node.sip.to_string(),
        "--user",
        "bob@localhost",
        "--password",
        "bobpw",
        "--http",
        &http,
    ]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.contains(" received ← alice@localhost [")),
        "{out}"
    );
}

/// Deferred delivery end to end: bob has no device, alice's three messages are answered
/// 202 Accepted; bob's phone then registers over TCP and gets the three in the order they were
/// sent, marked deferred, with alice as sender; alice receives the delivery notifications on
/// her UDP device, and both histories end `delivered`.
#[test]
fn offline_user_gets_deferred_messages_in_order_on_register() {
    let node = Node::start(USERS, &[]);
    let mut alice_phone = Listener::start(&node, "alice@localhost", "alicepw", "udp", "phone");
    let texts = ["first while away", "second while away", "third while away"];
    let mut ids = Vec::new();
    for t in texts {
        let (code, out, err) = run(&with(
            &alice(&node),
            &["--json", "send", "bob@localhost", t],
        ));
        assert_eq!(code, 0, "{out}{err}");
        let v: Value = serde_json::from_str(out.lines().next().unwrap_or_default()).expect("JSON");
        assert_eq!(v["status"], 202, "{out}");
        ids.push(v["message_id"].as_str().expect("message_id").to_owned());
    }
    let mut bob = Listener::start(&node, "bob@localhost", "bobpw", "tcp", "phone");
    for (t, id) in texts.iter().zip(&ids) {
        let m = bob.wait_for("deferred message", |v| v["type"] == "message");
        assert_eq!(m["text"], *t, "out of order: {m}");
        assert_eq!(m["message_id"], id.as_str());
        assert_eq!(m["deferred"], true, "{m}");
        assert_eq!(m["from"], "alice@localhost");
    }
    for id in &ids {
        alice_phone.wait_for("delivered IMDN", |v| {
            v["type"] == "imdn" && v["status"] == "delivered" && v["message_id"] == id.as_str()
        });
    }
    let http = node.http.to_string();
    for (user, pw) in [("alice@localhost", "alicepw"), ("bob@localhost", "bobpw")] {
        let (code, out, err) = run_client(&[
            "history",
            "--json",
            "--server",
            &node.sip.to_string(),
            "--user",
            user,
            "--password",
            pw,
            "--http",
            &http,
        ]);
        assert_eq!(code, 0, "{err}");
        let states: Vec<Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(states.len(), 3, "{user}: {out}");
        assert!(
            states.iter().all(|v| v["state"] == "delivered"),
            "{user}: {out}"
        );
    }
}

/// Nothing listening at `--server`: `send` and `listen` (UDP) say so on stderr and exit 1
/// after `--timeout` (5 s by default), not after the 32 s of a SIP transaction timeout or
/// never; over TCP the refused connection says the same at once.
#[test]
fn nothing_listening_is_reported_on_stderr_within_the_timeout() {
    let port = free_port();
    let server = format!("127.0.0.1:{port}");
    let base = vec![
        "--server".to_owned(),
        server.clone(),
        "--user".to_owned(),
        "alice@localhost".to_owned(),
        "--password".to_owned(),
        "alicepw".to_owned(),
    ];
    let timed = |args: Vec<String>| {
        std::thread::spawn(move || {
            let start = Instant::now();
            let r = run(&args);
            (r, start.elapsed())
        })
    };
    let send = timed(with(&base, &["send", "bob@localhost", "hi"]));
    let listen = timed(with(&base, &["listen"]));
    let tcp = timed(with(&base, &["--transport", "tcp", "listen"]));
    let want = format!("no answer from {server} within 5 s (is cpm serve running there?)");
    for (what, t) in [("send", send), ("listen", listen)] {
        let ((code, out, err), took) = t.join().expect("client thread");
        assert_eq!(code, 1, "{what}: stdout {out} stderr {err}");
        assert!(err.contains(&want), "{what}: {err}");
        assert!(out.is_empty(), "{what}: nothing on stdout: {out}");
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_secs(10),
            "{what}: gave up after {took:?}"
        );
    }
    let ((code, _, err), took) = tcp.join().expect("client thread");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot connect to {server}"))
            && err.contains("(is cpm serve running there?)"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // --timeout sets the wait.
    let start = Instant::now();
    let (code, _, err) = run(&with(&base, &["--timeout", "0.5", "--json", "listen"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("within 0.5 s"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(4));
}

/// `--server HOST` means port 5060: the client's first datagram arrives there (checked only
/// when the test can take 127.0.0.1:5060 itself).
#[test]
fn server_without_a_port_is_port_5060() {
    let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:5060") else {
        eprintln!("127.0.0.1:5060 is taken: skipping");
        return;
    };
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let client = std::thread::spawn(|| {
        run_client(&[
            "--server",
            "127.0.0.1",
            "--user",
            "alice@localhost",
            "--password",
            "alicepw",
            "--timeout",
            "1",
            "send",
            "bob@localhost",
            "hi",
        ])
    });
    let mut buf = [0u8; 65_536];
    let got = sock.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec());
    let (code, out, err) = client.join().expect("client thread");
    let got = got.unwrap_or_else(|e| panic!("nothing arrived on 5060 ({e}); stderr {err}"));
    assert!(got.starts_with(b"MESSAGE sip:bob@localhost SIP/2.0\r\n"));
    assert_eq!(code, 1, "stdout {out} stderr {err}");
    assert!(
        err.contains("no answer from 127.0.0.1:5060 within 1 s"),
        "{err}"
    );
}

/// A wrong password and an unknown user get the same challenge (no user enumeration); the
/// client says what is likely wrong.
#[test]
fn failed_authentication_hints_at_the_credentials() {
    let node = Node::start(USERS, &[]);
    let server = node.sip.to_string();
    for (user, pw) in [("alice@localhost", "wrong"), ("nobody@localhost", "pw")] {
        let (code, out, err) = run_client(&[
            "--server",
            &server,
            "--user",
            user,
            "--password",
            pw,
            "send",
            "bob@localhost",
            "hi",
        ]);
        assert_eq!(code, 1, "{user}: {out}{err}");
        assert_eq!(out.trim(), "407 Proxy Authentication Required", "{user}");
        assert!(
            err.contains(
                "send failed: 407 Proxy Authentication Required (wrong user or password?)"
            ),
            "{user}: {err}"
        );
        let (code, _, err) = run_client(&[
            "--server",
            &server,
            "--user",
            user,
            "--password",
            pw,
            "listen",
        ]);
        assert_eq!(code, 1, "{user}: {err}");
        assert!(
            err.contains("registration failed: 401 Unauthorized (wrong user or password?)"),
            "{user}: {err}"
        );
    }
}

/// `listen` stopped by SIGTERM, SIGINT or SIGHUP removes its binding first: the next message to the
/// user is deferred at once (202), not after the Participating Function's 8 s wait for a
/// device that is gone.
#[test]
fn listen_unregisters_on_sigterm_sigint_and_sighup() {
    let node = Node::start(USERS, &[]);
    for (signal, transport) in [("TERM", "udp"), ("INT", "tcp"), ("HUP", "udp")] {
        let bob = Listener::start(&node, "bob@localhost", "bobpw", transport, "phone");
        let (status, lines) = bob.stop_with(signal);
        assert!(
            status.is_some_and(|s| s.success()),
            "SIG{signal} {transport}: {status:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("\"unregistered\"")),
            "SIG{signal} {transport}: {lines:?}"
        );
        let start = Instant::now();
        let (code, out, err) = run(&with(
            &alice(&node),
            &["send", "bob@localhost", &format!("after SIG{signal}")],
        ));
        let took = start.elapsed();
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(out.trim(), "202 Accepted", "SIG{signal} {transport}");
        assert!(
            took < Duration::from_secs(4),
            "SIG{signal} {transport}: 202 after {took:?}: the binding was left behind"
        );
    }
}

/// Runs `cpm client <args>` with `input` on its stdin (killed after 60 s).
fn run_with_stdin(args: &[String], input: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(cpm_bin())
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cpm client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("client output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_chat_session_and_a_large_message_cross_both_pfs_and_are_in_both_histories() {
    let node = Node::start(USERS, &[]);
    let mut bob = Listener::start(&node, "bob@localhost", "bobpw", "udp", "phone");
    // From a pipe: every line is sent, and the command ends when each got its MSRP 200
    // (which the PF sends only once both histories have the message).
    let (code, out, err) = run_with_stdin(
        &with(&alice(&node), &["--json", "chat", "bob@localhost"]),
        "hello bob\nsecond line\n",
    );
    assert_eq!(
        code,
        0,
        "stdout {out} stderr {err}\nnode log:\n{}",
        node.log()
    );
    for text in ["hello bob", "second line"] {
        let m = bob.wait_for(text, |v| v["type"] == "message" && v["text"] == text);
        assert_eq!(m["from"], "alice@localhost");
    }
    // Over 1,300 bytes, `send` switches to Large Message Mode by itself.
    let big = "x".repeat(100 * 1024);
    let (code, out, err) = run(&with(&alice(&node), &["send", "bob@localhost", &big]));
    assert_eq!(
        code,
        0,
        "stdout {out} stderr {err}\nnode log:\n{}",
        node.log()
    );
    let m = bob.wait_for("the large message", |v| {
        v["type"] == "message" && v["text"].as_str().is_some_and(|t| t.len() == big.len())
    });
    assert_eq!(m["from"], "alice@localhost");
    // Both histories hold the three messages.
    for (user, pw, peer) in [
        ("alice@localhost", "alicepw", "bob@localhost"),
        ("bob@localhost", "bobpw", "alice@localhost"),
    ] {
        let (code, out, err) = run_client(&[
            "--server",
            &node.sip.to_string(),
            "--http",
            &node.http.to_string(),
            "--user",
            user,
            "--password",
            pw,
            "--json",
            "history",
            "--with",
            peer,
        ]);
        assert_eq!(code, 0, "{user}: stdout {out} stderr {err}");
        for text in ["hello bob", "second line"] {
            assert!(out.contains(text), "{user}'s history lacks {text:?}: {out}");
        }
        assert!(
            out.contains(&"x".repeat(1000)),
            "{user}'s history lacks the large message"
        );
    }
    let _ = bob.stop();
}

#[test]
fn a_file_crosses_both_pfs_is_saved_whole_and_is_in_both_histories() {
    let node = Node::start(USERS, &[]);
    let dir = TempDir::new("ft-e2e");
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).expect("download dir");
    let mut bob = Listener::start_with(
        &node,
        "bob@localhost",
        "bobpw",
        "tcp",
        "phone",
        &["--download-dir", downloads.to_str().expect("path")],
    );
    // 3 MiB of varied octets (a few dozen chunks, a full window and more).
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = dir.path().join("photo.jpg");
    std::fs::write(&path, &data).expect("the file");
    let (code, out, err) = run(&with(
        &alice(&node),
        &[
            "--json",
            "send-file",
            "bob@localhost",
            path.to_str().expect("path"),
        ],
    ));
    assert_eq!(
        code,
        0,
        "stdout {out} stderr {err}\nnode log:\n{}",
        node.log()
    );
    let sent: Value = serde_json::from_str(out.lines().last().unwrap_or_default()).expect("JSON");
    assert_eq!(sent["size"], data.len(), "{sent}");
    let got = bob.wait_for("the file", |v| v["type"] == "file");
    assert_eq!(got["from"], "alice@localhost");
    assert_eq!(got["sha1"], sent["sha1"]);
    let saved = std::fs::read(got["path"].as_str().expect("a path")).expect("the saved file");
    assert!(saved == data, "the saved file is the file");
    assert!(
        std::fs::read_dir(&downloads).expect("dir").all(|e| !e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .ends_with(".part")),
        "no partial file left"
    );
    // Both histories link it.
    for (user, pw, peer) in [
        ("alice@localhost", "alicepw", "bob@localhost"),
        ("bob@localhost", "bobpw", "alice@localhost"),
    ] {
        let (code, out, err) = run_client(&[
            "--server",
            &node.sip.to_string(),
            "--http",
            &node.http.to_string(),
            "--user",
            user,
            "--password",
            pw,
            "--json",
            "history",
            "--with",
            peer,
        ]);
        assert_eq!(code, 0, "{user}: stdout {out} stderr {err}");
        assert!(
            out.contains("photo.jpg"),
            "{user}'s history links the file: {out}"
        );
    }
    let _ = bob.stop();
}
