//! The state and plan files are private to their owner and never hold a credential: after an
//! apply against the GKE emulator (whose clusters report a legacy password and client key in
//! `masterAuth`) the state directory is 0700, every file in it 0600, the plan file 0600, and no
//! byte of any of them is the credential.

#[path = "support/gke_emulator.rs"]
mod gke_emulator;
#[path = "support/http_emulator.rs"]
mod http_emulator;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use gke_emulator::{GkeEmulator, LEGACY_SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_benchstack");

const STACK: &str = r#"
cluster "serving" {
  provider     = "gke"
  project      = "bench-test"
  location     = "us-central1-a"
  machine_type = "e2-standard-4"
  node_count   = 1
}
"#;

fn run(gke: &GkeEmulator, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--state")
        .arg(dir.join("state"))
        .args(args)
        .stdin(Stdio::null())
        .env("BENCHSTACK_GKE_ENDPOINT", gke.url())
        .env("BENCHSTACK_POLL_INTERVAL", "20ms")
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file and directory under `dir` (not following symlinks).
fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn state_and_plan_files_are_private_and_hold_no_credential() {
    let gke = GkeEmulator::start();
    let work = tempfile::tempdir().unwrap();
    let stack = work.path().join("stack.hcl");
    std::fs::write(&stack, STACK).unwrap();
    let s = stack.to_str().unwrap();

    let (code, out, err) = run(&gke, work.path(), &["apply", "--auto-approve", s]);
    assert_eq!(code, 0, "{out}\n{err}");
    let plan_file = work.path().join("plan.json");
    let (code, out, err) = run(
        &gke,
        work.path(),
        &["plan", "--out", plan_file.to_str().unwrap(), s],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, shown, err) = run(&gke, work.path(), &["state", "show", "cluster.serving"]);
    assert_eq!(code, 0, "{err}");
    assert!(!shown.contains(LEGACY_SECRET), "{shown}");

    let state = work.path().join("state");
    assert_eq!(mode(&state), 0o700, "the state directory");
    assert_eq!(mode(&plan_file), 0o600, "the plan file");
    let mut paths = Vec::new();
    walk(&state, &mut paths);
    assert!(paths.len() > 1, "{paths:?}");
    let secret = LEGACY_SECRET.as_bytes();
    for p in paths.iter().chain([&plan_file]) {
        let meta = std::fs::symlink_metadata(p).unwrap();
        if meta.is_dir() {
            assert_eq!(mode(p), 0o700, "{}", p.display());
        } else if meta.is_file() {
            assert_eq!(mode(p), 0o600, "{}", p.display());
            let bytes = std::fs::read(p).unwrap();
            assert!(
                !contains(&bytes, secret),
                "{} holds a credential",
                p.display()
            );
        }
    }

    let (code, out, err) = run(&gke, work.path(), &["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
}
