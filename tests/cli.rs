//! The `incidentd` binary: exit codes, config errors, graceful shutdown.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_incidentd");

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_examples_pass_check() {
    for name in ["quickstart.yaml", "redis.yaml"] {
        let out = Command::new(BIN)
            .args(["check", "--config", &example(name)])
            .env("REDIS_URL", "redis://127.0.0.1:6379/0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_reports_every_error_with_file_and_line_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "http:\n  listen: not-an-address\n  max_body_bytes: 0\nstore:\n  url: postgres://x\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        ":2: http.listen",
        ":3: http.max_body_bytes",
        ":5: store.url",
    ] {
        assert!(
            stderr.contains(&format!("bad.yaml{line}")),
            "missing {line} in:\n{stderr}"
        );
    }
}

#[test]
fn run_with_bad_config_exits_64_before_binding_the_port() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        format!("http:\n  listen: 127.0.0.1:{port}\n  bogus: 1\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `bogus`"));
    // Nothing is listening: the port is still free to bind.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let port = common::free_port();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--config",
            &example("quickstart.yaml"),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "daemon did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("incidentd "));
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--store"));
}
