//! The packages under `packaging/`: the systemd unit passes `systemd-analyze verify` (when the
//! machine has it) and says what the upgrade and reload need; the Dockerfile builds in one
//! stage and runs unprivileged with a health check; the config both install checks out with
//! the real plugins.

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmgate_tests::harness::{self, TempDir};
use wasmgate_tests::wasm;

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging").join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(packaging(file)).expect("packaging file")
}

/// The values of `key=` lines, in order.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('=')).map(str::trim).collect()
}

#[test]
fn the_systemd_unit_verifies_and_hands_reload_and_upgrade_to_the_gateway() {
    let unit = read("systemd/wasmgate.service");
    assert_eq!(values(&unit, "Type"), ["notify"], "the new process on upgrade reports MAINPID");
    assert_eq!(values(&unit, "NotifyAccess"), ["all"], "the successor is not the main process yet");
    assert_eq!(values(&unit, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(
        values(&unit, "ExecStart"),
        ["/usr/local/bin/wasmgate run --config /etc/wasmgate/gateway.toml"]
    );
    assert!(unit.contains("systemctl kill -s USR2 --kill-whom=main wasmgate"), "the upgrade is documented");
    assert_eq!(values(&unit, "RuntimeDirectory"), ["wasmgate"], "a place for the upgrade socket");

    // With the paths pointed at this build, systemd's own checker accepts it.
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: checked by parsing only");
        return;
    };
    let dir = TempDir::new("unit").expect("dir");
    let bin = harness::wasmgate_bin().expect("binary");
    let local = dir.path().join("wasmgate.service");
    std::fs::write(&local, unit.replace("/usr/local/bin/wasmgate", &bin.display().to_string()))
        .expect("write");
    let out = Command::new(analyze).arg("verify").arg(&local).output().expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("wasmgate.service:"), "{stderr}");
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(program)).find(|p| p.is_file()))
        .ok_or(())
}

#[test]
fn the_dockerfile_builds_in_a_stage_and_runs_unprivileged_with_a_health_check() {
    let docker = read("Dockerfile");
    let stages: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage: {stages:?}");
    assert!(stages[0].contains(" AS build"), "{stages:?}");
    assert!(docker.contains("rustup target add wasm32-wasip2"), "the build installs the plugin target");
    assert!(docker.contains("--target wasm32-wasip2"), "the plugins are built");
    let user = docker.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert_ne!(user.trim(), "root");
    let health = docker
        .split("\nHEALTHCHECK ")
        .nth(1)
        .expect("a HEALTHCHECK")
        .split("\nENTRYPOINT")
        .next()
        .unwrap_or("");
    assert!(health.contains("127.0.0.1:9901/healthz"), "{health}");
    assert!(docker.contains("COPY packaging/gateway.toml /etc/wasmgate/gateway.toml"));
    // The admin address the health check asks is the one the installed config listens on.
    assert!(read("gateway.toml").contains("address = \"127.0.0.1:9901\""));
}

#[test]
fn the_packaged_config_checks_out_with_the_real_plugins() {
    let dir = TempDir::new("packaged-config").expect("dir");
    let plugins = Path::new(wasm::REQUEST_ID).parent().expect("plugin dir").display().to_string();
    let config = read("gateway.toml").replace("/usr/lib/wasmgate/plugins", &plugins);
    let (ok, stdout, stderr) = harness::check(dir.path(), &config).expect("check ran");
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("plugin request-id"), "{stdout}");
}
