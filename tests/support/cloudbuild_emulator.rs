//! A loopback emulator of the Cloud Build v1 and Artifact Registry v1 REST APIs (the subset
//! benchstack uses), for the real google-cloud-build-v1 and google-cloud-artifactregistry-v1
//! clients. Sources are read from, and build logs written to, a Cloud Storage emulator
//! (fake-gcs-server, `support/fake_gcs.rs`) through the JSON API, as Cloud Build does with GCS.
//! Include with `#[path = "support/cloudbuild_emulator.rs"] mod cloudbuild_emulator;`.
//!
//! Routes (the query string is read only for `$alt` and `repositoryId`):
//! - `POST /v1/projects/P/locations/L/builds`  create a build → Operation
//!   (https://cloud.google.com/build/docs/api/reference/rest/v1/projects.locations.builds/create)
//! - `GET  /v1/projects/P/locations/L/builds/ID` → Build
//!   (https://cloud.google.com/build/docs/api/reference/rest/v1/projects.locations.builds/get)
//! - `GET  /v1/projects/P/locations/L/operations/OP` → Operation, `done` with the Build as
//!   `response` once the build ended
//!   (https://cloud.google.com/build/docs/api/reference/rest/v1/operations/get)
//! - `GET  /v1/projects/P/locations/L/repositories/R` → Repository or 404
//!   (https://cloud.google.com/artifact-registry/docs/reference/rest/v1/projects.locations.repositories/get)
//! - `POST /v1/projects/P/locations/L/repositories?repositoryId=R` → Operation; 409
//!   ALREADY_EXISTS when it exists
//!   (https://cloud.google.com/artifact-registry/docs/reference/rest/v1/projects.locations.repositories/create)
//!
//! What Cloud Build does that the emulator models:
//! - a build is QUEUED, then WORKING for `polls_working` reads, then ends; its steps go
//!   QUEUED → WORKING → SUCCESS/FAILURE (Build.Status, BuildStep.status);
//! - the source is fetched from `source.storageSource` (bucket, object, generation): a
//!   missing object fails the build with `failureInfo.type` FETCH_SOURCE_FAILED;
//! - the `docker build` step reads `-f DOCKERFILE` from the uploaded tar.gz; a Dockerfile that
//!   is not in it, or a `RUN` line that fails (`RUN false`, `RUN exit N`), fails the step:
//!   status FAILURE, `failureInfo` {type USER_BUILD_STEP, detail "Build step failure: build
//!   step 0 … failed: step exited with non-zero status: 1"}
//!   (https://cloud.google.com/build/docs/api/reference/rest/v1/projects.builds#failureinfo);
//! - `images` are pushed after the steps: to an Artifact Registry repository that does not
//!   exist the push fails (PUSH_FAILED, "name unknown: Repository … not found"); otherwise
//!   `results.images[]` holds `{name, digest}`, the digest a function of the image's content;
//! - the log is written to `logsBucket` as `log-ID.txt`
//!   (https://cloud.google.com/build/docs/securing-builds/store-manage-build-logs), and
//!   `logUrl` points at the console;
//! - with `$alt=json;enum-encoding=int` (what the Rust clients send) enums are numbers,
//!   otherwise their names (https://google.aip.dev/127 transcoding, System Parameters);
//! - errors are `{"error":{"code","message","status"}}`.
// An error answer is a whole HTTP response, returned as the `Err` of a route.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use crate::http_emulator::{self, Reply, Request, Server};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A failed build: the failing step (None: no step failed), its log lines, the failure type
/// and its detail.
type Failed = (Option<usize>, Vec<String>, &'static str, String);

struct BuildRun {
    project: String,
    location: String,
    op: String,
    build: Value,
    /// Reads left before the build ends.
    polls_left: u32,
    /// How it ends: the pushed (image, digest) pairs, or how it failed.
    outcome: Result<Vec<(String, String)>, Failed>,
    log: Vec<String>,
    ended: bool,
}

#[derive(Default)]
struct State {
    storage: String,
    polls_working: u32,
    next: u64,
    builds: BTreeMap<String, BuildRun>,
    /// `projects/P/locations/L/repositories/R` → Repository JSON.
    repositories: BTreeMap<String, Value>,
    requests: Vec<(String, String)>,
}

pub struct CloudBuildEmulator {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl CloudBuildEmulator {
    /// `storage`: the Cloud Storage emulator's base URL (`http://127.0.0.1:PORT`).
    pub fn start(storage: &str) -> CloudBuildEmulator {
        let state = Arc::new(Mutex::new(State {
            storage: storage.trim_end_matches('/').to_string(),
            polls_working: 2,
            ..State::default()
        }));
        let shared = state.clone();
        // Async: a build reads its source from, and writes its log to, Cloud Storage.
        let server = Server::start_async(move |req| {
            let state = shared.clone();
            async move { handle(&state, req).await }
        });
        CloudBuildEmulator { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `METHOD path` of every request, in order.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self, method: &str, fragment: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == method && p.contains(fragment))
            .count()
    }

    /// The repositories that exist (`projects/P/locations/L/repositories/R`).
    pub fn repositories(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .repositories
            .keys()
            .cloned()
            .collect()
    }

    /// The builds created, as the API shows them.
    pub fn builds(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .builds
            .values()
            .map(|b| b.build.clone())
            .collect()
    }
}

fn reply(status: StatusCode, body: Value) -> Reply {
    http_emulator::json(status, &body)
}

fn error(code: u16, status: &str, message: &str) -> Reply {
    reply(
        StatusCode::from_u16(code).unwrap(),
        json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

/// Build.Status and BuildStep.status: name → number (google.devtools.cloudbuild.v1).
fn status_number(name: &str) -> i64 {
    match name {
        "QUEUED" => 1,
        "WORKING" => 2,
        "SUCCESS" => 3,
        "FAILURE" => 4,
        "INTERNAL_ERROR" => 5,
        "TIMEOUT" => 6,
        "CANCELLED" => 7,
        "EXPIRED" => 9,
        "PENDING" => 10,
        _ => 0,
    }
}

/// FailureInfo.FailureType: name → number.
fn failure_number(name: &str) -> i64 {
    match name {
        "PUSH_FAILED" => 1,
        "PUSH_IMAGE_NOT_FOUND" => 2,
        "PUSH_NOT_AUTHORIZED" => 3,
        "LOGGING_FAILURE" => 4,
        "USER_BUILD_STEP" => 5,
        "FETCH_SOURCE_FAILED" => 6,
        _ => 0,
    }
}

/// Enums as numbers, where the client asked for them.
fn encode_enums(mut v: Value, ints: bool) -> Value {
    if !ints {
        return v;
    }
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match (k.as_str(), &x) {
                        ("status", Value::String(s)) => *x = json!(status_number(s)),
                        ("type", Value::String(s)) if !s.contains('/') => {
                            *x = json!(failure_number(s))
                        }
                        ("format", Value::String(s)) if s == "DOCKER" => *x = json!(1),
                        _ => walk(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

async fn handle(state: &Arc<Mutex<State>>, req: Request) -> Reply {
    let method = req.method.clone();
    let path = req.path().to_string();
    let query = req.query().to_string();
    let ints = percent_decode(&query).contains("enum-encoding=int");
    state
        .lock()
        .unwrap()
        .requests
        .push((method.to_string(), path.clone()));
    let body = &req.body[..];
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // v1 projects P locations L KIND [ID]
    if parts.len() < 6 || parts[0] != "v1" || parts[1] != "projects" || parts[3] != "locations" {
        return error(404, "NOT_FOUND", &format!("no route for {path}"));
    }
    let (project, location) = (parts[2].to_string(), parts[4].to_string());
    let r = match (&method, parts[5], parts.get(6)) {
        (&Method::POST, "builds", None) => create_build(state, &project, &location, body).await,
        (&Method::GET, "builds", Some(id)) => get_build(state, id).await,
        (&Method::GET, "operations", Some(op)) => get_operation(state, op).await,
        (&Method::GET, "repositories", Some(r)) => {
            let key = format!("projects/{project}/locations/{location}/repositories/{r}");
            match state.lock().unwrap().repositories.get(&key) {
                Some(repo) => Ok(repo.clone()),
                None => Err(error(404, "NOT_FOUND", "Requested entity was not found.")),
            }
        }
        (&Method::POST, "repositories", None) => {
            create_repository(state, &project, &location, &query, body)
        }
        _ => Err(error(
            404,
            "NOT_FOUND",
            &format!("no route for {method} {path}"),
        )),
    };
    match r {
        Ok(v) => reply(StatusCode::OK, encode_enums(v, ints)),
        Err(resp) => resp,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn create_repository(
    state: &Arc<Mutex<State>>,
    project: &str,
    location: &str,
    query: &str,
    body: &[u8],
) -> Result<Value, Reply> {
    let Some(id) = query_param(query, "repositoryId").filter(|s| !s.is_empty()) else {
        return Err(error(400, "INVALID_ARGUMENT", "repository_id is required"));
    };
    let repo: Value = serde_json::from_slice(body).map_err(|e| {
        error(
            400,
            "INVALID_ARGUMENT",
            &format!("Invalid JSON payload: {e}"),
        )
    })?;
    // Format DOCKER is 1 in the enum.
    let docker = repo["format"] == json!("DOCKER") || repo["format"] == json!(1);
    if !docker {
        return Err(error(
            400,
            "INVALID_ARGUMENT",
            "format: only DOCKER repositories in this emulator",
        ));
    }
    let name = format!("projects/{project}/locations/{location}/repositories/{id}");
    let mut st = state.lock().unwrap();
    if st.repositories.contains_key(&name) {
        return Err(error(
            409,
            "ALREADY_EXISTS",
            &format!("the repository already exists: {name}"),
        ));
    }
    let created = json!({
        "name": name,
        "format": "DOCKER",
        "description": repo["description"],
        "createTime": "2026-01-01T00:00:00Z",
    });
    st.repositories.insert(name, created.clone());
    st.next += 1;
    let mut response = created;
    response["@type"] = json!("type.googleapis.com/google.devtools.artifactregistry.v1.Repository");
    // Repository creation is a long-running operation, reported done.
    Ok(json!({
        "name": format!("projects/{project}/locations/{location}/operations/repo-{}", st.next),
        "metadata": {"@type": "type.googleapis.com/google.devtools.artifactregistry.v1.OperationMetadata"},
        "done": true,
        "response": response,
    }))
}

/// Reads an object from the storage emulator (`alt=media`); None when it is not there.
async fn read_object(base: &str, bucket: &str, object: &str) -> Option<Vec<u8>> {
    let url = format!(
        "{base}/storage/v1/b/{bucket}/o/{}?alt=media",
        object.replace('/', "%2F")
    );
    let r = reqwest::get(&url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.bytes().await.ok().map(|b| b.to_vec())
}

async fn write_object(base: &str, bucket: &str, object: &str, data: String) {
    let url = format!(
        "{base}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
        object.replace('/', "%2F")
    );
    let _ = reqwest::Client::new()
        .post(url)
        .header("content-type", "text/plain")
        .body(data)
        .send()
        .await;
}

/// What the `docker build` step does with the context: the Dockerfile's lines, or why it
/// cannot run. Returns the log and a failure.
fn docker_build(tarball: &[u8], args: &[String]) -> (Vec<String>, Option<String>, String) {
    let dockerfile = args
        .windows(2)
        .find(|w| w[0] == "-f")
        .map(|w| w[1].clone())
        .unwrap_or_else(|| "Dockerfile".into());
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let Ok(entries) = ar.entries() else {
        return (
            vec![],
            Some("the source is not a gzipped tar archive".into()),
            String::new(),
        );
    };
    for e in entries {
        let Ok(mut e) = e else {
            return (
                vec![],
                Some("the source is not a gzipped tar archive".into()),
                String::new(),
            );
        };
        let p = e
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut data = Vec::new();
        let _ = e.read_to_end(&mut data);
        files.insert(p, data);
    }
    let mut h = Sha256::new();
    for (p, d) in &files {
        h.update(p.as_bytes());
        h.update([0]);
        h.update(d);
    }
    for a in args {
        h.update(a.as_bytes());
    }
    let digest = format!("sha256:{:x}", h.finalize());
    let mut log = vec![format!(
        "Sending build context to Docker daemon  {} files",
        files.len()
    )];
    let Some(text) = files.get(&dockerfile) else {
        log.push(format!(
            "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat /workspace/{dockerfile}: no such file or directory"
        ));
        return (log, Some("no Dockerfile".into()), digest);
    };
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for (n, l) in lines.iter().enumerate() {
        log.push(format!("Step {}/{} : {l}", n + 1, lines.len()));
        let cmd = l.strip_prefix("RUN ").map(str::trim);
        if let Some(c) = cmd
            && (c == "false" || c.starts_with("exit "))
        {
            let code = c.strip_prefix("exit ").unwrap_or("1").trim();
            log.push(format!(
                "The command '/bin/sh -c {c}' returned a non-zero code: {code}"
            ));
            return (log, Some("step failed".into()), digest);
        }
        log.push(" ---> Running".into());
    }
    log.push(format!("Successfully built {}", &digest[7..19]));
    (log, None, digest)
}

async fn create_build(
    state: &Arc<Mutex<State>>,
    project: &str,
    location: &str,
    body: &[u8],
) -> Result<Value, Reply> {
    let mut build: Value = serde_json::from_slice(body).map_err(|e| {
        error(
            400,
            "INVALID_ARGUMENT",
            &format!("Invalid JSON payload: {e}"),
        )
    })?;
    let steps = build["steps"].as_array().cloned().unwrap_or_default();
    if steps.is_empty() {
        return Err(error(
            400,
            "INVALID_ARGUMENT",
            "invalid build: no build steps",
        ));
    }
    let storage = state.lock().unwrap().storage.clone();
    let src = &build["source"]["storageSource"];
    let (bucket, object) = (
        src["bucket"].as_str().unwrap_or_default().to_string(),
        src["object"].as_str().unwrap_or_default().to_string(),
    );
    let images: Vec<String> = build["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let outcome = match read_object(&storage, &bucket, &object).await {
        None => Err((
            None,
            vec![
                format!("Fetching storage object: gs://{bucket}/{object}"),
                "AccessDenied or NotFound".into(),
            ],
            "FETCH_SOURCE_FAILED",
            format!("failed to fetch source: gs://{bucket}/{object}: object not found"),
        )),
        Some(tarball) => {
            let args: Vec<String> = steps[0]["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let (log, failed, digest) = docker_build(&tarball, &args);
            let step_name = steps[0]["name"].as_str().unwrap_or_default().to_string();
            if failed.is_some() {
                Err((
                    Some(0),
                    log,
                    "USER_BUILD_STEP",
                    format!(
                        "Build step failure: build step 0 \"{step_name}\" failed: step exited with non-zero status: 1"
                    ),
                ))
            } else {
                // The push: to Artifact Registry, whose repository must exist.
                let st = state.lock().unwrap();
                let mut pushed = Vec::new();
                let mut push_error = None;
                for im in &images {
                    let path: Vec<&str> = im
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .split('/')
                        .collect();
                    let repo_ok = match (path.first(), path.get(1), path.get(2)) {
                        (Some(host), Some(p), Some(r)) if host.ends_with("-docker.pkg.dev") => {
                            let loc = host.trim_end_matches("-docker.pkg.dev");
                            st.repositories.contains_key(&format!(
                                "projects/{p}/locations/{loc}/repositories/{r}"
                            ))
                        }
                        _ => false,
                    };
                    if !repo_ok {
                        push_error = Some(format!(
                            "failed to push {im}: name unknown: Repository \"{}\" not found",
                            path.get(2).unwrap_or(&"")
                        ));
                        break;
                    }
                    pushed.push((im.clone(), digest.clone()));
                }
                drop(st);
                match push_error {
                    Some(detail) => {
                        let mut log = log;
                        log.push(detail.clone());
                        Err((None, log, "PUSH_FAILED", detail))
                    }
                    None => {
                        let mut log = log;
                        for (im, d) in &pushed {
                            log.push(format!("{im}: digest: {d} size: 1234"));
                        }
                        log.push("DONE".into());
                        Ok(pushed)
                    }
                }
            }
        }
    };
    let mut st = state.lock().unwrap();
    st.next += 1;
    let id = format!("b{:04}-{:08x}", st.next, st.next * 2654435761 % 0xffff_ffff);
    let op = format!("projects/{project}/locations/{location}/operations/op-{id}");
    build["id"] = json!(id);
    build["name"] = json!(format!(
        "projects/{project}/locations/{location}/builds/{id}"
    ));
    build["projectId"] = json!(project);
    build["status"] = json!("QUEUED");
    build["createTime"] = json!("2026-01-01T00:00:00Z");
    build["logUrl"] = json!(format!(
        "https://console.cloud.google.com/cloud-build/builds;region={location}/{id}?project=123456789"
    ));
    if let Some(s) = build["steps"].as_array_mut() {
        for step in s {
            step["status"] = json!("QUEUED");
        }
    }
    let log = match &outcome {
        Ok(_) => vec![],
        Err((_, log, _, _)) => log.clone(),
    };
    let run = BuildRun {
        project: project.into(),
        location: location.into(),
        op: op.clone(),
        build: build.clone(),
        polls_left: st.polls_working,
        outcome,
        log,
        ended: false,
    };
    st.builds.insert(id, run);
    Ok(json!({
        "name": op,
        "metadata": {
            "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata",
            "build": build,
        },
    }))
}

/// Advances a build by one read; at its end writes the log to the logs bucket.
async fn advance(state: &Arc<Mutex<State>>, id: &str) -> Option<Value> {
    let (write_log, build) = {
        let mut st = state.lock().unwrap();
        let storage = st.storage.clone();
        let b = st.builds.get_mut(id)?;
        if b.ended {
            return Some(b.build.clone());
        }
        if b.polls_left > 0 {
            b.polls_left -= 1;
            b.build["status"] = json!("WORKING");
            b.build["startTime"] = json!("2026-01-01T00:00:01Z");
            if let Some(s) = b.build["steps"].as_array_mut()
                && let Some(first) = s.first_mut()
            {
                first["status"] = json!("WORKING");
            }
            return Some(b.build.clone());
        }
        b.ended = true;
        b.build["finishTime"] = json!("2026-01-01T00:01:00Z");
        let mut log: Vec<String> = vec![format!("starting build \"{id}\""), "FETCHSOURCE".into()];
        match &b.outcome {
            Ok(pushed) => {
                b.build["status"] = json!("SUCCESS");
                if let Some(s) = b.build["steps"].as_array_mut() {
                    for step in s {
                        step["status"] = json!("SUCCESS");
                    }
                }
                b.build["results"] = json!({
                    "images": pushed.iter().map(|(name, digest)| json!({"name": name, "digest": digest})).collect::<Vec<_>>(),
                    "buildStepImages": ["sha256:0000000000000000000000000000000000000000000000000000000000000001"],
                });
                log.push("BUILD".into());
                log.extend(b.log.clone());
                log.push("PUSH".into());
            }
            Err((step, lines, kind, detail)) => {
                b.build["status"] = json!("FAILURE");
                b.build["statusDetail"] = json!(detail);
                b.build["failureInfo"] = json!({"type": kind, "detail": detail});
                if let (Some(i), Some(s)) = (step, b.build["steps"].as_array_mut())
                    && let Some(st) = s.get_mut(*i)
                {
                    st["status"] = json!("FAILURE");
                }
                log.push("BUILD".into());
                log.extend(lines.clone());
                log.push("ERROR".into());
                log.push(format!("ERROR: {detail}"));
            }
        }
        let logs = b.build["logsBucket"].as_str().map(str::to_string);
        let write = logs.map(|l| {
            let path = l.trim_start_matches("gs://").to_string();
            let (bucket, prefix) = path
                .split_once('/')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or((path.clone(), String::new()));
            let object = if prefix.is_empty() {
                format!("log-{id}.txt")
            } else {
                format!("{}/log-{id}.txt", prefix.trim_end_matches('/'))
            };
            (storage, bucket, object, log.join("\n") + "\n")
        });
        (write, b.build.clone())
    };
    if let Some((storage, bucket, object, text)) = write_log {
        write_object(&storage, &bucket, &object, text).await;
    }
    Some(build)
}

async fn get_build(state: &Arc<Mutex<State>>, id: &str) -> Result<Value, Reply> {
    advance(state, id)
        .await
        .ok_or_else(|| error(404, "NOT_FOUND", &format!("build {id} not found")))
}

async fn get_operation(state: &Arc<Mutex<State>>, op: &str) -> Result<Value, Reply> {
    let id = op.strip_prefix("op-").unwrap_or(op).to_string();
    let Some(b) = advance(state, &id).await else {
        return Err(error(
            404,
            "NOT_FOUND",
            &format!("operation {op} not found"),
        ));
    };
    let st = state.lock().unwrap();
    let run = &st.builds[&id];
    let mut v = json!({
        "name": run.op,
        "metadata": {
            "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata",
            "build": b,
        },
    });
    if run.ended {
        v["done"] = json!(true);
        let mut response = b.clone();
        response["@type"] = json!("type.googleapis.com/google.devtools.cloudbuild.v1.Build");
        v["response"] = response;
    }
    Ok(v)
}
