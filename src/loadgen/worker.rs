//! Distributed load generation: one `WorkerSpec` describes the whole test; worker `i` of `N`
//! runs 1/N of every stage's rate with its own seed, from a common start time, and prints its
//! `RunReport` (with base64 HdrHistograms) as its last line. The coordinator merges the
//! reports (`merge::merge`): histograms are added, never averaged.

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
    /// When every worker starts its first stage (Unix milliseconds); None: at once, or
    /// when the coordinator publishes it (`control_port`).
    #[serde(default)]
    pub start_at_unix_ms: Option<u64>,
    /// Gang start: the worker serves its clock and waits for the common start on this port
    /// ([`Control`]); the coordinator reaches it through the API server's pod proxy.
    #[serde(default)]
    pub control_port: Option<u16>,
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
            control_port: None,
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

/// The environment variable a worker's pod gets its own IP in (the downward API's
/// `status.podIP`); the control port is bound on it, or on every address when unset.
pub const POD_IP_ENV: &str = "POD_IP";

/// The header the coordinator sends the run's control token in. Not `Authorization:
/// Bearer`: the coordinator reaches a worker through the API server's pod proxy, and the
/// API server deletes the `Authorization` header of every request it has authenticated
/// before proxying it (k8s.io/apiserver/pkg/endpoints/filters/authentication.go:
/// "authorization header is not required anymore in case of a successful authentication");
/// that header carries the coordinator's own credentials to the API server anyway. Other
/// request headers are passed through to the pod.
pub const TOKEN_HEADER: &str = "x-benchstack-token";

/// A new control token for one run: 32 bytes from the thread's CSPRNG (ChaCha, seeded from
/// the operating system), hex.
pub fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal without telling how much of a guess was right: the time taken depends on the
/// lengths only, never on where the first difference is.
fn same_token(given: &[u8], token: &[u8]) -> bool {
    if given.len() != token.len() {
        return false;
    }
    given
        .iter()
        .zip(token)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A worker's side of the gang start: a tiny HTTP/1.x server on `control_port` that answers
///
/// - `GET /clock`: `{"unix_ns": N, "start_at_unix_ns": S|null}`: this worker's wall clock
///   when it answered (the coordinator's NTP-style round trips), and the start it holds;
///   also the pod's readiness probe. Open to anyone who can reach the pod: the kubelet's
///   probe carries no secret, and a clock gives no control over the run;
/// - `POST /start?at_unix_ns=S` with the run's token in [`TOKEN_HEADER`]: the common start,
///   already in this worker's clock (the coordinator adds the offset it measured). Without
///   the token, or with another, 401 and nothing changes. The first start wins; the same one
///   again is accepted, another is refused (409).
///
/// Anything else is 404; a request larger than 8 KiB or slower than 5 s is dropped.
pub struct Control {
    pub addr: std::net::SocketAddr,
    start: std::sync::Arc<(std::sync::Mutex<Option<u64>>, std::sync::Condvar)>,
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Control {
    /// Binds `ip:port` (every address when `ip` is None) and serves on its own thread for
    /// the life of the process; a start is taken only with `token` (which must not be empty).
    pub fn serve(ip: Option<&str>, port: u16, token: &str) -> Result<Control, LoadError> {
        if token.is_empty() {
            return Err(LoadError::Invalid(
                "the control port needs the run's token: none was given".into(),
            ));
        }
        let token: std::sync::Arc<[u8]> = token.as_bytes().into();
        let host = ip.unwrap_or("0.0.0.0");
        let listener = std::net::TcpListener::bind((host, port)).map_err(|e| {
            LoadError::Invalid(format!(
                "cannot listen on {host}:{port} (the control port): {e}"
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| LoadError::Invalid(format!("the control port: {e}")))?;
        let start = std::sync::Arc::new((std::sync::Mutex::new(None), std::sync::Condvar::new()));
        let shared = start.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (shared, token) = (shared.clone(), token.clone());
                std::thread::spawn(move || answer(conn, &shared, &token));
            }
        });
        Ok(Control { addr, start })
    }

    /// Waits up to `limit` for the common start (Unix ns, this worker's clock).
    pub fn wait_for_start(&self, limit: Duration) -> Option<u64> {
        let (lock, cv) = &*self.start;
        let guard = lock.lock().ok()?;
        let (guard, _) = cv.wait_timeout_while(guard, limit, |s| s.is_none()).ok()?;
        *guard
    }
}

type StartCell = (std::sync::Mutex<Option<u64>>, std::sync::Condvar);

/// The value of header `name` in a request's head (not its body), if present.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    let head = head.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn answer(mut conn: std::net::TcpStream, start: &StartCell, token: &[u8]) {
    use std::io::{Read, Write};
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 8192 {
            return;
        }
    }
    // Stamped as soon as the request is read: the reply's transit is the other half.
    let now = now_unix_ns();
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (code, body) = match (method, path) {
        ("GET", "/clock") => {
            let held = start.0.lock().ok().and_then(|g| *g);
            (
                200,
                serde_json::json!({"unix_ns": now, "start_at_unix_ns": held}).to_string(),
            )
        }
        ("POST", "/start")
            if !header(&head, TOKEN_HEADER).is_some_and(|t| same_token(t.as_bytes(), token)) =>
        {
            (
                401,
                format!(r#"{{"error":"the start needs the run's token in {TOKEN_HEADER}"}}"#),
            )
        }
        ("POST", "/start") => {
            let at = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("at_unix_ns="))
                .and_then(|v| v.parse::<u64>().ok());
            match (at, start.0.lock()) {
                (None, _) => (400, r#"{"error":"expected ?at_unix_ns=N"}"#.to_string()),
                (_, Err(_)) => (500, r#"{"error":"poisoned"}"#.to_string()),
                (Some(at), Ok(mut held)) => match *held {
                    Some(h) if h != at => (
                        409,
                        serde_json::json!({"error": "a different start is already set", "start_at_unix_ns": h}).to_string(),
                    ),
                    _ => {
                        *held = Some(at);
                        start.1.notify_all();
                        (200, serde_json::json!({"start_at_unix_ns": at}).to_string())
                    }
                },
            }
        }
        _ => (404, r#"{"error":"not found"}"#.to_string()),
    };
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        409 => "Conflict",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
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
            control_port: None,
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

    fn http(addr: std::net::SocketAddr, req: &str) -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    const T: &str = "x-benchstack-token: 0123abcd\r\n";

    #[test]
    fn the_control_port_serves_the_clock_and_takes_one_start() {
        let control = Control::serve(Some("127.0.0.1"), 0, "0123abcd").unwrap();
        let clock = http(control.addr, "GET /clock HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(clock.starts_with("HTTP/1.1 200"), "{clock}");
        assert!(clock.contains(r#""start_at_unix_ns":null"#), "{clock}");
        assert_eq!(control.wait_for_start(Duration::from_millis(10)), None);
        let bad = http(control.addr, &format!("POST /start HTTP/1.1\r\n{T}\r\n"));
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        let ok = http(
            control.addr,
            &format!("POST /start?at_unix_ns=42 HTTP/1.1\r\n{T}\r\n"),
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let again = http(
            control.addr,
            "POST /start?at_unix_ns=42 HTTP/1.1\r\nX-Benchstack-Token:0123abcd\r\n\r\n",
        );
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        let other = http(
            control.addr,
            &format!("POST /start?at_unix_ns=43 HTTP/1.1\r\n{T}\r\n"),
        );
        assert!(other.starts_with("HTTP/1.1 409"), "{other}");
        assert_eq!(control.wait_for_start(Duration::from_secs(1)), Some(42));
        let clock = http(control.addr, "GET /clock HTTP/1.1\r\n\r\n");
        assert!(clock.contains(r#""start_at_unix_ns":42"#), "{clock}");
    }

    #[test]
    fn a_start_without_the_runs_token_is_refused_and_nothing_starts() {
        let control = Control::serve(Some("127.0.0.1"), 0, "0123abcd").unwrap();
        for req in [
            "POST /start?at_unix_ns=42 HTTP/1.1\r\n\r\n".to_string(),
            "POST /start?at_unix_ns=42 HTTP/1.1\r\nx-benchstack-token: 0123abce\r\n\r\n".into(),
            "POST /start?at_unix_ns=42 HTTP/1.1\r\nx-benchstack-token: 0123abcd0\r\n\r\n".into(),
            "POST /start?at_unix_ns=42 HTTP/1.1\r\nAuthorization: Bearer 0123abcd\r\n\r\n".into(),
            // The token in the body or the query is not the header.
            "POST /start?at_unix_ns=42&token=0123abcd HTTP/1.1\r\n\r\nx-benchstack-token: 0123abcd"
                .into(),
        ] {
            let r = http(control.addr, &req);
            assert!(r.starts_with("HTTP/1.1 401"), "{req}: {r}");
        }
        assert_eq!(control.wait_for_start(Duration::from_millis(50)), None);
        let clock = http(control.addr, "GET /clock HTTP/1.1\r\n\r\n");
        assert!(clock.contains(r#""start_at_unix_ns":null"#), "{clock}");
        assert!(Control::serve(Some("127.0.0.1"), 0, "").is_err());
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd") && !same_token(b"ab", b"abc"));
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
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
