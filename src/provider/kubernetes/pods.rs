//! What the pods say while a wait goes on. A Deployment or Job only reports counts; why its
//! pods do not start lives on the pods: a container waiting with a reason that will not clear
//! by itself (a missing or unreadable image, a crash loop, a broken container config), or the
//! scheduler's `PodScheduled=False, reason Unschedulable` verdict. Waits check the pods on
//! every poll and stop with the pod, the reason and the message, instead of running into
//! their timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::manifest::k8s::NAMESPACE;
use crate::provider::ProviderError;

/// Container waiting reasons that do not clear without a change by the user
/// (https://kubernetes.io/docs/concepts/containers/images/#imagepullbackoff,
/// https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-state-waiting).
pub const TERMINAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CrashLoopBackOff",
];

/// A pod that will not become ready on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    pub pod: String,
    pub reason: String,
    pub message: String,
}

fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or("(unnamed pod)")
}

/// The first stuck pod (by name), if any. An Unschedulable pod is not stuck while another pod
/// is terminating: its node room comes back when that one is gone (a rolling update with
/// `maxUnavailable` deletes before it creates).
pub fn stuck(pods: &[Pod]) -> Option<Stuck> {
    stuck_among(pods, pods)
}

/// `stuck` for `pods`, a subset of `all` (the applied template's pods of a Deployment whose
/// old pods may be terminating: their room comes back too).
pub fn stuck_among(pods: &[Pod], all: &[Pod]) -> Option<Stuck> {
    let terminating = all.iter().any(|p| p.metadata.deletion_timestamp.is_some());
    let mut sorted: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    sorted.sort_by_key(|p| name(p).to_string());
    for p in sorted {
        let Some(status) = p.status.as_ref() else {
            continue;
        };
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for c in containers {
            let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let Some(reason) = w.reason.as_deref().filter(|r| TERMINAL_WAITING.contains(r)) else {
                continue;
            };
            let mut message = w.message.clone().unwrap_or_default();
            if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                message.push_str(&format!(
                    "{}container {} last exited with code {}{}",
                    if message.is_empty() { "" } else { "; " },
                    c.name,
                    t.exit_code,
                    t.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            }
            return Some(Stuck {
                pod: name(p).to_string(),
                reason: reason.to_string(),
                message,
            });
        }
        if terminating {
            continue;
        }
        let unschedulable = status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        if let Some(c) = unschedulable {
            return Some(Stuck {
                pod: name(p).to_string(),
                reason: "Unschedulable".to_string(),
                message: c.message.clone().unwrap_or_default(),
            });
        }
    }
    None
}

/// How long a pod may stay Unschedulable before a wait gives up on it (humantime, default
/// 15s). The scheduler retries a pod when another goes, with a back-off of up to 10 s, and
/// the condition a poll reads can predate the room that just came free.
pub const UNSCHEDULABLE_GRACE_ENV: &str = "BENCHSTACK_UNSCHEDULABLE_GRACE";
const DEFAULT_UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(15);

/// Follows the stuck pods across polls: a terminal waiting reason is reported at once, an
/// Unschedulable pod once it has been so for the grace period.
pub struct Watch {
    grace: Duration,
    unschedulable_since: Mutex<HashMap<String, Instant>>,
}

impl Watch {
    pub fn from_env() -> Result<Watch, ProviderError> {
        Ok(Watch {
            grace: crate::provider::env_duration(UNSCHEDULABLE_GRACE_ENV, "15s or 1m")?
                .unwrap_or(DEFAULT_UNSCHEDULABLE_GRACE),
            unschedulable_since: Mutex::new(HashMap::new()),
        })
    }

    /// What to fail on now, if anything (see `stuck_among`).
    pub fn verdict(&self, pods: &[Pod], all: &[Pod]) -> Option<Stuck> {
        let found = stuck_among(pods, all);
        let Ok(mut since) = self.unschedulable_since.lock() else {
            return found;
        };
        match found {
            Some(s) if s.reason == "Unschedulable" => {
                let first = *since.entry(s.pod.clone()).or_insert_with(Instant::now);
                since.retain(|pod, _| pod == &s.pod);
                (first.elapsed() >= self.grace).then_some(s)
            }
            other => {
                since.clear();
                other
            }
        }
    }
}

/// The lines that say where to look further: how to reach the cluster with kubectl, and the
/// pod's events.
pub fn look_further(get_credentials: Option<&str>, pod: &str) -> String {
    let mut lines = String::from("\n  look further:");
    if let Some(g) = get_credentials {
        lines.push_str(&format!("\n    {g}"));
    }
    lines.push_str(&format!(
        "\n    kubectl describe pod {pod} --namespace {NAMESPACE}"
    ));
    lines
}

/// The error for a wait that found a stuck pod.
pub fn stuck_error(what: &str, s: &Stuck, get_credentials: Option<&str>) -> ProviderError {
    let hint = match s.reason.as_str() {
        "ErrImagePull" | "ImagePullBackOff" => {
            "\n  the image does not exist or the nodes may not read it: check the name, that it \
             was pushed, and that the node pool has the devstorage.read_only (or \
             cloud-platform) scope and its service account may read the repository"
        }
        "InvalidImageName" => "\n  the image name is not a valid reference",
        "Unschedulable" => {
            "\n  no node has room for the pod's requests: lower `cpu`/`memory` or `replicas`, \
             or give the cluster more or larger nodes"
        }
        "CrashLoopBackOff" => "\n  the container keeps exiting: its log says why",
        _ => "",
    };
    ProviderError::other(format!(
        "{what}: pod {NAMESPACE}/{} is {}: {}{hint}{}",
        s.pod,
        s.reason,
        if s.message.is_empty() {
            "(no message)"
        } else {
            s.message.as_str()
        },
        look_further(get_credentials, &s.pod)
    ))
}

/// One line per pod: phase and, for one that is not running, why (waiting reason or the
/// scheduler's message); for timeouts that found nothing terminal.
pub fn summary(pods: &[Pod]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for p in pods {
        let status = p.status.clone().unwrap_or_default();
        let phase = status.phase.as_deref().unwrap_or("Pending");
        let mut line = format!("pod {}: {phase}", name(p));
        let waiting = status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref().and_then(|s| s.waiting.as_ref()))
            .next();
        if let Some(w) = waiting {
            line.push_str(&format!(
                ", waiting: {}{}",
                w.reason.as_deref().unwrap_or("?"),
                w.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }
        for c in status.conditions.iter().flatten() {
            if c.status == "False" && (c.type_ == "PodScheduled" || c.type_ == "Ready") {
                line.push_str(&format!(
                    ", {}=False{}{}",
                    c.type_,
                    c.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default(),
                    c.message
                        .as_deref()
                        .filter(|m| !m.is_empty())
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        }
        lines.push(line);
    }
    lines.sort();
    lines.join("\n  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_image_pull_back_off_is_stuck_with_its_message() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "tf-1"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"i\""}}
            }]}
        }));
        let s = stuck(&[p]).unwrap();
        assert_eq!(s.reason, "ImagePullBackOff");
        assert_eq!(s.message, "Back-off pulling image \"i\"");
        let e = stuck_error(
            "the rollout",
            &s,
            Some("gcloud container clusters get-credentials x"),
        );
        let t = e.to_string();
        assert!(
            t.contains("kubectl describe pod tf-1 --namespace benchstack"),
            "{t}"
        );
        assert!(
            t.contains("gcloud container clusters get-credentials x"),
            "{t}"
        );
    }

    #[test]
    fn unschedulable_waits_while_another_pod_terminates() {
        let pending = serde_json::json!({
            "metadata": {"name": "tf-new"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]}
        });
        let s = stuck(&[pod(pending.clone())]).unwrap();
        assert_eq!(s.reason, "Unschedulable");
        assert!(s.message.contains("3 Insufficient cpu"));
        let leaving = pod(serde_json::json!({
            "metadata": {"name": "tf-old", "deletionTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"phase": "Running"}
        }));
        assert_eq!(stuck(&[pod(pending), leaving]), None);
    }

    #[test]
    fn an_unschedulable_pod_is_given_up_on_only_after_the_grace_period() {
        let pending = pod(serde_json::json!({
            "metadata": {"name": "tf-new"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]}
        }));
        let w = Watch {
            grace: Duration::from_millis(50),
            unschedulable_since: Mutex::new(HashMap::new()),
        };
        let pods = [pending];
        assert_eq!(w.verdict(&pods, &pods), None, "just seen");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(w.verdict(&pods, &pods).unwrap().reason, "Unschedulable");
    }

    #[test]
    fn a_running_or_pulling_pod_is_not_stuck() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "tf-1"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            }]}
        }));
        assert_eq!(stuck(&[p]), None);
    }
}
