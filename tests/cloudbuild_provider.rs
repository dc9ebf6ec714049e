//! The cloudbuild provider against loopback emulators, through the real clients: Cloud Build
//! and Artifact Registry (`support/cloudbuild_emulator.rs`, google-cloud-build-v1 and
//! google-cloud-artifactregistry-v1) and Cloud Storage (fake-gcs-server, google-cloud-storage
//! for the upload). Each test has its own emulators and a provider pointed at them.

#[path = "support/cloudbuild_emulator.rs"]
mod cloudbuild_emulator;
#[path = "support/fake_gcs.rs"]
mod fake_gcs;
#[path = "support/http_emulator.rs"]
mod http_emulator;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use benchstack::image_context::Context as BuildContext;
use benchstack::provider::cloudbuild::CloudBuildProvider;
use benchstack::provider::gcp::Apis;
use benchstack::provider::{Context, Inputs, Provider, ProviderError};
use benchstack::vocab::resources::{Address, ImageConfig, Kind, ResourceConfig};
use cloudbuild_emulator::CloudBuildEmulator;
use fake_gcs::FakeGcs;

const REPOSITORY: &str = "us-central1-docker.pkg.dev/bench-proj/benchstack";

struct World {
    gcs: FakeGcs,
    cb: CloudBuildEmulator,
    dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        let gcs = FakeGcs::start();
        let cb = CloudBuildEmulator::start(&gcs.url());
        World {
            gcs,
            cb,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn provider(&self) -> CloudBuildProvider {
        CloudBuildProvider::new(&Apis {
            cloud_build: Some(self.cb.url()),
            artifact_registry: Some(self.cb.url()),
            storage: Some(self.gcs.url()),
            ..Apis::emulated()
        })
        .with_poll_interval(Duration::from_millis(10))
    }

    /// An image whose context holds `dockerfile` and an app file.
    fn image(&self, dockerfile: &str, app: &str) -> ImageConfig {
        let ctx = self.dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("target")).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(ctx.join("app.txt"), app).unwrap();
        std::fs::write(ctx.join(".dockerignore"), "target\n").unwrap();
        std::fs::write(ctx.join("target/big.bin"), "never uploaded").unwrap();
        config(&ctx)
    }
}

fn config(ctx: &Path) -> ImageConfig {
    let args = BTreeMap::from([("MODE".to_string(), "bench".to_string())]);
    let hash = BuildContext::scan(ctx, "Dockerfile")
        .unwrap()
        .hash(&args)
        .unwrap();
    ImageConfig {
        repository: REPOSITORY.into(),
        name: "worker".into(),
        context: ctx.to_path_buf(),
        dockerfile: "Dockerfile".into(),
        args,
        content_hash: hash,
        preset: None,
    }
}

fn address() -> Address {
    Address {
        kind: Kind::Image,
        name: "worker".into(),
        key: None,
    }
}

/// Runs `f` with a context whose progress lines are collected.
fn with_ctx<T>(state_dir: &Path, f: impl FnOnce(&Context) -> T) -> (T, Vec<String>) {
    let lines = Mutex::new(Vec::new());
    let cancel = AtomicBool::new(false);
    let progress = |s: String| lines.lock().unwrap().push(s);
    let note = |_: serde_json::Value| Ok(());
    let ctx = Context {
        state_dir,
        note: &note,
        progress: &progress,
        cancel: &cancel,
    };
    let out = f(&ctx);
    (out, lines.into_inner().unwrap())
}

#[test]
fn a_build_uploads_the_context_creates_the_repository_and_records_the_pushed_digest() {
    let w = World::start();
    let image = w.image("FROM scratch\nCOPY app.txt /app.txt\n", "v1");
    let p = w.provider();
    let (r, progress) = with_ctx(w.dir.path(), |ctx| {
        p.create(
            ctx,
            &address(),
            &ResourceConfig::Image(image.clone()),
            &Inputs::default(),
        )
    });
    let applied = r.unwrap_or_else(|e| panic!("{e}"));
    let o = &applied.observed;
    let digest = o["digest"].as_str().unwrap();
    assert!(digest.starts_with("sha256:"), "{o}");
    assert_eq!(
        o["reference"].as_str().unwrap(),
        format!("{REPOSITORY}/worker@{digest}")
    );
    assert_eq!(o["content_hash"], image.content_hash.as_str());
    // The repository was missing and is created; the bucket too.
    assert_eq!(
        w.cb.repositories(),
        ["projects/bench-proj/locations/us-central1/repositories/benchstack"]
    );
    assert!(w.gcs.bucket_exists("bench-proj_cloudbuild"));
    // The upload: a tar.gz of the context without what .dockerignore leaves out.
    let objects = w.gcs.objects("bench-proj_cloudbuild");
    let source = objects
        .iter()
        .find(|o| o.starts_with("benchstack/source/"))
        .unwrap_or_else(|| panic!("{objects:?}"));
    let bytes = w.gcs.object("bench-proj_cloudbuild", source).unwrap();
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    for e in ar.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(names, [".dockerignore", "Dockerfile", "app.txt"]);
    // The build: docker build with the Dockerfile and args, the image pushed by `images`.
    let builds = w.cb.builds();
    assert_eq!(builds.len(), 1);
    let args: Vec<&str> = builds[0]["steps"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "build");
    assert!(
        args.windows(2).any(|w| w == ["--build-arg", "MODE=bench"]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["-f", "Dockerfile"]),
        "{args:?}"
    );
    assert_eq!(builds[0]["images"][0], args[2]);
    assert!(
        progress
            .iter()
            .any(|l| l.contains("WORKING") && l.contains("step 1/1")),
        "{progress:?}"
    );
    // Same content, same digest: a second build finds the repository and bucket there.
    let (again, _) = with_ctx(w.dir.path(), |ctx| {
        p.create(
            ctx,
            &address(),
            &ResourceConfig::Image(image.clone()),
            &Inputs::default(),
        )
    });
    assert_eq!(again.unwrap().observed["digest"], digest);
    assert_eq!(w.cb.count("POST", "/repositories"), 1);
}

#[test]
fn a_failing_build_names_its_step_and_the_tail_of_its_log() {
    let w = World::start();
    let image = w.image("FROM scratch\nRUN false\nCOPY app.txt /\n", "v1");
    let (r, _) = with_ctx(w.dir.path(), |ctx| {
        w.provider().create(
            ctx,
            &address(),
            &ResourceConfig::Image(image.clone()),
            &Inputs::default(),
        )
    });
    let e = r.unwrap_err().to_string();
    assert!(e.contains("FAILURE"), "{e}");
    assert!(e.contains("step 0 docker build"), "{e}");
    assert!(e.contains("step exited with non-zero status: 1"), "{e}");
    assert!(e.contains("last lines of the build log"), "{e}");
    assert!(
        e.contains("The command '/bin/sh -c false' returned a non-zero code: 1"),
        "{e}"
    );
}

#[test]
fn a_context_changed_since_the_plan_is_refused_before_anything_is_uploaded() {
    let w = World::start();
    let image = w.image("FROM scratch\n", "v1");
    std::fs::write(image.context.join("app.txt"), "v2").unwrap();
    let (r, _) = with_ctx(w.dir.path(), |ctx| {
        w.provider().create(
            ctx,
            &address(),
            &ResourceConfig::Image(image.clone()),
            &Inputs::default(),
        )
    });
    let e = r.unwrap_err();
    assert!(matches!(e, ProviderError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("changed since the plan"), "{e}");
    assert!(w.cb.requests().is_empty());
    assert!(!w.gcs.bucket_exists("bench-proj_cloudbuild"));
}

#[test]
fn an_interrupted_apply_adopts_the_digest_of_the_build_it_started() {
    let w = World::start();
    let image = w.image("FROM scratch\nCOPY app.txt /\n", "v1");
    let p = w.provider();
    let (done, _) = with_ctx(w.dir.path(), |ctx| {
        p.create(
            ctx,
            &address(),
            &ResourceConfig::Image(image.clone()),
            &Inputs::default(),
        )
    });
    let digest = done.unwrap().observed["digest"].clone();
    let id = w.cb.builds()[0]["id"].as_str().unwrap().to_string();
    // What apply noted before it was killed: the upload and the build it created.
    let intent = benchstack::state::Intent {
        address: address(),
        operation: "create".into(),
        provider: "cloudbuild".into(),
        config: Some(ResourceConfig::Image(image.clone())),
        depends_on: vec![],
        rendered: BTreeMap::new(),
        upstream: BTreeMap::new(),
        data: serde_json::json!({
            "project": "bench-proj", "location": "us-central1",
            "source": "gs://bench-proj_cloudbuild/benchstack/source/x.tar.gz", "build_id": id,
        }),
        pid: 0,
        started: 0,
    };
    let (adopted, _) = with_ctx(w.dir.path(), |ctx| p.recover(ctx, &intent, None, true));
    let adopted = adopted.unwrap().expect("the finished build is adopted");
    assert_eq!(adopted["digest"], digest);
    // Before the build was created nothing can be adopted: the next apply builds.
    let mut early = intent.clone();
    early.data = serde_json::json!({
        "project": "bench-proj", "location": "us-central1", "source": "gs://b/o"
    });
    let (none, _) = with_ctx(w.dir.path(), |ctx| p.recover(ctx, &early, None, true));
    assert_eq!(none.unwrap(), None);
}
