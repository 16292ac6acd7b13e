//! Shared by the end-to-end tests: start the real `cpm serve` on free loopback ports with a
//! fresh data directory, wait until it answers, stop it by PID.

#![allow(dead_code)] // Each test binary uses a different part.
#![allow(unreachable_pub)] // Shared by several test binaries through `mod common`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `cpm` binary under test: the one cargo built, or `CPM_TEST_BIN` when set (to run an
/// attack test against an older build and see the hole it closes).
pub fn cpm_bin() -> String {
    std::env::var("CPM_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cpm").to_owned())
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let mut p = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        p.push(format!("cpm-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `cpm serve`, killed (by PID) on drop.
pub struct Node {
    pub child: Child,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    pub data: TempDir,
    /// The extra `cpm serve` flags (kept for a restart).
    pub extra: Vec<String>,
}

impl Node {
    /// Starts a node with extra flags, after creating `users` (`aor`, `password`).
    pub fn start(users: &[(&str, &str)], extra: &[&str]) -> Self {
        let data = TempDir::new("node");
        for (aor, pw) in users {
            let st = Command::new(cpm_bin())
                .args(["admin", "user", "add", aor, "--password", pw, "--data-dir"])
                .arg(data.path())
                .stdout(Stdio::null())
                .status()
                .expect("run cpm admin");
            assert!(st.success(), "cpm admin user add {aor}");
        }
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        // A free port can be taken by a parallel test between our probe and the node's bind:
        // the node then exits with "cannot listen", and we try other ports.
        for attempt in 1..=5 {
            let sip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let mut child = spawn_node(sip, http, &data, &extra);
            match wait_ready(&mut child, http, &data) {
                Ok(()) => {
                    return Self {
                        child,
                        sip,
                        http,
                        data,
                        extra,
                    };
                }
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if attempt == 5 || !log.contains("cannot listen") {
                        panic!("cpm serve did not become ready; log:\n{log}");
                    }
                    let _ = std::fs::remove_file(data.path().join("node.log"));
                }
            }
        }
        unreachable!("the last attempt panics")
    }

    /// Kills the node with SIGKILL (no shutdown of any kind) and starts it again on the same
    /// ports and data directory; returns once it answers `/health`.
    pub fn kill9_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_node(self.sip, self.http, &self.data, &self.extra);
        if let Err(log) = wait_ready(&mut self.child, self.http, &self.data) {
            panic!("cpm serve did not come back; log:\n{log}");
        }
    }

    /// A plain HTTP/1.0 GET on the admin port; the body, or `None`.
    pub fn http_get(&self, path: &str) -> Option<String> {
        http_get(self.http, path)
    }

    /// One Prometheus metric's value.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let body = self.http_get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Polls one metric until `want` holds, at most `limit`; returns the last value read
    /// (`None` when the metric never answered).
    pub fn wait_metric(
        &self,
        name: &str,
        want: impl Fn(u64) -> bool,
        limit: Duration,
    ) -> Option<u64> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.metric(name);
            if v.is_some_and(&want) || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("node.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

/// A plain HTTP/1.0 GET; the body, or `None`.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}

/// Polls `/health` until it answers; `Err(log)` when the node exits first or does not answer
/// within 15 s.
fn wait_ready(child: &mut Child, http: SocketAddr, data: &TempDir) -> Result<(), String> {
    let log = || std::fs::read_to_string(data.path().join("node.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if http_get(http, "/health").is_some_and(|b| b.contains("ok")) {
            return Ok(());
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(log())
}

/// Starts `cpm serve` on these addresses (the log is appended to `DATA/node.log`).
fn spawn_node(sip: SocketAddr, http: SocketAddr, data: &TempDir, extra: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.path().join("node.log"))
        .expect("log file");
    Command::new(cpm_bin())
        .arg("serve")
        .args([
            "--sip-listen",
            &sip.to_string(),
            "--http-listen",
            &http.to_string(),
            // An ephemeral MSRP port: tests run side by side.
            "--msrp-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--threads", "2"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start cpm serve")
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cpm client <args>` to completion (killed after 60 s); status, stdout, stderr.
pub fn run_client(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(cpm_bin())
        .arg("client")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cpm client");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    (status.code().unwrap_or(-1), out, err)
}
