//! The gang start of a distributed load test, and what makes its run invalid.
//!
//! Workers start together or the run says why not: each worker pod serves its clock on the
//! control port (`loadgen::worker::Control`) and is Ready (its readiness probe) once it
//! does. The coordinator reaches every pod through the API server's pod proxy, measures its
//! clock offset with a few NTP-style round trips, and only when every worker of the Job is
//! Running, Ready and measured publishes one common start, handed to each worker in its own
//! clock (the coordinator's start plus the worker's offset). A worker takes the start only
//! with the run's control token (made per run, given to the pods in the Job's environment):
//! another pod of the cluster can reach the control port but cannot start the run.
//!
//! Why the coordinator and not the API server's `Date` header: `Date` has one-second
//! resolution (RFC 9110 §5.6.7, IMF-fixdate), far coarser than the 50 ms bound, and a worker
//! would need API credentials to read it; the coordinator is the clock the common start is
//! stated in, and the pod proxy is the path it already uses for the serving pods. The proxy
//! hop makes the round trip longer, not the estimate biased, as long as it is about
//! symmetric; the round trip with the lowest delay is kept (NTP's clock filter), and its
//! half is the stated uncertainty.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;

use crate::loadgen::result::WorkerDiagnostics;

/// NTP-style round trips per worker.
const ROUND_TRIPS: usize = 5;
/// The least time between publishing the start and the start itself.
const MIN_PUBLISH_LEAD: Duration = Duration::from_millis(500);
/// How long one request through the pod proxy may take.
const PROXY_TIMEOUT: Duration = Duration::from_secs(5);

/// One worker's clock as measured through the pod proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Clock {
    /// The pod measured (a replacement pod for the same index is measured again).
    pub pod: String,
    /// Worker clock minus coordinator clock, nanoseconds.
    pub offset_ns: i64,
    /// The delay of the round trip the offset comes from.
    pub rtt: Duration,
}

/// The coordinator's record of the gang: the start it published, every worker's clock, the
/// workers that were not ready when it was published, the pods seen per index, restarts.
#[derive(Debug, Default)]
pub struct Gang {
    /// The common start in the coordinator's clock (Unix ns); 0 until published.
    pub start_unix_ns: u64,
    pub clocks: BTreeMap<u32, Clock>,
    /// Index → why it was not ready at the common start.
    pub not_ready: BTreeMap<u32, String>,
    pub pods: BTreeMap<u32, BTreeSet<String>>,
    /// Index → the highest `restartCount` seen on any of its pods' containers.
    pub restart_counts: BTreeMap<u32, u32>,
    /// The pods the start was handed to.
    pub handed: BTreeSet<String>,
}

impl Gang {
    /// The start as a time.
    pub fn start_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.start_unix_ns)
    }

    /// Notes a pod of worker `index` (and its containers' restarts).
    pub fn saw(&mut self, index: u32, p: &Pod) {
        let name = p.metadata.name.clone().unwrap_or_default();
        self.pods.entry(index).or_default().insert(name);
        let r = restart_count(p);
        let e = self.restart_counts.entry(index).or_default();
        *e = (*e).max(r);
    }

    /// How many times worker `index` restarted: container restarts plus replacement pods.
    pub fn restarts(&self, index: u32) -> u32 {
        let pods = self.pods.get(&index).map_or(0, |p| p.len() as u32);
        self.restart_counts.get(&index).copied().unwrap_or(0) + pods.saturating_sub(1)
    }

    /// The start to hand worker `index`, in its own clock.
    pub fn start_for(&self, index: u32) -> u64 {
        let offset = self.clocks.get(&index).map_or(0, |c| c.offset_ns);
        (self.start_unix_ns as i128 + offset as i128).max(0) as u64
    }
}

/// The summed `restartCount` of a pod's containers
/// (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#PodStatus:
/// `containerStatuses[].restartCount`, "the number of times the container has been
/// restarted").
pub fn restart_count(p: &Pod) -> u32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count.max(0) as u32).sum())
        .unwrap_or(0)
}

/// Running with every container ready (the readiness probe on the control port passed).
pub fn worker_ready(p: &Pod) -> bool {
    let Some(status) = p.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .container_statuses
            .as_ref()
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

/// The lead between publishing and the start: enough for every worker's request to land.
pub fn publish_lead(clocks: &BTreeMap<u32, Clock>) -> Duration {
    let worst = clocks.values().map(|c| c.rtt).max().unwrap_or_default();
    (worst * 4).max(MIN_PUBLISH_LEAD)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One request through the API server's pod proxy: (status, body). `token`: the run's
/// control token, in the header the worker reads it from (the proxy passes it through).
async fn proxy(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    use http_body_util::{BodyExt, Limited};
    let send = async {
        let mut req = http::Request::builder().method(method.clone()).uri(path);
        if let Some(t) = token {
            req = req.header(crate::loadgen::worker::TOKEN_HEADER, t);
        }
        let req = req
            .body(kube::client::Body::empty())
            .map_err(|e| format!("building the request: {e}"))?;
        let resp = client
            .send(req)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| format!("reading the reply to {method} {path}: {e}"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    };
    tokio::time::timeout(PROXY_TIMEOUT, send)
        .await
        .map_err(|_| {
            format!(
                "{method} {path}: no answer within {}s",
                PROXY_TIMEOUT.as_secs()
            )
        })?
}

fn control_path(namespace: &str, pod: &str, port: u16, rest: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{rest}")
}

/// The worker's clock against ours: `ROUND_TRIPS` GETs of `/clock`, the one with the lowest
/// delay kept; offset = worker time − midpoint of our send and receive.
pub async fn measure(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<Clock, String> {
    let path = control_path(namespace, pod, port, "/clock");
    let mut best: Option<Clock> = None;
    for _ in 0..ROUND_TRIPS {
        let sent = now_ns();
        let t0 = Instant::now();
        let (status, body) = proxy(client, http::Method::GET, &path, None).await?;
        let rtt = t0.elapsed();
        if status != 200 {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(format!(
                "GET {path} answered HTTP {status}: {}",
                text.trim()
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {path}: not the worker's clock ({e})"))?;
        let worker = v["unix_ns"]
            .as_u64()
            .ok_or_else(|| format!("GET {path}: no unix_ns in the answer"))?;
        let mid = sent as i128 + (rtt.as_nanos() as i128) / 2;
        let offset_ns = (worker as i128 - mid).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        if best.as_ref().is_none_or(|b| rtt < b.rtt) {
            best = Some(Clock {
                pod: pod.to_string(),
                offset_ns,
                rtt,
            });
        }
    }
    best.ok_or_else(|| format!("GET {path}: no round trip"))
}

/// Hands a worker its start (in its own clock), with the run's token.
pub async fn publish(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
    at_unix_ns: u64,
    token: &str,
) -> Result<(), String> {
    let path = control_path(
        namespace,
        pod,
        port,
        &format!("/start?at_unix_ns={at_unix_ns}"),
    );
    let (status, body) = proxy(client, http::Method::POST, &path, Some(token)).await?;
    if status == 200 {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Err(format!(
            "POST {path} answered HTTP {status}: {}",
            text.trim()
        ))
    }
}

fn ms(d_ns: f64) -> f64 {
    d_ns / 1e6
}

/// Every worker's diagnostics: what its report says (start lateness, rate, lag, errors) and
/// what the coordinator saw (pod, clock, restarts).
pub fn diagnostics(
    gang: &Gang,
    reports: &[(u32, String, crate::loadgen::RunReport)],
) -> Vec<WorkerDiagnostics> {
    reports
        .iter()
        .map(|(index, pod, r)| {
            let own = r.worker_diagnostics.first();
            let clock = gang.clocks.get(index).filter(|c| &c.pod == pod);
            let secs: f64 = r.stages.iter().map(|s| s.duration_s).sum();
            let sent: f64 = r
                .stages
                .iter()
                .map(|s| s.achieved_rate * s.duration_s)
                .sum();
            WorkerDiagnostics {
                index: *index,
                pod: pod.clone(),
                start_late_ms: own.and_then(|d| d.start_late_ms),
                clock_offset_ms: clock.map(|c| ms(c.offset_ns as f64)),
                clock_rtt_ms: clock.map(|c| c.rtt.as_secs_f64() * 1000.0),
                achieved_rate: if secs > 0.0 { sent / secs } else { 0.0 },
                lag_p99_ms: r
                    .stages
                    .iter()
                    .map(|s| s.generator_lag_ms.p99)
                    .fold(0.0, f64::max),
                errors: r.stages.iter().map(|s| s.errors_total).sum(),
                restarts: gang.restarts(*index),
            }
        })
        .collect()
}

/// Why the gang's run is invalid, one reason per worker at fault (restarted, missing at the
/// start, late, off-clock), or empty.
pub fn judge(gang: &Gang, workers: &[WorkerDiagnostics], bound: Duration) -> Vec<String> {
    let bound_ms = bound.as_secs_f64() * 1000.0;
    let mut why = Vec::new();
    for d in workers {
        let i = d.index;
        if d.restarts > 0 {
            let pods: Vec<&str> = gang
                .pods
                .get(&i)
                .map(|p| p.iter().map(String::as_str).collect())
                .unwrap_or_default();
            why.push(format!(
                "worker {i} restarted {} time(s) (restartCount and replacement pods; pods {})",
                d.restarts,
                pods.join(", ")
            ));
        } else if let Some(reason) = gang
            .not_ready
            .get(&i)
            .filter(|_| d.start_late_ms.is_none_or(|l| l > bound_ms))
        {
            why.push(format!(
                "worker {i} was not ready at the common start ({reason}) and started {} late",
                d.start_late_ms
                    .map(|l| format!("{l:.0} ms"))
                    .unwrap_or_else(|| "an unknown time".into())
            ));
        } else if let Some(late) = d.start_late_ms.filter(|l| *l > bound_ms) {
            why.push(format!(
                "worker {i} started {late:.1} ms after the common start (bound {bound_ms:.0} ms)"
            ));
        } else if d.start_late_ms.is_none() {
            why.push(format!("worker {i} did not say when it started"));
        } else if let Some(off) = d.clock_offset_ms.filter(|o| o.abs() > bound_ms) {
            why.push(format!(
                "worker {i}'s clock is {off:+.1} ms off the coordinator's (bound {bound_ms:.0} ms; \
                 the node is not time-synchronised)"
            ));
        } else if d.clock_offset_ms.is_none() {
            why.push(format!("worker {i}'s clock was not measured"));
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loadtest block's default `start_tolerance`.
    const START_BOUND: Duration =
        Duration::from_millis(crate::vocab::resources::DEFAULT_START_TOLERANCE_MS);

    fn d(index: u32, late: f64, offset: f64, restarts: u32) -> WorkerDiagnostics {
        WorkerDiagnostics {
            index,
            pod: format!("p{index}"),
            start_late_ms: Some(late),
            clock_offset_ms: Some(offset),
            clock_rtt_ms: Some(2.0),
            restarts,
            ..Default::default()
        }
    }

    #[test]
    fn a_late_restarted_unready_or_off_clock_worker_is_named_with_the_reason() {
        let mut gang = Gang::default();
        gang.not_ready.insert(2, "Pending".into());
        let workers = [
            d(0, 3.0, 1.0, 0),
            d(1, 80.0, 0.0, 0),
            d(2, 900.0, 0.0, 0),
            d(3, 1.0, -70.0, 0),
            d(4, 1.0, 0.0, 1),
        ];
        let why = judge(&gang, &workers, START_BOUND);
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].starts_with("worker 1 started 80.0 ms"), "{}", why[0]);
        assert!(why[1].contains("worker 2 was not ready"), "{}", why[1]);
        assert!(
            why[2].contains("worker 3's clock is -70.0 ms"),
            "{}",
            why[2]
        );
        assert!(
            why[3].starts_with("worker 4 restarted 1 time"),
            "{}",
            why[3]
        );
        assert!(judge(&gang, &workers[..1], START_BOUND).is_empty());
        // A looser bound (`start_tolerance`) accepts what it covers, even a worker that was
        // not ready when the start was published but started within it.
        let loose = judge(&gang, &workers[..4], Duration::from_secs(1));
        assert!(loose.is_empty(), "{loose:?}");
    }

    #[test]
    fn each_worker_gets_the_start_in_its_own_clock() {
        let mut gang = Gang {
            start_unix_ns: 1_000_000_000,
            ..Default::default()
        };
        gang.clocks.insert(
            0,
            Clock {
                pod: "a".into(),
                offset_ns: -20_000_000,
                rtt: Duration::from_millis(3),
            },
        );
        assert_eq!(gang.start_for(0), 980_000_000);
        assert_eq!(gang.start_for(1), 1_000_000_000);
        assert_eq!(publish_lead(&gang.clocks), MIN_PUBLISH_LEAD);
    }
}
