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
