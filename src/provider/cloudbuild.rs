//! The `cloudbuild` provider: `image` blocks built by Cloud Build and pushed to Artifact
//! Registry.
//!
//! create and update are one build: the context (as `image_context` selects it) is packed as a
//! tar.gz and uploaded with google-cloud-storage (JSON API, a multipart upload below 16 MiB)
//! under `benchstack/` in a bucket apply manages (`PROJECT_cloudbuild`, as `gcloud builds
//! submit` uses, or `BENCHSTACK_BUILD_BUCKET`; created when missing with a lifecycle rule that
//! deletes uploaded sources after 7 days); the Artifact Registry repository is created when
//! missing (google-cloud-artifactregistry-v1); the build is created with google-cloud-build-v1
//! (`docker build` of the context with its Dockerfile and args, and `images`, so the pushed
//! digest comes back in `results.images[].digest`) and followed until it ends, with progress
//! (step, status, elapsed). A failed build is an error naming the failing step, the service's
//! `failureInfo` and the last lines of the build log (read from the logs bucket).
//!
//! The bucket is created and read through the Cloud Storage JSON API directly: in
//! google-cloud-storage those calls are gRPC-only (`StorageControl`), which no emulator
//! available from a registry speaks (see the research notes on fake-gcs-server).
//!
//! `delete` leaves pushed images in the repository: they are addressed by digest, cost
//! little, and earlier runs name them.

use std::time::{Duration, Instant};

use google_cloud_artifactregistry_v1::client::ArtifactRegistry;
use google_cloud_build_v1::client::CloudBuild;
use google_cloud_build_v1::model::{
    Build, BuildOperationMetadata, BuildStep, Source, StorageSource, build::Status,
};
use google_cloud_storage::client::Storage;
use serde::{Deserialize, Serialize};

use super::gcp;
use super::retry::{self, Call, RetryPolicy};
use super::runtime::ClientRuntime;
use super::{Applied, Context, ErrorKind, Inputs, Observation, Provider, ProviderError};
use crate::image_context;
use crate::state::observed::CloudBuildImageObserved;
use crate::state::{Intent, ResourceState};
use crate::vocab::resources::{Address, ImageConfig, ResourceConfig};

/// The bucket the contexts are uploaded to (default `PROJECT_cloudbuild`).
pub const BUILD_BUCKET_ENV: &str = "BENCHSTACK_BUILD_BUCKET";
/// How long a build may run (humantime; default 30m): Cloud Build's own `timeout`.
pub const BUILD_TIMEOUT_ENV: &str = "BENCHSTACK_BUILD_TIMEOUT";

/// Uploaded sources are deleted after this many days (the bucket's lifecycle rule).
const SOURCE_AGE_DAYS: u32 = 7;
const SOURCE_PREFIX: &str = "benchstack/source/";
const LOG_PREFIX: &str = "benchstack/logs";
/// The builder image for `docker build` (https://cloud.google.com/build/docs/building/build-containers).
const DOCKER_BUILDER: &str = "gcr.io/cloud-builders/docker";
/// Lines of the build log shown with a failure.
const LOG_TAIL_LINES: usize = 20;

/// What is recorded before the upload and the build, so an interrupted apply can find the
/// build it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageIntent {
    project: String,
    location: String,
    source: String,
    #[serde(default)]
    build_id: Option<String>,
}

pub struct CloudBuildProvider {
    /// Where Cloud Build, Artifact Registry and Cloud Storage are, and the credentials
    /// (given at construction).
    apis: gcp::Apis,
    poll: Option<Duration>,
    runtime: ClientRuntime,
}

/// Where the image goes and is built, from its repository.
struct Target {
    project: String,
    location: String,
    repository: String,
}

fn target(i: &ImageConfig) -> Result<Target, ProviderError> {
    let (location, project, repository) = i.artifact_registry().ok_or_else(|| {
        ProviderError::invalid(format!(
            "{} is not an Artifact Registry repository (LOCATION-docker.pkg.dev/PROJECT/REPOSITORY)",
            i.repository
        ))
    })?;
    Ok(Target {
        project,
        location,
        repository,
    })
}

fn gax(what: &str) -> impl Fn(google_cloud_gax::error::Error) -> ProviderError + '_ {
    move |e| {
        let (kind, message, unsent) = gcp::classify(&e);
        let err = ProviderError::new(kind, what, message);
        if unsent { err.unsent_request() } else { err }
    }
}

fn short(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, sec) => format!("{sec}s"),
        (m, sec) => format!("{m}m{sec}s"),
    }
}

impl CloudBuildProvider {
    /// The three APIs where `apis` says they are, with its credentials.
    pub fn new(apis: &gcp::Apis) -> Self {
        CloudBuildProvider {
            apis: apis.clone(),
            poll: None,
            runtime: ClientRuntime::new("benchstack-cloudbuild", "Cloud Build client"),
        }
    }

    pub fn with_poll_interval(mut self, d: Duration) -> Self {
        self.poll = Some(d);
        self
    }

    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        self.runtime.block_on(f)
    }

    fn poll_interval(&self) -> Result<Duration, ProviderError> {
        match self.poll {
            Some(d) => Ok(d),
            None => gcp::poll_interval(),
        }
    }

    async fn clients(&self) -> Result<Clients, ProviderError> {
        let e = &self.apis;
        let anonymous = e.anonymous();
        let creds = gcp::anonymous_credentials;
        let no_retry = google_cloud_gax::retry_policy::NeverRetry;
        let client_error = |what: &'static str| {
            move |err: google_cloud_gax::client_builder::Error| {
                ProviderError::new(ErrorKind::Permission, what, err.to_string())
            }
        };
        let mut b = CloudBuild::builder().with_retry_policy(no_retry.clone());
        if let Some(url) = &e.cloud_build {
            b = b.with_endpoint(url);
        }
        if anonymous {
            b = b.with_credentials(creds());
        }
        let build = b
            .build()
            .await
            .map_err(client_error("creating the Cloud Build client"))?;
        let mut b = ArtifactRegistry::builder().with_retry_policy(no_retry.clone());
        if let Some(url) = &e.artifact_registry {
            b = b.with_endpoint(url);
        }
        if anonymous {
            b = b.with_credentials(creds());
        }
        let registry = b
            .build()
            .await
            .map_err(client_error("creating the Artifact Registry client"))?;
        let mut b = Storage::builder().with_retry_policy(no_retry);
        if let Some(url) = &e.storage {
            b = b.with_endpoint(url);
        }
        if anonymous {
            b = b.with_credentials(creds());
        }
        let storage = b
            .build()
            .await
            .map_err(client_error("creating the Cloud Storage client"))?;
        let token = e.access_token().await?;
        Ok(Clients {
            build,
            registry,
            storage,
            json: JsonStorage {
                base: e
                    .storage
                    .clone()
                    .unwrap_or_else(|| "https://storage.googleapis.com".to_string()),
                token,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .map_err(|e| ProviderError::other(format!("an HTTP client: {e}")))?,
            },
        })
    }

    async fn build_image(
        &self,
        ctx: &Context<'_>,
        address: &Address,
        i: &ImageConfig,
        rendered: &std::collections::BTreeMap<String, String>,
    ) -> Result<Applied, ProviderError> {
        let policy = RetryPolicy::from_env()?;
        let t = target(i)?;
        // The context as it is now; a change since the plan is refused (plan again). A
        // serving-preset image's context is the plan's rendered files (never re-rendered
        // here) and the models' version folders.
        let scanned = if i.preset.is_some() {
            if !rendered.contains_key("Dockerfile") {
                return Err(ProviderError::invalid(format!(
                    "{address}: a serving-preset image is built from the plan's rendered files; apply a plan"
                )));
            }
            image_context::Context::serving(rendered, &i.baked_dirs())
        } else {
            image_context::Context::scan(&i.context, &i.dockerfile)
        }
        .map_err(|e| ProviderError::invalid(format!("{address}: {e}")))?;
        let hash = scanned
            .hash(&i.args)
            .map_err(|e| ProviderError::invalid(format!("{address}: {e}")))?;
        if hash != i.content_hash {
            let what = if i.preset.is_some() {
                "the models' version folders".to_string()
            } else {
                i.context.display().to_string()
            };
            return Err(ProviderError::invalid(format!(
                "{address}: the context ({what}) changed since the plan was made; plan again"
            )));
        }
        let tarball = scanned
            .tar_gz()
            .map_err(|e| ProviderError::invalid(format!("{address}: {e}")))?;
        let bucket = std::env::var(BUILD_BUCKET_ENV)
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| format!("{}_cloudbuild", t.project.replace(':', "_")));
        let object = format!(
            "{SOURCE_PREFIX}{}-{}.tar.gz",
            super::slug(address).display(),
            &hash[..16]
        );
        let source = format!("gs://{bucket}/{object}");
        let mut intent = ImageIntent {
            project: t.project.clone(),
            location: t.location.clone(),
            source: source.clone(),
            build_id: None,
        };
        (ctx.note)(serde_json::to_value(&intent).unwrap_or_default())?;
        let c = self.clients().await?;

        // 1. The repository.
        let repo_name = format!(
            "projects/{}/locations/{}/repositories/{}",
            t.project, t.location, t.repository
        );
        (ctx.progress)(format!(
            "checking Artifact Registry repository {}",
            i.repository
        ));
        let what = format!("reading repository {repo_name}");
        let found = retry::retry(&policy, ctx.cancel, Call::Idempotent, || async {
            match c
                .registry
                .get_repository()
                .set_name(&repo_name)
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) => match gax(&what)(e) {
                    ProviderError::NotFound(_) => Ok(false),
                    other => Err(other),
                },
            }
        })
        .await?;
        if !found {
            (ctx.progress)(format!(
                "creating Artifact Registry repository {}",
                i.repository
            ));
            self.create_repository(ctx, &policy, &c, &t).await?;
        }

        // 2. The bucket and the upload.
        c.json
            .ensure_bucket(ctx, &policy, &t.project, &bucket)
            .await?;
        (ctx.progress)(format!(
            "uploading the context ({} files, {:.1} MiB) to {source}",
            scanned.entries.len(),
            tarball.len() as f64 / (1024.0 * 1024.0)
        ));
        let what = format!("uploading {source}");
        let payload = bytes::Bytes::from(tarball);
        let uploaded = retry::retry(&policy, ctx.cancel, Call::Idempotent, || {
            let payload = payload.clone();
            let what = what.clone();
            let storage = &c.storage;
            let bucket = &bucket;
            let object = &object;
            async move {
                storage
                    .write_object(format!("projects/_/buckets/{bucket}"), object, payload)
                    .set_content_type("application/gzip")
                    .send_buffered()
                    .await
                    .map_err(|e| storage_error(&what, e))
            }
        })
        .await?;

        // 3. The build.
        let tag = format!("{}:{}", i.image_name(), &hash[..12]);
        let mut args = vec![
            "build".to_string(),
            "-t".into(),
            tag.clone(),
            "-f".into(),
            i.dockerfile.clone(),
        ];
        for (k, v) in &i.args {
            args.push("--build-arg".into());
            args.push(format!("{k}={v}"));
        }
        args.push(".".into());
        let timeout =
            super::env_duration(BUILD_TIMEOUT_ENV, "30m")?.unwrap_or(Duration::from_secs(1800));
        let build = Build::new()
            .set_source(
                Source::new().set_storage_source(
                    StorageSource::new()
                        .set_bucket(&bucket)
                        .set_object(&object)
                        .set_generation(uploaded.generation),
                ),
            )
            .set_steps([BuildStep::new()
                .set_name(DOCKER_BUILDER)
                .set_id("docker build")
                .set_args(args)])
            .set_images([tag.clone()])
            .set_logs_bucket(format!("gs://{bucket}/{LOG_PREFIX}"))
            .set_tags(["benchstack"])
            .set_timeout(google_cloud_wkt::Duration::clamp(
                timeout.as_secs() as i64,
                0,
            ));
        let parent = format!("projects/{}/locations/{}", t.project, t.location);
        (ctx.progress)(format!("starting the build of {tag}"));
        let what = format!("creating a build in {parent}");
        let op = retry::retry(&policy, ctx.cancel, Call::Once, || async {
            c.build
                .create_build()
                // The regional method (POST /v1/projects/P/locations/L/builds): with a
                // project id too, the client takes the global path instead.
                .set_parent(&parent)
                .set_build(build.clone())
                .send()
                .await
                .map_err(gax(&what))
        })
        .await?;
        let id = op
            .metadata
            .as_ref()
            .and_then(|m| m.to_msg::<BuildOperationMetadata>().ok())
            .and_then(|m| m.build)
            .map(|b| b.id)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                ProviderError::other(format!("{what}: the operation {} names no build", op.name))
            })?;
        intent.build_id = Some(id.clone());
        (ctx.note)(serde_json::to_value(&intent).unwrap_or_default())?;
        let finished = self.follow(ctx, &policy, &c, &t, &id).await?;
        let observed = finished_build(&c, &t, i, &tag, &finished, &source, &hash).await?;
        Ok(Applied {
            observed: serde_json::to_value(observed).unwrap_or_default(),
            run: None,
        })
    }

    async fn create_repository(
        &self,
        ctx: &Context<'_>,
        policy: &RetryPolicy,
        c: &Clients,
        t: &Target,
    ) -> Result<(), ProviderError> {
        use google_cloud_artifactregistry_v1::model::{Repository, repository::Format};
        let parent = format!("projects/{}/locations/{}", t.project, t.location);
        let what = format!("creating repository {} in {parent}", t.repository);
        let created = retry::retry(policy, ctx.cancel, Call::Once, || async {
            c.registry
                .create_repository()
                .set_parent(&parent)
                .set_repository_id(&t.repository)
                .set_repository(
                    Repository::new()
                        .set_format(Format::Docker)
                        .set_description("Images built by benchstack"),
                )
                .send()
                .await
                .map_err(gax(&what))
        })
        .await;
        let mut op = match created {
            Ok(op) => op,
            // Created by someone else meanwhile: as good.
            Err(ProviderError::Conflict(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut wait = self.poll_interval()?;
        while !op.done {
            pause(ctx, wait).await?;
            wait = gcp::backoff(wait, Duration::from_secs(10));
            let what = format!("reading operation {}", op.name);
            let name = op.name.clone();
            op = retry::retry(policy, ctx.cancel, Call::Idempotent, || async {
                c.registry
                    .get_operation()
                    .set_name(&name)
                    .send()
                    .await
                    .map_err(gax(&what))
            })
            .await?;
        }
        if let Some(google_cloud_longrunning::model::operation::Result::Error(s)) = &op.result {
            return Err(ProviderError::new(
                ErrorKind::Other,
                what,
                s.message.clone(),
            ));
        }
        Ok(())
    }

    /// Polls the build until it ends, telling the step that runs and the time spent.
    async fn follow(
        &self,
        ctx: &Context<'_>,
        policy: &RetryPolicy,
        c: &Clients,
        t: &Target,
        id: &str,
    ) -> Result<Build, ProviderError> {
        let name = format!(
            "projects/{}/locations/{}/builds/{id}",
            t.project, t.location
        );
        let started = Instant::now();
        let mut wait = self.poll_interval()?;
        loop {
            let what = format!("reading build {id}");
            let b = retry::retry(policy, ctx.cancel, Call::Idempotent, || async {
                c.build
                    .get_build()
                    .set_name(&name)
                    .send()
                    .await
                    .map_err(gax(&what))
            })
            .await?;
            if is_final(&b.status) {
                return Ok(b);
            }
            let running = b
                .steps
                .iter()
                .enumerate()
                .find(|(_, s)| s.status == Status::Working)
                .map(|(n, s)| format!(", step {}/{} {}", n + 1, b.steps.len(), step_name(s)))
                .unwrap_or_default();
            (ctx.progress)(format!(
                "build {id} {}{running}, {}",
                status_name(&b.status),
                short(started.elapsed())
            ));
            pause(ctx, wait).await?;
            wait = gcp::backoff(wait, Duration::from_secs(10));
        }
    }
}

fn is_final(s: &Status) -> bool {
    matches!(
        s,
        Status::Success
            | Status::Failure
            | Status::InternalError
            | Status::Timeout
            | Status::Cancelled
            | Status::Expired
    )
}

fn status_name(s: &Status) -> String {
    s.name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", s.value()))
}

fn step_name(s: &BuildStep) -> String {
    if s.id.is_empty() {
        s.name.clone()
    } else {
        format!("{} ({})", s.id, s.name)
    }
}

async fn pause(ctx: &Context<'_>, d: Duration) -> Result<(), ProviderError> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if ctx.cancel.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ProviderError::Interrupted);
        }
        tokio::time::sleep((until - Instant::now()).min(Duration::from_millis(100))).await;
    }
    Ok(())
}

fn storage_error(what: &str, e: google_cloud_storage::Error) -> ProviderError {
    let (kind, message, unsent) = gcp::classify(&e);
    let err = ProviderError::new(kind, what, message);
    if unsent { err.unsent_request() } else { err }
}

/// The observed state of a build that ended, or the error of one that failed.
async fn finished_build(
    c: &Clients,
    t: &Target,
    i: &ImageConfig,
    tag: &str,
    b: &Build,
    source: &str,
    hash: &str,
) -> Result<CloudBuildImageObserved, ProviderError> {
    if b.status != Status::Success {
        let failed = b
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| {
                matches!(
                    s.status,
                    Status::Failure | Status::Timeout | Status::InternalError | Status::Cancelled
                )
            })
            .map(|(n, s)| format!("step {} {} {}", n, step_name(s), status_name(&s.status)))
            .unwrap_or_else(|| "no step".to_string());
        let info = b
            .failure_info
            .as_ref()
            .map(|f| f.detail.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| b.status_detail.clone());
        let log = c.json.log_tail(&b.logs_bucket, &b.id).await;
        let mut text = format!(
            "build {} of {} ended {}: {failed} failed: {info}",
            b.id,
            tag,
            status_name(&b.status)
        );
        match log {
            Ok(lines) if !lines.is_empty() => {
                text.push_str("\n  last lines of the build log:\n");
                for l in lines {
                    text.push_str(&format!("    {l}\n"));
                }
            }
            Ok(_) => {}
            Err(e) => text.push_str(&format!("\n  (the build log could not be read: {e})")),
        }
        if !b.log_url.is_empty() {
            text.push_str(&format!("\n  log: {}", b.log_url));
        }
        return Err(
            ProviderError::new(ErrorKind::Other, "", text.trim_end().to_string())
                .with_text(text.trim_end().to_string()),
        );
    }
    let pushed = b
        .results
        .as_ref()
        .and_then(|r| {
            r.images
                .iter()
                .find(|im| im.name == tag)
                .or_else(|| r.images.first())
        })
        .map(|im| im.digest.clone())
        .filter(|d| d.starts_with("sha256:"))
        .ok_or_else(|| {
            ProviderError::other(format!(
                "build {} succeeded but reports no pushed digest for {tag}",
                b.id
            ))
        })?;
    Ok(CloudBuildImageObserved {
        project: t.project.clone(),
        location: t.location.clone(),
        build_id: b.id.clone(),
        log_url: b.log_url.clone(),
        source: source.to_string(),
        reference: format!("{}@{pushed}", i.image_name()),
        digest: pushed,
        content_hash: hash.to_string(),
    })
}

struct Clients {
    build: CloudBuild,
    registry: ArtifactRegistry,
    storage: Storage,
    json: JsonStorage,
}

/// The Cloud Storage JSON API calls google-cloud-storage makes only over gRPC: buckets
/// (https://cloud.google.com/storage/docs/json_api/v1/buckets/insert, …/get) and reading the
/// build log as media (https://cloud.google.com/storage/docs/json_api/v1/objects/get).
struct JsonStorage {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl JsonStorage {
    fn req(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn ensure_bucket(
        &self,
        ctx: &Context<'_>,
        policy: &RetryPolicy,
        project: &str,
        bucket: &str,
    ) -> Result<(), ProviderError> {
        let what = format!("reading bucket gs://{bucket}");
        let url = format!("{}/storage/v1/b/{}", self.base, enc(bucket));
        let status = retry::retry(policy, ctx.cancel, Call::Idempotent, || async {
            let r = self
                .req(self.http.get(&url))
                .send()
                .await
                .map_err(|e| net(&what, e))?;
            let s = r.status().as_u16();
            match s {
                200 | 404 => Ok(s),
                _ => Err(api(&what, s, r.text().await.unwrap_or_default())),
            }
        })
        .await?;
        if status == 200 {
            return Ok(());
        }
        (ctx.progress)(format!("creating bucket gs://{bucket}"));
        let what = format!("creating bucket gs://{bucket}");
        let url = format!("{}/storage/v1/b?project={}", self.base, enc(project));
        let body = serde_json::json!({
            "name": bucket,
            "lifecycle": {"rule": [{
                "action": {"type": "Delete"},
                "condition": {"age": SOURCE_AGE_DAYS, "matchesPrefix": [SOURCE_PREFIX]},
            }]},
        });
        retry::retry(policy, ctx.cancel, Call::Once, || async {
            let r = self
                .req(
                    self.http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.to_string()),
                )
                .send()
                .await
                .map_err(|e| net(&what, e))?;
            match r.status().as_u16() {
                200 | 409 => Ok(()),
                s => Err(api(&what, s, r.text().await.unwrap_or_default())),
            }
        })
        .await
    }

    /// The last lines of `LOGS_BUCKET/log-ID.txt` (where Cloud Build writes a build's log when
    /// `logsBucket` is set: https://cloud.google.com/build/docs/securing-builds/store-manage-build-logs).
    async fn log_tail(&self, logs_bucket: &str, id: &str) -> Result<Vec<String>, ProviderError> {
        let path = logs_bucket.trim_start_matches("gs://");
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let object = if prefix.is_empty() {
            format!("log-{id}.txt")
        } else {
            format!("{}/log-{id}.txt", prefix.trim_end_matches('/'))
        };
        let what = format!("reading gs://{bucket}/{object}");
        let url = format!(
            "{}/storage/v1/b/{}/o/{}?alt=media",
            self.base,
            enc(bucket),
            enc(&object)
        );
        let r = self
            .req(self.http.get(&url))
            .send()
            .await
            .map_err(|e| net(&what, e))?;
        let s = r.status().as_u16();
        if s != 200 {
            return Err(api(&what, s, r.text().await.unwrap_or_default()));
        }
        let text = r.text().await.map_err(|e| net(&what, e))?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        Ok(lines[from..].to_vec())
    }
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn net(what: &str, e: reqwest::Error) -> ProviderError {
    let err = ProviderError::new(ErrorKind::Unavailable, what, e.to_string());
    if e.is_connect() {
        err.unsent_request()
    } else {
        err
    }
}

fn api(what: &str, status: u16, body: String) -> ProviderError {
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.chars().take(300).collect());
    ProviderError::new(gcp::http_kind(status), what, format!("{status}: {message}"))
}

impl Provider for CloudBuildProvider {
    fn name(&self) -> &'static str {
        "cloudbuild"
    }

    /// A pushed digest does not change: what was recorded stands.
    fn read(&self, _ctx: &Context, prior: &ResourceState) -> Result<Observation, ProviderError> {
        Ok(Observation::Present(prior.observed.clone()))
    }

    fn create(
        &self,
        ctx: &Context,
        address: &Address,
        config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        match config {
            ResourceConfig::Image(i) => {
                self.block_on(self.build_image(ctx, address, i, &inputs.rendered))
            }
            _ => Err(ProviderError::invalid(
                "the cloudbuild provider builds images only",
            )),
        }
    }

    fn update(
        &self,
        ctx: &Context,
        prior: &ResourceState,
        config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        self.create(ctx, &prior.address, config, inputs)
    }

    /// Pushed images stay in the repository (see the module documentation).
    fn delete(&self, _ctx: &Context, _prior: &ResourceState) -> Result<(), ProviderError> {
        Ok(())
    }

    /// A build an interrupted apply started is looked up: its digest is adopted when it
    /// succeeded; otherwise nothing is (the next apply builds again).
    fn recover(
        &self,
        _ctx: &Context,
        intent: &Intent,
        _prior: Option<&ResourceState>,
        _clean_up: bool,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        let Ok(noted) = serde_json::from_value::<ImageIntent>(intent.data.clone()) else {
            return Ok(None);
        };
        let (Some(id), Some(ResourceConfig::Image(i))) = (&noted.build_id, &intent.config) else {
            return Ok(None);
        };
        self.block_on(async {
            let c = self.clients().await?;
            let t = target(i)?;
            let name = format!(
                "projects/{}/locations/{}/builds/{id}",
                t.project, t.location
            );
            let b = c
                .build
                .get_build()
                .set_name(&name)
                .send()
                .await
                .map_err(gax("reading the interrupted build"))?;
            if b.status != Status::Success {
                return Ok(None);
            }
            let tag = format!(
                "{}:{}",
                i.image_name(),
                &i.content_hash[..12.min(i.content_hash.len())]
            );
            Ok(
                finished_build(&c, &t, i, &tag, &b, &noted.source, &i.content_hash)
                    .await
                    .ok()
                    .map(|o| serde_json::to_value(o).unwrap_or_default()),
            )
        })
    }
}
