//! Hole 3: password guessing. Failed authentications are counted per source address and per
//! user; past the limit (10 per source, 20 per user in 60 s by default) the source is refused
//! (silence over UDP, 403 over TCP, 429 over HTTP) and the user is closed to new devices,
//! while the user's registered devices keep working; each refusal is logged (rate-limited)
//! with `source=ADDR` for fail2ban, and the counts are in `/metrics`.

use std::time::{Duration, Instant};

use cpm_sip::HeaderName;

use crate::common::{Node, TempDir};
use crate::ua::{self, Tcp, Udp, status};

/// Default limits (see `cpm serve --print-config`).
const PER_SOURCE: u32 = 10;
const PER_USER: u32 = 20;

/// Sends `n` REGISTERs for bob from `ua`, each answering the last challenge with a wrong
/// password; returns the status of each answer (0 for none within a second).
fn guess(ua: &Udp, node: &Node, n: u32, first_cseq: u32) -> Vec<u16> {
    let mut out = Vec::new();
    let mut last = ua.request(
        node.sip,
        &ua::register("bob", ua.addr(), "UDP", first_cseq, None),
    );
    for i in 0..n {
        let Some(r) = last.clone().filter(|r| r.status.as_u16() == 401) else {
            out.push(status(&last));
            last = None;
            continue;
        };
        let auth = ua::answer(
            &r,
            "REGISTER",
            "sip:localhost",
            "bob",
            &format!("guess{i}"),
            1,
        );
        ua.send(
            node.sip,
            &ua::register("bob", ua.addr(), "UDP", first_cseq + 1 + i, Some(&auth)),
        );
        last = ua.final_response(Duration::from_secs(1));
        out.push(status(&last));
    }
    out
}

#[test]
fn guessing_blocks_the_source_then_the_user_but_not_the_users_devices() {
    let _g = ua::shared();
    let node = Node::start(
        &[("alice@localhost", "alicepw"), ("bob@localhost", "bobpw")],
        &[],
    );
    // bob's real device, registered before the attack.
    let bob = Udp::new();
    ua::register_udp(&bob, node.sip, "bob", "bobpw");

    // 127.0.0.3 guesses bob's password: 10 wrong guesses are challenged again, then the
    // source gets silence, even with the right password.
    let attacker = ua::udp_from("127.0.0.3");
    let answers = guess(&attacker, &node, PER_SOURCE + 2, 1);
    assert_eq!(&answers[..PER_SOURCE as usize], &[401; PER_SOURCE as usize]);
    assert_eq!(&answers[PER_SOURCE as usize..], &[0, 0], "{answers:?}");
    let r = attacker.request(
        node.sip,
        &ua::register("bob", attacker.addr(), "UDP", 99, None),
    );
    assert!(r.is_none(), "a blocked source gets nothing over UDP: {r:?}");
    // Over TCP the same source is told: 403 with Retry-After.
    let mut tcp = Tcp::connect_from("127.0.0.3", node.sip);
    let r = tcp
        .request(&ua::register("bob", tcp.addr(), "TCP", 1, None))
        .expect("an answer over TCP");
    assert_eq!(r.status.as_u16(), 403);
    assert!(r.headers.contains(&HeaderName::RetryAfter));

    // A second source takes bob's failures to 20: bob is closed to new devices.
    let second = ua::udp_from("127.0.0.4");
    let answers = guess(&second, &node, PER_USER - PER_SOURCE, 1);
    assert!(answers.iter().all(|&s| s == 401), "{answers:?}");
    let newcomer = ua::udp_from("127.0.0.6");
    let r = newcomer
        .request(
            node.sip,
            &ua::register("bob", newcomer.addr(), "UDP", 1, None),
        )
        .expect("an answer");
    assert_eq!(r.status.as_u16(), 403, "{r:?}");
    assert_eq!(r.reason, "Too Many Failed Authentications");
    assert!(r.headers.contains(&HeaderName::RetryAfter));

    // bob's registered device refreshes as usual; alice, from the newcomer's address, too.
    let r = bob
        .request(node.sip, &ua::register("bob", bob.addr(), "UDP", 10, None))
        .expect("401");
    let auth = ua::answer(&r, "REGISTER", "sip:localhost", "bob", "bobpw", 1);
    let r = bob.request(
        node.sip,
        &ua::register("bob", bob.addr(), "UDP", 11, Some(&auth)),
    );
    assert_eq!(status(&r), 200, "the real device is not locked out");
    ua::register_udp(&ua::udp_from("127.0.0.6"), node.sip, "alice", "alicepw");

    // Metrics and log lines a log watcher can match.
    let failures = node.metric("cpm_auth_failures_total{proto=\"sip\"}");
    assert_eq!(failures, Some(u64::from(PER_USER)));
    assert!(
        node.metric("cpm_auth_blocks_total{proto=\"sip\"}")
            .unwrap_or(0)
            >= 3
    );
    assert!(
        node.metric("cpm_auth_refused_total{proto=\"sip\"}")
            .unwrap_or(0)
            >= 4
    );
    let log = node.log();
    assert!(
        log.contains("cpm::security: auth failure source=127.0.0.3 user=\"bob@localhost\""),
        "{log}"
    );
    assert!(log.contains("cpm::security: auth blocked source=127.0.0.3 seconds=60"));
    assert!(log.contains("cpm::security: auth refused source=127.0.0.3"));
    assert!(
        log.contains("cpm::security: auth user blocked source=127.0.0.4 user=\"bob@localhost\"")
    );
    assert!(!log.contains('\u{1b}'), "no colour codes in the log file");
}

#[test]
fn http_guessing_is_answered_429_and_the_real_user_still_reads() {
    let _g = ua::shared();
    let node = Node::start(&[("alice@localhost", "alicepw")], &[]);
    let path = "/api/v1/history";
    for i in 0..PER_SOURCE {
        let r = ua::http_get("127.0.0.8", node.http, path, None);
        assert_eq!(r.status, 401);
        let wrong = ua::http_answer(&r, path, "alice", &format!("guess{i}"), 1);
        let r = ua::http_get("127.0.0.8", node.http, path, Some(&wrong));
        assert_eq!(r.status, 401, "guess {i}");
    }
    let r = ua::http_get("127.0.0.8", node.http, path, None);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // alice, from her own address, reads her history.
    let r = ua::http_get("127.0.0.1", node.http, path, None);
    let auth = ua::http_answer(&r, path, "alice", "alicepw", 1);
    let r = ua::http_get("127.0.0.1", node.http, path, Some(&auth));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        node.metric("cpm_auth_failures_total{proto=\"http\"}"),
        Some(u64::from(PER_SOURCE))
    );
    assert!(
        node.log()
            .contains("cpm::security: auth blocked source=127.0.0.8 seconds=60 proto=http")
    );
}

/// The node's cap on security lines of one kind (`cpm::security::LINES_PER_SEC`).
const LINES_PER_SEC: usize = 20;

/// A guessing run faster than the log's budget (the per-source block raised so one source
/// can play a botnet): each failure is on one line while the budget lasts, the rest are
/// counted and their number written once the second is over, so every failure is accounted
/// for and the log grows by at most the budget per second.
#[test]
fn security_lines_are_capped_per_second_and_the_rest_counted() {
    let _g = ua::shared();
    let dir = TempDir::new("log-budget");
    let cfg = dir.path().join("cpm.toml");
    std::fs::write(
        &cfg,
        "[auth]\nmax_failures_per_source = 100000\nmax_failures_per_user = 100000\n",
    )
    .expect("config");
    let node = Node::start(
        &[("bob@localhost", "bobpw")],
        &["--config", cfg.to_str().expect("path")],
    );
    let n = 200;
    let attacker = ua::udp_from("127.0.0.7");
    let start = Instant::now();
    let answers = guess(&attacker, &node, n, 1);
    let took = start.elapsed();
    assert!(answers.iter().all(|&s| s == 401), "{answers:?}");
    assert_eq!(
        node.metric("cpm_auth_failures_total{proto=\"sip\"}"),
        Some(u64::from(n)),
        "the metrics count every failure"
    );
    let count = |log: &str| {
        let written = log
            .lines()
            .filter(|l| l.contains("cpm::security: auth failure source=127.0.0.7 "))
            .count();
        let suppressed: u64 = log
            .lines()
            .filter(|l| l.contains("cpm::security: lines suppressed kind=\"auth failure\""))
            .filter_map(|l| {
                l.split("suppressed=")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        (written, suppressed)
    };
    // The last count is written a second after the window's first suppressed line.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (written, suppressed) = loop {
        let (w, s) = count(&node.log());
        if w as u64 + s == u64::from(n) || Instant::now() >= deadline {
            break (w, s);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        written as u64 + suppressed,
        u64::from(n),
        "every failure is written or counted; log:\n{}",
        node.log()
    );
    let windows = took.as_secs() as usize + 1;
    assert!(
        written <= LINES_PER_SEC * windows,
        "{written} lines in {took:?}: the budget is {LINES_PER_SEC} a second"
    );
    assert!(suppressed > 0, "{n} failures in {took:?} exceed the budget");
    // One line each, no colour.
    let log = node.log();
    assert!(!log.contains('\u{1b}'), "no colour codes in the log file");
    assert!(
        log.lines()
            .filter(|l| l.contains("cpm::security:"))
            .all(|l| l.contains(" WARN cpm::security: ")),
        "{log}"
    );
}
