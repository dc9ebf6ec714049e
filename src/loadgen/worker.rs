//! Distributed load generation: one `WorkerSpec` describes the whole test; worker `i` of `N`
//! runs 1/N of every stage's rate with its own seed, from a common start time, and prints its
//! `RunReport` (with base64 HdrHistograms) as its last line. The coordinator merges the
//! reports (`result::merge`): histograms are added, never averaged.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{LoadError, LoadSpec};
use crate::vocab::load::{Arrival, Protocol, Rate, RequestSource, Slo, Stage, duration_secs};

/// The environment variable Kubernetes sets to a pod's index in an Indexed Job.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// The request a worker sends, carried inside the spec (a pod has no access to the stack's
/// files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WorkerRequest {
    /// A TF Serving JSON predict body.
    Body { body: String },
    /// The text of a CSV with a header; `batch_size` rows sampled per request.
    Csv { csv: String, batch_size: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub targets: Vec<String>,
    pub protocol: Protocol,
    pub model: String,
    #[serde(default)]
    pub signature: Option<String>,
    pub request: WorkerRequest,
    /// The whole test's stages; each worker runs rate/workers.
    pub stages: Vec<Stage>,
    #[serde(with = "duration_secs")]
    pub warmup: Duration,
    pub arrival: Arrival,
    pub seed: u64,
    /// Connections per worker.
    pub connections: u32,
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    #[serde(default)]
    pub slos: Vec<Slo>,
    pub workers: u32,
    /// When every worker starts its first stage (Unix milliseconds); None: at once.
    #[serde(default)]
    pub start_at_unix_ms: Option<u64>,
}

impl WorkerSpec {
    /// The distributed form of `spec` for `workers` workers: the same test, with the CSV
    /// read now so the workers carry its rows, and the connections split between them.
    /// [`WorkerSpec::share`] turns it back into each worker's `LoadSpec`.
    pub fn new(spec: &LoadSpec, workers: u32) -> Result<Self, LoadError> {
        let request = match &spec.request {
            RequestSource::Body(body) => WorkerRequest::Body { body: body.clone() },
            RequestSource::Data { path, batch_size } => WorkerRequest::Csv {
                csv: std::fs::read_to_string(path).map_err(|e| {
                    LoadError::Invalid(format!("cannot read {}: {e}", path.display()))
                })?,
                batch_size: *batch_size,
            },
        };
        let workers = workers.max(1);
        Ok(WorkerSpec {
            targets: spec.targets.clone(),
            protocol: spec.protocol,
            model: spec.model.clone(),
            signature: spec.signature.clone(),
            request,
            stages: spec.stages.clone(),
            warmup: spec.warmup,
            arrival: spec.arrival,
            seed: spec.seed,
            connections: spec.connections.div_ceil(workers).max(1),
            timeout: spec.timeout,
            slos: spec.slos.clone(),
            workers,
            start_at_unix_ms: None,
        })
    }

    /// Worker `index`'s share as a runnable spec. A CSV is written into `scratch` (a
    /// directory that must outlive the run).
    pub fn share(&self, index: u32, scratch: &Path) -> Result<LoadSpec, LoadError> {
        if self.workers == 0 || index >= self.workers {
            return Err(LoadError::Invalid(format!(
                "worker index {index} is outside 0..{} ({INDEX_ENV})",
                self.workers
            )));
        }
        let request = match &self.request {
            WorkerRequest::Body { body } => RequestSource::Body(body.clone()),
            WorkerRequest::Csv { csv, batch_size } => {
                let path = scratch.join(format!("worker-{index}.csv"));
                std::fs::write(&path, csv).map_err(|e| {
                    LoadError::Invalid(format!("cannot write {}: {e}", path.display()))
                })?;
                RequestSource::Data {
                    path,
                    batch_size: *batch_size,
                }
            }
        };
        let n = f64::from(self.workers);
        let stages = self
            .stages
            .iter()
            .map(|s| Stage {
                name: s.name.clone(),
                rate: match s.rate {
                    Rate::PerSecond(r) => Rate::PerSecond(r / n),
                    Rate::Max => Rate::Max,
                },
                duration: s.duration,
            })
            .collect();
        let mut spec = LoadSpec::new(
            self.targets.clone(),
            self.protocol,
            self.model.clone(),
            request,
            stages,
        );
        spec.signature = self.signature.clone();
        spec.warmup = self.warmup;
        spec.arrival = self.arrival;
        // Distinct seeds so Poisson arrivals and row sampling differ between workers.
        spec.seed = self.seed.wrapping_add(u64::from(index));
        spec.phase = f64::from(index) / n;
        spec.connections = self.connections;
        spec.timeout = self.timeout;
        spec.slos = self.slos.clone();
        Ok(spec)
    }

    /// How long until the common start (zero when it has passed or none is set), and how
    /// late this worker is when it has passed.
    pub fn wait_for_start(&self, now: SystemTime) -> (Duration, Duration) {
        let Some(at) = self.start_at_unix_ms else {
            return (Duration::ZERO, Duration::ZERO);
        };
        let start = UNIX_EPOCH + Duration::from_millis(at);
        match start.duration_since(now) {
            Ok(wait) => (wait, Duration::ZERO),
            Err(late) => (Duration::ZERO, late.duration()),
        }
    }

    /// How long a run takes once started (warmup and stages), to size timeouts.
    pub fn expected_duration(&self) -> Duration {
        self.warmup + self.stages.iter().map(|s| s.duration).sum::<Duration>()
    }
}

/// A worker's index from `JOB_COMPLETION_INDEX`.
pub fn index_from_env() -> Result<u32, LoadError> {
    match std::env::var(INDEX_ENV) {
        Ok(v) => v.trim().parse().map_err(|_| {
            LoadError::Invalid(format!(
                "{INDEX_ENV}={v:?}: expected a whole number (the pod's index in an Indexed Job)"
            ))
        }),
        Err(_) => Err(LoadError::Invalid(format!(
            "{INDEX_ENV} is not set: a worker runs as a pod of an Indexed Job (or pass --index)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(workers: u32) -> WorkerSpec {
        WorkerSpec {
            targets: vec!["http://127.0.0.1:8501".into()],
            protocol: Protocol::Rest,
            model: "regression".into(),
            signature: None,
            request: WorkerRequest::Csv {
                csv: "a,b\n1,2\n".into(),
                batch_size: 1,
            },
            stages: vec![
                Stage {
                    name: "s1".into(),
                    rate: Rate::PerSecond(3900.0),
                    duration: Duration::from_secs(60),
                },
                Stage {
                    name: "s2".into(),
                    rate: Rate::Max,
                    duration: Duration::from_secs(5),
                },
            ],
            warmup: Duration::from_secs(2),
            arrival: Arrival::Poisson,
            seed: 7,
            connections: 16,
            timeout: Duration::from_secs(10),
            slos: vec![],
            workers,
            start_at_unix_ms: None,
        }
    }

    #[test]
    fn each_worker_takes_an_equal_share_with_its_own_seed() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(4);
        let w1 = s.share(1, dir.path()).unwrap();
        assert_eq!(w1.stages[0].rate, Rate::PerSecond(975.0));
        assert_eq!(w1.stages[1].rate, Rate::Max);
        assert_eq!(w1.seed, 8);
        assert_eq!(w1.phase, 0.25);
        match &w1.request {
            RequestSource::Data { path, batch_size } => {
                assert_eq!(std::fs::read_to_string(path).unwrap(), "a,b\n1,2\n");
                assert_eq!(*batch_size, 1);
            }
            other => panic!("expected CSV data, found {other:?}"),
        }
        assert!(s.share(4, dir.path()).is_err(), "index 4 of 4");
    }

    #[test]
    fn the_spec_round_trips_through_json() {
        let s = spec(2);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<WorkerSpec>(&json).unwrap(), s);
    }

    #[test]
    fn a_worker_waits_for_the_common_start_or_reports_how_late_it_is() {
        let mut s = spec(2);
        s.start_at_unix_ms = Some(10_000);
        let (wait, late) = s.wait_for_start(UNIX_EPOCH + Duration::from_millis(9_000));
        assert_eq!((wait, late), (Duration::from_secs(1), Duration::ZERO));
        let (wait, late) = s.wait_for_start(UNIX_EPOCH + Duration::from_millis(12_500));
        assert_eq!((wait, late), (Duration::ZERO, Duration::from_millis(2500)));
        assert_eq!(s.expected_duration(), Duration::from_secs(67));
    }
}
