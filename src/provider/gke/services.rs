//! `enable_apis = true`: before apply creates anything, the APIs the stack needs in the
//! projects of such clusters (`preflight::needed_apis`: Kubernetes Engine and Compute
//! Engine for the clusters, Artifact Registry and Cloud Build for `image` blocks and images
//! in Artifact Registry) are asked for with Service Usage `services.get`, and the disabled
//! ones are enabled with one `services.batchEnable` per project (at most 20 services a call,
//! https://cloud.google.com/service-usage/docs/reference/rest/v1/services/batchEnable),
//! whose long-running operation is polled with `operations.get` until it is done: a service
//! is usable only once its operation ends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::preflight::{self, Request, enabling_projects, needed_apis};
use crate::provider::gcp::Apis;

/// How long enabling may take before apply gives up (Google: "usually a few seconds, some
/// services can take several minutes").
const ENABLE_TIMEOUT: Duration = Duration::from_secs(600);

/// What was enabled, by project (only APIs that were off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enabled {
    pub by_project: BTreeMap<String, Vec<String>>,
}

/// Why the APIs could not be enabled: apply stops before creating anything.
#[derive(Debug, thiserror::Error)]
#[error("enabling APIs in project {project} (enable_apis = true on {cluster}): {message}")]
pub struct EnableError {
    pub project: String,
    pub cluster: String,
    pub message: String,
}

/// Enables the disabled APIs the stack needs in every project with an `enable_apis` cluster;
/// `progress` hears what is being done. Nothing is asked when no cluster sets it, or when the APIs
/// are emulated and Service Usage is not (as the preflight).
pub fn enable(
    request: &Request,
    apis: &Apis,
    poll: Duration,
    progress: &dyn Fn(String),
) -> Result<Enabled, EnableError> {
    let projects = enabling_projects(request);
    if projects.is_empty() {
        return Ok(Enabled::default());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EnableError {
            project: projects.keys().next().cloned().unwrap_or_default(),
            cluster: projects
                .values()
                .next()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            message: format!("cannot start the client runtime: {e}"),
        })?;
    rt.block_on(enable_async(request, apis, poll, progress))
}

async fn enable_async(
    request: &Request,
    apis: &Apis,
    poll: Duration,
    progress: &dyn Fn(String),
) -> Result<Enabled, EnableError> {
    let projects = enabling_projects(request);
    let mut wanted: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for (project, api) in needed_apis(request).into_keys() {
        if projects.contains_key(&project) {
            wanted.entry(project).or_default().insert(api);
        }
    }
    let mut out = Enabled::default();
    let client = match preflight::service_usage(apis).await {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(out),
        Err(message) => {
            let (project, cluster) = projects
                .iter()
                .next()
                .map(|(p, c)| (p.clone(), c.to_string()))
                .unwrap_or_default();
            return Err(EnableError {
                project,
                cluster,
                message,
            });
        }
    };
    for (project, apis) in wanted {
        let cluster = projects[&project].to_string();
        let fail = |message: String| EnableError {
            project: project.clone(),
            cluster: cluster.clone(),
            message,
        };
        let mut off = Vec::new();
        for api in apis {
            match preflight::service_state(&client, &project, api).await {
                Ok(true) => {}
                Ok(false) => off.push(api.to_string()),
                Err(e) => return Err(fail(format!("reading the state of {api}: {}", e.text))),
            }
        }
        if off.is_empty() {
            continue;
        }
        progress(format!("enabling {} in project {project}", off.join(", ")));
        let started = Instant::now();
        let call = client
            .batch_enable_services()
            .set_parent(format!("projects/{project}"))
            .set_service_ids(off.clone())
            .send();
        let mut op = preflight::timed(call).await.map_err(|e| {
            fail(format!(
                "{} (enabling needs serviceusage.services.enable, in roles/serviceusage.serviceUsageAdmin; or run `gcloud services enable {} --project {project}`)",
                e.text,
                off.join(" ")
            ))
        })?;
        let mut wait = poll;
        while !op.done {
            if started.elapsed() > ENABLE_TIMEOUT {
                return Err(fail(format!(
                    "operation {} not done after {}s",
                    op.name,
                    ENABLE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            let call = client.get_operation().set_name(op.name.clone()).send();
            op = preflight::timed(call)
                .await
                .map_err(|e| fail(format!("reading operation {}: {}", op.name, e.text)))?;
        }
        if let Some(google_cloud_longrunning::model::operation::Result::Error(s)) = &op.result {
            return Err(fail(format!("operation {} failed: {}", op.name, s.message)));
        }
        progress(format!(
            "enabled {} in project {project} ({:.0}s)",
            off.join(", "),
            started.elapsed().as_secs_f64()
        ));
        out.by_project.insert(project, off);
    }
    Ok(out)
}
