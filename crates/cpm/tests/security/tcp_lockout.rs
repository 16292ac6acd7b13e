//! Hole 5: TCP lock-out. Idle connections from one address cannot fill the node (a limit per
//! address), idle connections from many addresses cannot shut out a newcomer (the silent
//! ones are evicted at the total limit), slow-loris connections are closed by the message
//! timeout, and the HTTP server has its own limits and idle timeout. The legitimate client
//! gets in each time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Node, TempDir};
use crate::ua::{self, Tcp};

/// A node with this extra config (TOML) and alice as a user.
fn node_with(config: &str) -> (Node, TempDir) {
    let dir = TempDir::new("tcp-lockout");
    let path = dir.path().join("cpm.toml");
    std::fs::write(&path, config).expect("config");
    let node = Node::start(
        &[("alice@localhost", "alicepw")],
        &["--config", path.to_str().expect("path")],
    );
    (node, dir)
}

/// Opens `n` connections from `ip` and keeps them (silent).
fn hold(ip: &str, to: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).filter_map(|_| ua::tcp_from(ip, to).ok()).collect()
}

/// Polls a metric until `want` holds (5 s at most).
fn wait(node: &Node, name: &str, want: impl Fn(u64) -> bool) -> Option<u64> {
    node.wait_metric(name, want, Duration::from_secs(5))
}

/// Whether the node closed `s` (EOF or reset) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn idle_connections_from_one_address_do_not_lock_others_out() {
    let _g = ua::shared();
    let (node, _dir) = node_with("[transport]\ntcp_max_connections_per_source = 50\n");
    let idle = hold("127.0.0.2", node.sip, 300);
    assert!(
        idle.len() >= 250,
        "the attacker connected {} times",
        idle.len()
    );
    assert!(wait(&node, "cpm_tcp_refused_per_source_total", |v| v >= 250).is_some());
    assert!(node.metric("cpm_tcp_connections").unwrap_or(u64::MAX) <= 50);
    let mut alice = Tcp::connect(node.sip);
    ua::register_tcp(&mut alice, "alice", "alicepw");
}

#[test]
fn idle_connections_from_many_addresses_are_evicted_for_a_newcomer() {
    let _g = ua::shared();
    let (node, _dir) =
        node_with("[transport]\nmax_connections = 200\ntcp_max_connections_per_source = 50\n");
    let mut idle = Vec::new();
    for i in 10..15 {
        idle.extend(hold(&format!("127.0.0.{i}"), node.sip, 50));
    }
    assert_eq!(wait(&node, "cpm_tcp_connections", |v| v == 200), Some(200));
    let mut alice = Tcp::connect(node.sip);
    ua::register_tcp(&mut alice, "alice", "alicepw");
    assert!(node.metric("cpm_tcp_evicted_total").unwrap_or(0) >= 1);
}

#[test]
fn slow_loris_connections_are_closed_and_a_real_client_is_served() {
    let _g = ua::shared();
    let (node, _dir) = node_with("[transport]\ntcp_message_timeout_secs = 2\n");
    let mut slow = hold("127.0.0.3", node.sip, 50);
    // A byte every 500 ms from each, for 4 s: a header that never ends.
    let header = b"REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.3:9;branch=z9hG4bKx";
    for b in header.iter().take(8) {
        for s in &mut slow {
            let _ = s.write_all(&[*b]);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Each is closed by the node (not by idleness: the idle timeout is 300 s).
    let all_closed = slow
        .iter_mut()
        .all(|s| closed_within(s, Duration::from_secs(3)));
    assert!(all_closed, "every slow-loris connection is closed");
    assert!(wait(&node, "cpm_tcp_message_timeouts_total", |v| v >= 50).is_some());
    let mut alice = Tcp::connect(node.sip);
    ua::register_tcp(&mut alice, "alice", "alicepw");
}

#[test]
fn idle_http_connections_are_limited_and_closed_and_the_api_still_answers() {
    let _g = ua::shared();
    let (node, _dir) = node_with(
        "[http]\nmax_connections = 200\nmax_connections_per_source = 20\nidle_timeout_secs = 2\n",
    );
    let idle = hold("127.0.0.4", node.http, 100);
    assert!(!idle.is_empty());
    assert!(wait(&node, "cpm_http_refused_per_source_total", |v| v >= 80).is_some());
    // alice reads her history at once.
    let t = Instant::now();
    let r = ua::http_get("127.0.0.1", node.http, "/api/v1/history", None);
    assert_eq!(r.status, 401);
    let auth = ua::http_answer(&r, "/api/v1/history", "alice", "alicepw", 1);
    let r = ua::http_get("127.0.0.1", node.http, "/api/v1/history", Some(&auth));
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // The idle ones are closed by the idle timeout (the one left open is the metrics read).
    let left = node.wait_metric("cpm_http_connections", |v| v <= 1, Duration::from_secs(6));
    assert!(left.is_some_and(|v| v <= 1), "{left:?} still open");
}
