//! Team state on GCS (`--state gs://BUCKET/PREFIX`), with the real google-cloud-storage client
//! against fake-gcs-server on loopback: two working directories sharing one state, the lock
//! (refusal naming the holder, stale leases, `state unlock ID`), and the generation
//! precondition that refuses a stale writer.

#[path = "support/fake_gcs.rs"]
mod fake_gcs;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/http_emulator.rs"]
mod http_emulator;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use assert_cmd::prelude::*;
use benchstack::state::{self, Store, gcs};

use fake_gcs::FakeGcs;
use fault_proxy::FaultProxy;

const BUCKET: &str = "team";

/// One emulator for the file. The binary reads `STORAGE_EMULATOR_HOST`, as Google's clients
/// do (set once here, and on each command); the library is given it as an `Endpoint`.
fn emulator() -> &'static FakeGcs {
    static EMU: OnceLock<FakeGcs> = OnceLock::new();
    EMU.get_or_init(|| {
        let emu = FakeGcs::with_buckets(&[BUCKET]);
        // SAFETY: set inside the OnceLock initializer, which every test passes through before
        // it touches the client; nothing else in this process reads the variable concurrently.
        unsafe { std::env::set_var("STORAGE_EMULATOR_HOST", emu.host()) };
        emu
    })
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A working directory on the remote state `gs://team/PREFIX`.
struct Workdir {
    dir: tempfile::TempDir,
    remote: String,
    /// Commands run without `--state`: the stack's backend block or the directory's binding
    /// names the state.
    bare: bool,
}

impl Workdir {
    fn new(prefix: &str) -> Workdir {
        emulator();
        Workdir {
            dir: tempfile::tempdir().unwrap(),
            remote: format!("gs://{BUCKET}/{prefix}"),
            bare: false,
        }
    }

    /// A working directory whose commands take no `--state`.
    fn bare() -> Workdir {
        let mut w = Workdir::new("unused");
        w.bare = true;
        w
    }

    /// `write_stack`, with `backend "gcs" { bucket = "team"  prefix = PREFIX }` when given.
    fn write_stack_with_backend(&self, duration: &str, prefix: Option<&str>) {
        self.write_stack(duration);
        if let Some(prefix) = prefix {
            let mut text = std::fs::read_to_string(self.stack()).unwrap();
            text.push_str(&format!(
                "\nbackend \"gcs\" {{\n  bucket = \"{BUCKET}\"\n  prefix = \"{prefix}\"\n}}\n"
            ));
            std::fs::write(self.stack(), text).unwrap();
        }
    }

    /// A stack that starts nothing (a local cluster and a model), with a backend block when
    /// `prefix` is given.
    fn write_small_stack(&self, prefix: Option<&str>) {
        let mut text = format!(
            "cluster \"local\" {{\n  provider = \"local\"\n}}\n\nmodel \"regression\" {{\n  base_path = \"{}\"\n}}\n",
            repo().join("examples/model/regression").display()
        );
        if let Some(prefix) = prefix {
            text.push_str(&format!(
                "\nbackend \"gcs\" {{\n  bucket = \"{BUCKET}\"\n  prefix = \"{prefix}\"\n}}\n"
            ));
        }
        std::fs::write(self.stack(), text).unwrap();
    }

    fn stack(&self) -> PathBuf {
        self.dir.path().join("stack.hcl")
    }

    /// The local stack of apply_cli.rs: one serving replica, a tiny REST load test.
    fn write_stack(&self, duration: &str) {
        let model = repo().join("examples/model/regression");
        let request = repo().join("examples/requests/regression.json");
        let text = format!(
            r#"
cluster "local" {{
  provider = "local"
}}

model "regression" {{
  base_path = "{model}"
}}

serving "tf" {{
  cluster  = cluster.local
  replicas = 1
  models   = [model.regression]
}}

loadtest "smoke" {{
  cluster  = cluster.local
  target   = serving.tf
  model    = "regression"
  protocol = "rest"
  request  = file("{request}")
  stage {{
    rate     = 100
    duration = "{duration}"
  }}
  slo   {{ p99 = "10s" }}
}}
"#,
            model = model.display(),
            request = request.display(),
        );
        std::fs::write(self.stack(), text).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("benchstack").unwrap();
        if !self.bare {
            c.arg("--state").arg(&self.remote);
        }
        c.args(args)
            .env_remove("BENCHSTACK_STATE")
            .env("STORAGE_EMULATOR_HOST", emulator().host())
            .stdin(Stdio::null())
            .current_dir(self.dir.path());
        c
    }

    /// Exit code, stdout, and stderr with miette's frame and line wrapping undone.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
        let out = self.cmd(args).envs(envs.iter().copied()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).replace(['│', '×'], " ");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            // miette wraps at 80 columns, also after a `/` inside a gs:// address.
            err.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace("/ ", "/"),
        )
    }

    /// The working copy bound to the remote (where the local provider keeps its files).
    fn bound(&self) -> PathBuf {
        gcs::bind_in(
            self.dir.path(),
            &gcs::Address::parse(&self.remote).unwrap(),
            None,
        )
        .unwrap()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let needle = self.dir.path().display().to_string();
        for pid in state::procinfo::find_by_arg(&needle) {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The emulator, as the library is told where Cloud Storage is.
fn endpoint() -> gcs::Endpoint {
    gcs::Endpoint::Emulator(emulator().url())
}

fn client(prefix: &str) -> Arc<gcs::Gcs> {
    Arc::new(
        gcs::Gcs::connect(
            gcs::Address::parse(&format!("gs://{BUCKET}/{prefix}")).unwrap(),
            None,
            &endpoint(),
        )
        .unwrap(),
    )
}

fn lock_record(prefix: &str) -> Option<(gcs::LockRecord, i64)> {
    let (bytes, generation) =
        emulator().object_generation(BUCKET, &format!("{prefix}/lock.json"))?;
    Some((serde_json::from_slice(&bytes).unwrap(), generation))
}

#[test]
fn a_second_working_directory_plans_no_changes_and_lists_the_first_ones_runs() {
    let a = Workdir::new("bench");
    let b = Workdir::new("bench");
    a.write_stack("1s");
    b.write_stack("1s");

    let (code, out, err) = a.run(&["apply", "--auto-approve", s(&a.stack())]);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
    assert!(out.contains("loadtest.smoke: ran as run #1"), "{out}");
    // The way to remove it (printed when an apply stops with things running) names the
    // bucket, which works from any directory, not the working copy.
    assert_eq!(
        benchstack::cli::apply::destroy_command(&a.bound(), None, &[], &[]),
        "benchstack --state gs://team/bench destroy"
    );

    // The state, its run and a free lock are on GCS.
    let (body, _) = emulator()
        .object_generation(BUCKET, "bench/state.json")
        .expect("state.json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["runs"], serde_json::json!([1]), "{v}");
    assert!(
        emulator()
            .object_generation(BUCKET, "bench/runs/1.json")
            .is_some()
    );
    let (lock, _) = lock_record("bench").expect("lock.json");
    assert_eq!(lock.state, "free", "{lock:?}");

    // Another directory (another laptop, CI) sees what exists.
    let (code, out, err) = b.run(&["plan", "--detailed-exitcode", s(&b.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("No changes."), "{out}");
    // Runs are immutable: each is downloaded once per working directory, then read from its
    // cache (a tune's hundreds of probes are not fetched by every command).
    let c = Workdir::new("bench");
    let proxy = FaultProxy::start(emulator().host(), "none", 0);
    for _ in 0..2 {
        let (code, out, err) =
            c.run_with(&["results"], &[("STORAGE_EMULATOR_HOST", &proxy.host())]);
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("#1") || out.contains(" 1 "), "{out}");
        assert!(out.contains("loadtest.smoke"), "{out}");
    }
    let seen = proxy.uploads.lock().unwrap().clone();
    let run_reads = seen
        .iter()
        .filter(|r| r.contains("bench/runs/1.json"))
        .count();
    assert_eq!(run_reads, 1, "{seen:?}");
    let (code, out, err) = b.run(&["state", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("serving.tf"), "{out}");

    // And can destroy it: the first directory then plans everything again.
    let (code, out, err) = b.run(&["destroy", "--auto-approve", s(&b.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = a.run(&["plan", "--detailed-exitcode", s(&a.stack())]);
    assert_eq!(code, 2, "{out}\n{err}");
}

#[test]
fn while_one_holds_the_lock_another_apply_is_refused_naming_the_holder() {
    let w = Workdir::new("held");
    w.write_stack("1s");
    let g = client("held");
    let lock = gcs::RemoteLock::acquire(g, "apply", "").unwrap();
    let id = lock.id();

    let (code, out, err) = w.run(&["apply", "--auto-approve", s(&w.stack())]);
    assert_eq!(code, 1, "{out}\n{err}");
    let holder = lock.record();
    assert!(err.contains("is locked by"), "{err}");
    assert!(
        err.contains(&format!("{}@{}", holder.user, holder.host)),
        "{err}"
    );
    assert!(err.contains("running `apply` since"), "{err}");
    assert!(err.contains(&format!("lock id {id}")), "{err}");
    assert!(!err.contains("stale"), "{err}");
    // Nothing was written: no state object.
    assert!(
        emulator()
            .object_generation(BUCKET, "held/state.json")
            .is_none()
    );

    // Released by a conditional overwrite with a free record; the apply then goes ahead.
    drop(lock);
    let (free, _) = lock_record("held").unwrap();
    assert_eq!(free.state, "free");
}

#[test]
fn an_expired_lease_is_stale_and_state_unlock_breaks_exactly_that_lock() {
    let w = Workdir::new("stale");
    w.write_stack("1s");
    let g = client("stale");
    let now = state::procinfo::now_unix();
    let record = gcs::LockRecord {
        state: "held".into(),
        user: "ci".into(),
        host: "runner-7".into(),
        pid: 4242,
        operation: "apply".into(),
        since: now - 600,
        lineage: String::new(),
        lease_until: now - 540,
    };
    let id = g
        .write_if("lock.json", serde_json::to_vec(&record).unwrap(), 0)
        .unwrap();

    let (code, out, err) = w.run(&["apply", "--auto-approve", s(&w.stack())]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("ci@runner-7 (pid 4242) running `apply`"),
        "{err}"
    );
    assert!(err.contains("stale"), "{err}");
    assert!(
        err.contains(&format!("benchstack state unlock {id}")),
        "{err}"
    );

    // Without a terminal, confirmation is refused; a wrong id changes nothing.
    let (code, _, err) = w.run(&["state", "unlock", &id.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pass --force"), "{err}");
    let (code, _, err) = w.run(&["state", "unlock", &(id + 1).to_string(), "--force"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("now generation {id}")), "{err}");
    assert_eq!(lock_record("stale").unwrap(), (record.clone(), id));

    let (code, out, err) = w.run(&["state", "unlock", &id.to_string(), "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("stale"), "{out}");
    assert!(
        out.contains(&format!("Broke lock {id} of ci@runner-7")),
        "{out}"
    );
    let (after, generation) = lock_record("stale").unwrap();
    assert_eq!(after.state, "free");
    assert_ne!(generation, id);

    // The same id again: that lock no longer exists.
    let (code, out, _) = w.run(&["state", "unlock", &id.to_string(), "--force"]);
    assert_eq!(code, 0);
    assert!(out.contains("is not locked"), "{out}");
}

#[test]
fn a_write_whose_generation_precondition_fails_is_refused_and_the_state_object_is_unchanged() {
    let w = Workdir::new("race");
    let dir = w.bound();
    let store = Store::open(&dir, "apply", &endpoint()).unwrap();
    let (first, g1) = emulator()
        .object_generation(BUCKET, "race/state.json")
        .expect("written on open");

    // Another writer (one whose lock was broken, or that never took it) replaces the state.
    let other = client("race");
    let mut theirs: serde_json::Value = serde_json::from_slice(&first).unwrap();
    theirs["serial"] = serde_json::json!(99);
    theirs["meta"]["serial"] = serde_json::json!(99);
    let g2 = other
        .write_if("state.json", serde_json::to_vec(&theirs).unwrap(), g1)
        .unwrap();
    let before = emulator()
        .object_generation(BUCKET, "race/state.json")
        .unwrap();
    assert_eq!(before.1, g2);

    // This writer's next write is refused, and names the generation it read.
    let err = store
        .record_history(state::history_entry("apply", None, None))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, state::StateError::Gcs(gcs::GcsError::Conflict { .. })),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "the state changed since it was read (generation {g1})"
        )),
        "{msg}"
    );
    assert_eq!(
        emulator()
            .object_generation(BUCKET, "race/state.json")
            .unwrap(),
        before
    );
}

#[test]
fn after_a_kill_9_of_an_apply_another_directory_breaks_the_stale_lock_and_continues_it() {
    let a = Workdir::new("killed");
    let b = Workdir::new("killed");
    a.write_stack("60s");
    b.write_stack("1s");
    let mut child = a
        .cmd(&["apply", "--auto-approve", s(&a.stack())])
        .env("BENCHSTACK_LOCK_LEASE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("loadtest.smoke: running") {
            break;
        }
    }
    assert!(seen.contains("loadtest.smoke: running"), "{seen}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL: no release, no renewal
    child.wait().unwrap();
    let servers = state::procinfo::find_by_arg(&a.dir.path().display().to_string());
    assert_eq!(servers.len(), 1, "serving outlives the killed apply");

    // Its lease runs out: the lock is reported as stale, with the holder, and not taken.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (code, out, err) = b.run(&["plan", s(&b.stack())]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("running `apply` since"), "{err}");
    assert!(err.contains("the lock is stale"), "{err}");
    // Readers do not wait for the lock: they read state.json, with the killed apply's intent.
    let (code, out, err) = b.run(&["state", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("serving.tf"), "{out}");
    assert!(out.contains("(unsettled run"), "{out}");
    let (code, out, err) = b.run(&["plan", "--lock=false", s(&b.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("# loadtest.smoke will run"), "{out}");
    let (_, id) = lock_record("killed").unwrap();
    let (code, out, err) = b.run(&["state", "unlock", &id.to_string(), "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");

    // The intent the killed apply wrote before its load test is on GCS: the plan continues
    // it (serving stands, the load test runs again) and the apply does not duplicate serving.
    let (code, out, err) = b.run(&["plan", "--detailed-exitcode", s(&b.stack())]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(!out.contains("serving.tf will"), "{out}");
    assert!(out.contains("# loadtest.smoke will run"), "{out}");
    let (code, out, err) = b.run(&["apply", "--auto-approve", s(&b.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("serving.tf: created"), "{out}");
    assert_eq!(
        state::procinfo::find_by_arg(&a.dir.path().display().to_string()),
        servers,
        "no second serving process"
    );
    assert!(state::procinfo::find_by_arg(&b.dir.path().display().to_string()).is_empty());
    let (code, out, err) = b.run(&["destroy", "--auto-approve", s(&b.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn a_503_on_a_state_write_is_retried() {
    let w = Workdir::new("flaky");
    w.write_stack("1s");
    let proxy = FaultProxy::start(emulator().host(), "flaky/state.json", 2);
    // The first plan creates the state object: its upload fails twice, then lands.
    let (code, out, err) = w.run_with(
        &["plan", s(&w.stack())],
        &[("STORAGE_EMULATOR_HOST", &proxy.host())],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(proxy.failed(), 2);
    assert!(
        emulator()
            .object_generation(BUCKET, "flaky/state.json")
            .is_some()
    );
}

#[test]
fn a_persistent_503_exits_1_naming_the_object_and_leaves_the_state_readable() {
    let w = Workdir::new("down");
    w.write_stack("1s");
    let (code, out, err) = w.run(&["plan", s(&w.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let before = emulator()
        .object_generation(BUCKET, "down/state.json")
        .unwrap();

    let proxy = FaultProxy::start(emulator().host(), "down/state.json", u32::MAX);
    let (code, out, err) = w.run_with(
        &["apply", "--auto-approve", s(&w.stack())],
        &[
            ("STORAGE_EMULATOR_HOST", &proxy.host()),
            ("BENCHSTACK_GCS_RETRY_BUDGET", "2"),
        ],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(proxy.failed() >= 2, "retried: {}", proxy.failed());
    assert!(err.contains("gs://team/down/state.json"), "{err}");
    // The intent could not be recorded, so nothing was started; the state is as it was, and
    // readable; the lock was released.
    assert!(state::procinfo::find_by_arg(&w.dir.path().display().to_string()).is_empty());
    assert_eq!(
        emulator()
            .object_generation(BUCKET, "down/state.json")
            .unwrap(),
        before
    );
    let (code, out, err) = w.run(&["state", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(lock_record("down").unwrap().0.state, "free");
}

/// `state pull` as JSON.
fn pull(w: &Workdir) -> serde_json::Value {
    let (code, out, err) = w.run(&["state", "pull"]);
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn state_migrate_to_gcs_and_back_keeps_lineage_serial_history_and_every_run() {
    let mut local = Workdir::new("unused");
    local.remote = local.dir.path().join("state").display().to_string();
    local.write_stack("1s");
    let (code, out, err) = local.run(&["apply", "--auto-approve", s(&local.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let original = pull(&local);
    assert_eq!(original["runs"], serde_json::json!([1]), "{original}");

    let (code, out, err) = local.run(&["state", "migrate", "--to", "gs://team/moved"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let remote = Workdir::new("moved");
    let on_gcs = pull(&remote);
    for key in [
        "lineage",
        "serial",
        "history",
        "runs",
        "resources",
        "outputs",
    ] {
        assert_eq!(on_gcs[key], original[key], "{key}");
    }
    let (code, out, err) = remote.run(&["results"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("loadtest.smoke"), "{out}");

    let back = remote.dir.path().join("back");
    let (code, out, err) = remote.run(&["state", "migrate", "--to", s(&back)]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut returned = Workdir::new("unused");
    returned.remote = back.display().to_string();
    let again = pull(&returned);
    for key in [
        "lineage",
        "serial",
        "history",
        "runs",
        "resources",
        "outputs",
    ] {
        assert_eq!(again[key], original[key], "{key}");
    }
    let (code, out, err) = returned.run(&["results", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");

    // Another state (another lineage) is not poured over it.
    let mut other = Workdir::new("unused");
    other.remote = other.dir.path().join("state").display().to_string();
    std::fs::write(
        other.stack(),
        "cluster \"local\" {\n  provider = \"local\"\n}\n",
    )
    .unwrap();
    let (code, out, err) = other.run(&["apply", "--auto-approve", s(&other.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let before = emulator()
        .object_generation(BUCKET, "moved/state.json")
        .unwrap();
    let (code, out, err) = other.run(&["state", "migrate", "--to", "gs://team/moved"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("holds a different state"), "{err}");
    assert_eq!(
        emulator()
            .object_generation(BUCKET, "moved/state.json")
            .unwrap(),
        before
    );
}

#[test]
fn with_a_kms_key_every_object_is_written_naming_it() {
    let w = Workdir::new("cmek");
    w.write_stack("1s");
    let key = "projects/p/locations/europe-west1/keyRings/bench/cryptoKeys/state";
    let proxy = FaultProxy::start(emulator().host(), "cmek/state.json", 0);
    let via_proxy = [
        ("STORAGE_EMULATOR_HOST", proxy.host()),
        ("BENCHSTACK_GCS_KMS_KEY", key.to_string()),
    ];
    let envs: Vec<(&str, &str)> = via_proxy.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = w.run_with(&["plan", s(&w.stack())], &envs);
    assert_eq!(code, 0, "{out}\n{err}");
    let uploads = proxy.uploads.lock().unwrap().clone();
    // The lock (taken, released) and the state.
    assert!(uploads.len() >= 3, "{uploads:?}");
    for q in uploads.iter().filter(|q| !q.starts_with("GET ")) {
        assert!(q.contains(&format!("kmsKeyName={key}")), "{q}");
    }

    // A malformed key is refused before anything is written.
    let (code, out, err) = w.run_with(
        &["plan", s(&w.stack())],
        &[("BENCHSTACK_GCS_KMS_KEY", "my-key")],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("the KMS key `my-key` (BENCHSTACK_GCS_KMS_KEY or the backend's kms_key_name) is not a Cloud KMS key name"),
        "{err}"
    );
}

#[test]
fn an_unreadable_lock_is_reported_with_its_id_and_broken_only_by_that_id() {
    let w = Workdir::new("garbled");
    w.write_stack("1s");
    let g = client("garbled");
    let id = g
        .write_if("lock.json", b"\x00not json".to_vec(), 0)
        .unwrap();

    let (code, out, err) = w.run(&["apply", "--auto-approve", s(&w.stack())]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&format!("(lock id {id}) is unreadable")),
        "{err}"
    );
    assert!(
        err.contains(&format!("benchstack state unlock {id}")),
        "{err}"
    );
    // Nothing replaced it on the way.
    assert_eq!(
        emulator()
            .object_generation(BUCKET, "garbled/lock.json")
            .unwrap()
            .1,
        id
    );

    let (code, _, err) = w.run(&["state", "unlock", &(id + 1).to_string(), "--force"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        emulator()
            .object_generation(BUCKET, "garbled/lock.json")
            .unwrap()
            .1,
        id
    );
    let (code, out, err) = w.run(&["state", "unlock", &id.to_string(), "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(lock_record("garbled").unwrap().0.state, "free");
}

#[test]
fn the_holder_renews_its_lease_and_once_its_lock_is_broken_writes_nothing_more() {
    let w = Workdir::new("broken");
    w.write_stack("4s");
    let mut child = w
        .cmd(&["apply", "--auto-approve", s(&w.stack())])
        .env("BENCHSTACK_LOCK_LEASE", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("loadtest.smoke: running") {
            break;
        }
    }
    assert!(seen.contains("loadtest.smoke: running"), "{seen}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // Seconds after it was taken with a two-second lease, the lock is held, was renewed
    // (its lease reaches past the first one) and is current.
    let (record, _) = lock_record("broken").unwrap();
    assert!(record.is_held(), "{record:?}");
    assert!(record.lease_until > record.since + 2, "renewed: {record:?}");
    assert!(
        !record.is_stale(state::procinfo::now_unix()),
        "current: {record:?}"
    );

    // Break it (the holder renews meanwhile, changing the id: take the id as it is now).
    let mut broke = false;
    for _ in 0..20 {
        let (_, id) = lock_record("broken").unwrap();
        let (code, _, _) = w.run(&["state", "unlock", &id.to_string(), "--force"]);
        if code == 0 {
            broke = true;
            break;
        }
    }
    assert!(broke);
    let out = child.wait_with_output().unwrap();
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let err = String::from_utf8_lossy(&out.stderr).replace(['│', '×'], " ");
    let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(out.status.code(), Some(1), "{seen}\n{err}");
    assert!(
        format!("{seen}{err}").contains("was broken or taken while this command held it"),
        "{seen}\n{err}"
    );
    // The run it measured after losing the lock is not in the state.
    let (body, _) = emulator()
        .object_generation(BUCKET, "broken/state.json")
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["runs"], serde_json::json!([]), "{v}");
    assert_eq!(lock_record("broken").unwrap().0.state, "free");
}

// The stack's `backend "gcs"` block: commands given the stack bind the working directory to
// it (.benchstack/backend.json), commands without a stack read the binding.

#[test]
fn two_working_directories_share_the_state_named_by_the_backend_block() {
    let a = Workdir::bare();
    let b = Workdir::bare();
    a.write_stack_with_backend("1s", Some("block"));
    b.write_stack_with_backend("1s", Some("block"));

    let (code, out, err) = a.run(&["apply", "--auto-approve", s(&a.stack())]);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
    assert!(out.contains("loadtest.smoke: ran as run #1"), "{out}");
    // On the bucket, not in a local ./state.
    assert!(
        emulator()
            .object_generation(BUCKET, "block/runs/1.json")
            .is_some()
    );
    assert!(!a.dir.path().join("state").exists());
    let binding: serde_json::Value = serde_json::from_slice(
        &std::fs::read(a.dir.path().join(".benchstack/backend.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(binding["gcs"]["prefix"], "block", "{binding}");

    let (code, out, err) = b.run(&["plan", "--detailed-exitcode", s(&b.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("No changes."), "{out}");
    // Commands without a stack find the state the directory is bound to.
    let (code, out, err) = b.run(&["results"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("loadtest.smoke"), "{out}");
    let (code, out, err) = b.run(&["state", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("serving.tf"), "{out}");
    // While one applies, the other's apply is refused naming the holder.
    let lock = gcs::RemoteLock::acquire(client("block"), "apply", "").unwrap();
    let (code, out, err) = b.run(&["apply", "--auto-approve", s(&b.stack())]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("gs://team/block is locked by"), "{err}");
    drop(lock);
    // A plan file is applied to the bound state (a fresh ./state would be another lineage).
    let planfile = b.dir.path().join("b.plan");
    let (code, out, err) = b.run(&["plan", "--out", s(&planfile), s(&b.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = b.run(&["apply", s(&planfile)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!b.dir.path().join("state").exists());

    // `destroy` without the stack destroys what the bound state holds.
    let (code, out, err) = b.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = a.run(&["plan", "--detailed-exitcode", s(&a.stack())]);
    assert_eq!(code, 2, "{out}\n{err}");
}

#[test]
fn a_changed_backend_is_refused_naming_both_until_state_migrate_moves_the_state() {
    let w = Workdir::bare();
    // A state applied locally, then a backend block: refused, pointing at migrate.
    w.write_small_stack(None);
    let (code, out, err) = w.run(&["apply", "--auto-approve", s(&w.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    w.write_small_stack(Some("first"));
    let (code, out, err) = w.run(&["plan", s(&w.stack())]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("has a local state in ./state"), "{err}");
    assert!(
        err.contains("benchstack state migrate --to gs://team/first"),
        "{err}"
    );
    assert!(
        emulator()
            .object_generation(BUCKET, "first/state.json")
            .is_none()
    );
    let (code, out, err) = w.run(&["state", "migrate", "--to", "gs://team/first"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("now uses gs://team/first"), "{out}");
    let (code, out, err) = w.run(&["plan", "--detailed-exitcode", s(&w.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");

    // Another bucket path in the block: refused, naming both, and nothing is written there.
    w.write_small_stack(Some("second"));
    let (code, out, err) = w.run(&["plan", s(&w.stack())]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("Backend configuration changed"), "{err}");
    assert!(
        err.contains("names gs://team/second, but this directory's state is gs://team/first"),
        "{err}"
    );
    assert!(err.contains("stack.hcl:"), "{err}");
    assert!(
        err.contains("benchstack state migrate --to gs://team/second"),
        "{err}"
    );
    assert!(
        emulator()
            .object_generation(BUCKET, "second/state.json")
            .is_none()
    );
    // Commands without a stack still read the bound state; --state overrides the block.
    let (code, out, err) = w.run(&["state", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("cluster.local"), "{out}");
    let (code, out, err) = w.run(&[
        "--state",
        "gs://team/first",
        "plan",
        "--detailed-exitcode",
        s(&w.stack()),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");

    let (code, out, err) = w.run(&["state", "migrate", "--to", "gs://team/second"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = w.run(&["plan", "--detailed-exitcode", s(&w.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let first = pull(&Workdir::new("first"));
    let second = pull(&Workdir::new("second"));
    assert_eq!(first["lineage"], second["lineage"]);

    // The block removed: refused too (the directory is bound to the bucket).
    w.write_small_stack(None);
    let (code, out, err) = w.run(&["plan", s(&w.stack())]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("the stack has no backend block (its state would be ./state), but this directory's state is gs://team/second"),
        "{err}"
    );
    // Moved back to ./state (which still holds the older copy of the same lineage): unbound,
    // and the stack without a block plans clean against it.
    let (code, out, err) = w.run(&["state", "migrate", "--to", "state"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("no longer uses gs://team/second"), "{out}");
    assert!(!w.dir.path().join(".benchstack/backend.json").exists());
    let (code, out, err) = w.run(&["plan", "--detailed-exitcode", s(&w.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = w.run(&["state", "pull"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let local: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(local["lineage"], second["lineage"]);
    assert_eq!(local["serial"], second["serial"]);
}

#[test]
fn a_backend_block_with_a_variable_is_refused_at_its_line_and_column() {
    let w = Workdir::bare();
    w.write_small_stack(None);
    let mut text = std::fs::read_to_string(w.stack()).unwrap();
    text.push_str(
        "\nvariable \"bucket\" {\n  default = \"team\"\n}\n\nbackend \"gcs\" {\n  bucket = var.bucket\n}\n",
    );
    std::fs::write(w.stack(), &text).unwrap();
    let line = text.lines().position(|l| l.contains("var.bucket")).unwrap() + 1;
    let (code, out, err) = w.run(&["plan", s(&w.stack())]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains(&format!("stack.hcl:{line}:12")), "{err}");
    assert!(
        err.contains("bucket: found a reference, expected a literal string"),
        "{err}"
    );
    // Nothing was bound or written.
    assert!(!w.dir.path().join(".benchstack").exists());
    assert!(!w.dir.path().join("state").exists());
}

#[test]
fn a_baseline_pinned_in_one_working_directory_is_in_state_json_and_seen_by_another() {
    let a = Workdir::new("pinned");
    let b = Workdir::new("pinned");
    a.write_stack("300ms");
    let (code, out, err) = a.run(&["apply", "--auto-approve", s(&a.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = a.run(&["results", "baseline", "set", "loadtest.smoke", "1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (body, _) = emulator()
        .object_generation(BUCKET, "pinned/state.json")
        .expect("state.json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["baselines"][0]["address"], "loadtest.smoke", "{v}");
    assert_eq!(v["baselines"][0]["runs"], serde_json::json!([1]), "{v}");
    // A fresh working copy is rebuilt from state.json: the baseline comes with it, and can be
    // unpinned from there.
    let (code, out, err) = b.run(&["results", "baseline", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("loadtest.smoke: runs #1"), "{out}");
    let (code, out, err) = b.run(&["results", "baseline", "unset", "loadtest.smoke"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = a.run(&["results", "baseline", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("No baselines pinned"), "{out}");
    let (code, out, err) = a.run(&["destroy", "--auto-approve", s(&a.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
}
