//! What ships beside the binary: the sample configuration `cpm.example.toml` is the defaults,
//! the systemd unit `deploy/cpm.service` starts the binary with flags it accepts, and the
//! LICENSE is the one Cargo.toml names.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::cpm_bin;

/// A file at the repository root.
fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn print_config(args: &[&str]) -> Output {
    Command::new(cpm_bin())
        .arg("serve")
        .args(args)
        .arg("--print-config")
        .output()
        .expect("run cpm serve --print-config")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn example_config_is_what_print_config_prints_by_default() {
    let example = repo("cpm.example.toml");
    let from_file = print_config(&["--config", example.to_str().expect("utf-8 path")]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    let defaults = print_config(&[]);
    assert!(defaults.status.success(), "{}", text(&defaults.stderr));
    // Both are printed from a parsed configuration: equal output, equal configurations.
    assert_eq!(text(&from_file.stdout), text(&defaults.stdout));
    // Every key is printed, the unset optional ones commented out.
    let out = text(&defaults.stdout);
    for key in [
        "\n# advertise = ",
        "\n# participating_function = ",
        "\ndigest_algorithms = [\"MD5\"]",
        "\n[peer_domains]",
    ] {
        assert!(out.contains(key), "{key:?} missing from:\n{out}");
    }
}

/// The `Key=value` lines of a unit file (comments and sections left out).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

#[test]
fn systemd_unit_starts_the_binary_with_flags_it_accepts() {
    let unit = std::fs::read_to_string(repo("deploy/cpm.service")).expect("deploy/cpm.service");
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {exec:?}");
    let mut words = exec[0].split_whitespace();
    let program = words.next().expect("a program");
    assert!(
        program.starts_with('/') && program.ends_with("/cpm"),
        "{program}"
    );
    let mut args: Vec<String> = words.map(str::to_owned).collect();
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
    args.remove(0);
    // The config file named is the installed sample: check the flags with the sample.
    let config = args
        .iter()
        .position(|a| a == "--config")
        .expect("ExecStart names --config");
    assert_eq!(args[config + 1], "/etc/cpm/cpm.toml");
    assert_eq!(unit_values(&unit, "ConfigurationDirectory"), ["cpm"]);
    args[config + 1] = repo("cpm.example.toml").display().to_string();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = print_config(&refs);
    assert!(
        out.status.success(),
        "ExecStart's flags are refused: {}",
        text(&out.stderr)
    );
    // The data directory is the one systemd creates for the service.
    let state = unit_values(&unit, "StateDirectory");
    assert_eq!(state, ["cpm"]);
    assert!(
        text(&out.stdout).contains("\ndata_dir = \"/var/lib/cpm\"\n"),
        "{}",
        text(&out.stdout)
    );
    for (key, want) in [
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("User", "cpm"),
    ] {
        assert_eq!(unit_values(&unit, key), [want], "{key}");
    }
}

#[test]
fn license_is_apache_2() {
    let license = std::fs::read_to_string(repo("LICENSE")).expect("LICENSE");
    assert!(
        license.contains("Apache License\n                           Version 2.0, January 2004")
    );
    assert!(license.contains("END OF TERMS AND CONDITIONS"));
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains("license = \"Apache-2.0\""));
}
