//! End-to-end tests of the `cpm` binary.

use std::io::Write;
use std::process::{Command, Stdio};

fn cpm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cpm"))
}

fn corpus(file: &str) -> String {
    format!(
        "{}/../../../shared/testdata/sip/rfc4475/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn sip_check_accepts_a_valid_message() {
    let out = cpm()
        .args(["sip", "check", &corpus("wsinv.dat")])
        .output()
        .expect("run cpm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok: INVITE sip:vivekg@chair-dnrc.example.com;unknownparam"),
        "{stdout}"
    );
}

#[test]
fn sip_check_refuses_with_the_wire_verdict() {
    let out = cpm()
        .args(["sip", "check", &corpus("badinv01.dat")])
        .output()
        .expect("run cpm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("refused: 400 Bad Via"), "{stdout}");

    let out = cpm()
        .args(["sip", "check", &corpus("badvers.dat")])
        .output()
        .expect("run cpm");
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused: 505"));

    let out = cpm()
        .args(["sip", "check", &corpus("bigcode.dat")])
        .output()
        .expect("run cpm");
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped silently"));
}

#[test]
fn sip_check_frames_a_stream_from_stdin() {
    let msg = "OPTIONS sip:a@example.com SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nTo: <sip:a@example.com>\nFrom: <sip:b@example.com>;tag=1\nCall-ID: x\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n";
    let mut child = cpm()
        .args(["sip", "check", "--stream", "--lf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run cpm");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("\n\n{msg}{msg}").as_bytes())
        .expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches(": ok: OPTIONS").count(), 2, "{stdout}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = cpm()
        .args(["sip", "check", "/nonexistent/x.sip"])
        .output()
        .expect("run cpm");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/x.sip"));
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("cpm-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn data(&self) -> String {
        self.0.join("data").display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn admin(args: &[&str]) -> std::process::Output {
    let mut all = vec!["admin", "user"];
    all.extend_from_slice(args);
    cpm().args(&all).output().expect("run cpm")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn admin_user_add_list_remove() {
    let dir = TempDir::new("users");
    let data = dir.data();
    let out = admin(&["list", "--data-dir", &data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");

    for aor in ["bob@localhost", "alice@localhost"] {
        let out = admin(&["add", aor, "--password", "secret", "--data-dir", &data]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("added {aor}")));
    }
    let out = admin(&["list", "--data-dir", &data]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "alice@localhost\nbob@localhost\n");

    // The realm is the domain, both username forms resolve, and the password is not stored.
    let store = cpm_store::Store::open(std::path::Path::new(&data)).expect("open store");
    let users = store.list_users().expect("list");
    assert!(users.iter().all(|u| u.realm == "localhost"));
    let short = store
        .user_credentials("alice", "localhost")
        .expect("lookup")
        .expect("alice");
    assert_eq!(short.aor, "alice@localhost");
    assert!(
        store
            .user_credentials("alice@localhost", "localhost")
            .expect("lookup")
            .is_some()
    );
    drop(store);

    let out = admin(&["remove", "alice@localhost", "--data-dir", &data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "removed alice@localhost\n");
    let out = admin(&["list", "--data-dir", &data]);
    assert_eq!(text(&out.stdout), "bob@localhost\n");
}

#[test]
fn admin_user_errors_have_exit_codes() {
    let dir = TempDir::new("user-errors");
    let data = dir.data();
    let out = admin(&[
        "add",
        "alice@localhost",
        "--password",
        "a",
        "--data-dir",
        &data,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Exists / no such user: 1.
    let out = admin(&[
        "add",
        "alice@localhost",
        "--password",
        "b",
        "--data-dir",
        &data,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "cpm: user alice@localhost exists\n");
    let out = admin(&["remove", "carol@localhost", "--data-dir", &data]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "cpm: no such user carol@localhost\n");

    // Bad input: 2, and nothing is created.
    let fresh = dir.0.join("fresh").display().to_string();
    for args in [
        &["add", "alice", "--password", "a", "--data-dir", &fresh][..],
        &["add", "@localhost", "--password", "a", "--data-dir", &fresh],
        &[
            "add",
            "al ice@localhost",
            "--password",
            "a",
            "--data-dir",
            &fresh,
        ],
        &[
            "add",
            "alice@localhost",
            "--password",
            "",
            "--data-dir",
            &fresh,
        ],
        &["remove", "sip:alice@localhost", "--data-dir", &fresh],
    ] {
        let out = admin(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).starts_with("cpm: "), "{args:?}");
    }
    // clap: missing --password.
    let out = admin(&["add", "bob@localhost", "--data-dir", &fresh]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!std::path::Path::new(&fresh).exists());

    // IO: the data directory is a file.
    let file = dir.0.join("a-file");
    std::fs::write(&file, "x").expect("write");
    let file = file.display().to_string();
    let out = admin(&[
        "add",
        "bob@localhost",
        "--password",
        "b",
        "--data-dir",
        &file,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot create data directory"));
}

#[test]
fn admin_user_default_data_dir() {
    let dir = TempDir::new("user-default");
    let out = cpm()
        .args([
            "admin",
            "user",
            "add",
            "alice@localhost",
            "--password",
            "pw",
        ])
        .current_dir(&dir.0)
        .output()
        .expect("run cpm");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.0.join("cpm-data/cpm.db").is_file());
    let out = cpm()
        .args(["admin", "user", "list"])
        .current_dir(&dir.0)
        .output()
        .expect("run cpm");
    assert_eq!(text(&out.stdout), "alice@localhost\n");
}
