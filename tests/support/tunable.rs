//! The tunable TF-Serving stand-in (`tunable_tensorflow_model_server.py`, whose capacity is a
//! known function of its batching settings) put on PATH as `tensorflow_model_server`, and
//! `benchstack` run with that PATH: what `tune_local.rs` and `compare_local.rs` share.
//! Include beside `serve_process.rs` (for `repo`).
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;

use super::serve_process::repo;

pub const SCRIPT: &str = "tests/support/tunable_tensorflow_model_server.py";

/// A directory holding the tunable server as `tensorflow_model_server`.
pub fn server_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tensorflow_model_server");
    std::fs::copy(repo().join(SCRIPT), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// PATH with `server` (a [`server_dir`]) first.
pub fn path_with(server: &Path) -> String {
    format!(
        "{}:{}",
        server.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `benchstack ARGS` with the tunable server on PATH; `configure` adds what a test needs
/// (`--state`, environment, working directory). Returns (exit code, stdout, stderr).
pub fn run(
    server: &Path,
    configure: impl FnOnce(&mut Command),
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::cargo_bin("benchstack").unwrap();
    cmd.timeout(Duration::from_secs(900))
        .env("PATH", path_with(server));
    configure(&mut cmd);
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `benchstack --state STATE ARGS` with the tunable server on PATH.
pub fn benchstack(server: &Path, state: &Path, args: &[&str]) -> (i32, String, String) {
    run(
        server,
        |c| {
            c.arg("--state").arg(state);
        },
        args,
    )
}
