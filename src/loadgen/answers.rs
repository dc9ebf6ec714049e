//! Answers checked: does batching change what the server predicts? TF Serving users have
//! seen it do so (tensorflow/serving#1279: padding short sequences to the longest in a batch
//! gave garbage outputs).
//!
//! A fixed sample of the load test's own requests (the first [`SAMPLE`] bodies its seed
//! draws) is sent twice to the idle server over REST: first **alone**, one after the other,
//! so no request shares a batch with another (TF Serving runs a batch of one request's rows,
//! exactly what an unbatched session runs, apart from padding the batch dimension with
//! copies of its first row); then **all at once**, so they batch together as under load.
//! Every number of each batched answer must equal the alone answer within a relative
//! tolerance of [`TOLERANCE`]. The reference costs nothing extra (no second, unbatched
//! server, no restart between configurations) and works against any server on any cluster;
//! what it cannot see is a configuration that changes even a lone request's answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LoadError;
use super::request;
use crate::vocab::load::RequestSource;

/// Requests in the sample.
pub const SAMPLE: usize = 16;
/// Relative tolerance: |batched − alone| ≤ TOLERANCE × max(|batched|, |alone|).
pub const TOLERANCE: f64 = 1e-4;
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerCheck {
    /// Requests sent in each pass.
    pub sample: u32,
    /// Requests answered 200 in both passes (the others are not compared).
    pub compared: u32,
    pub tolerance: f64,
    /// Compared requests whose batched answer differs from the alone one.
    pub differing: u32,
    /// The largest difference found, as a sentence (request, position, both values).
    #[serde(default)]
    pub worst: Option<String>,
    /// Why some or all requests could not be compared.
    #[serde(default)]
    pub note: Option<String>,
}

impl AnswerCheck {
    pub fn differs(&self) -> bool {
        self.differing > 0
    }

    /// One line for the terminal: what was compared, with what tolerance, and the result.
    pub fn summary(&self) -> String {
        let head = format!(
            "answers checked: {} of {} sample requests, batched against sent alone, relative tolerance {:e}",
            self.compared, self.sample, self.tolerance
        );
        let mut line = if self.differs() {
            format!(
                "{head}: {} DIFFER{}",
                self.differing,
                self.worst
                    .as_deref()
                    .map(|w| format!(" (worst: {w})"))
                    .unwrap_or_default()
            )
        } else if self.compared == 0 {
            format!("{head}: nothing compared")
        } else {
            format!("{head}: identical")
        };
        if let Some(n) = &self.note {
            line.push_str(&format!(" ({n})"));
        }
        line
    }
}

/// Runs the check against `target` (`http://host:port`, the REST endpoint).
pub fn check(
    target: &str,
    model: &str,
    signature: Option<&str>,
    source: &RequestSource,
    seed: u64,
) -> Result<AnswerCheck, LoadError> {
    let addr = target
        .strip_prefix("http://")
        .ok_or_else(|| {
            LoadError::Invalid(format!(
                "answers are checked over REST: {target} is not http://"
            ))
        })?
        .trim_end_matches('/')
        .to_string();
    let mut bodies = request::json_bodies(source, signature, seed)
        .map_err(|e| LoadError::Invalid(e.to_string()))?;
    if bodies.is_empty() {
        return Err(LoadError::Invalid(
            "no request to check answers with".into(),
        ));
    }
    // A single body (a request file) is sent SAMPLE times: identical requests batch too.
    let first = bodies.clone();
    while bodies.len() < SAMPLE {
        bodies.extend(first.iter().cloned());
    }
    bodies.truncate(SAMPLE);
    let path = format!("/v1/models/{model}:predict");

    let mut alone: Vec<Result<String, String>> = Vec::with_capacity(bodies.len());
    for b in &bodies {
        let answer = post(&addr, &path, b);
        // A server that cannot be reached at all (a firewall dropping the connection) is
        // not waited on for every request: nothing can be compared.
        if let Err(e) = &answer
            && alone.is_empty()
            && !e.starts_with("HTTP ")
        {
            return Ok(AnswerCheck {
                sample: bodies.len() as u32,
                compared: 0,
                tolerance: TOLERANCE,
                differing: 0,
                worst: None,
                note: Some(format!("the server could not be reached: {e}")),
            });
        }
        alone.push(answer);
    }
    let barrier = Arc::new(Barrier::new(bodies.len()));
    let handles: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|b| {
            let (addr, path, barrier) = (addr.clone(), path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                post(&addr, &path, &b)
            })
        })
        .collect();
    let together: Vec<Result<String, String>> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("the sender panicked".into()))
        })
        .collect();
    Ok(compare(&alone, &together))
}

/// Compares two passes, request by request.
pub fn compare(
    alone: &[Result<String, String>],
    together: &[Result<String, String>],
) -> AnswerCheck {
    let mut out = AnswerCheck {
        sample: alone.len() as u32,
        compared: 0,
        tolerance: TOLERANCE,
        differing: 0,
        worst: None,
        note: None,
    };
    let mut worst: f64 = 0.0;
    let mut failed: Option<String> = None;
    for (i, (a, b)) in alone.iter().zip(together).enumerate() {
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                failed.get_or_insert_with(|| format!("request {i}: {e}"));
                continue;
            }
        };
        out.compared += 1;
        let (na, nb) = (numbers(a), numbers(b));
        if na.len() != nb.len() {
            out.differing += 1;
            if worst < f64::INFINITY {
                worst = f64::INFINITY;
                out.worst = Some(format!(
                    "request {i}: {} numbers batched, {} alone",
                    nb.len(),
                    na.len()
                ));
            }
            continue;
        }
        let mut differs = false;
        for (k, (x, y)) in na.iter().zip(&nb).enumerate() {
            let scale = x.abs().max(y.abs());
            let diff = (x - y).abs();
            if diff > TOLERANCE * scale {
                differs = true;
                let rel = diff / scale;
                if rel > worst {
                    worst = rel;
                    out.worst = Some(format!(
                        "request {i}, number {k}: {y} batched, {x} alone, relative difference {rel:.2e}"
                    ));
                }
            }
        }
        if differs {
            out.differing += 1;
        }
    }
    if let Some(f) = failed {
        out.note = Some(format!(
            "{} not answered 200 in both passes, e.g. {f}",
            out.sample - out.compared
        ));
    }
    out
}

/// Every number of a predict answer's `predictions` or `outputs`, in order; a body that is
/// not such an answer gives its own text's bytes as numbers, so two different bodies differ.
fn numbers(body: &str) -> Vec<f64> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => match v.get("predictions").or_else(|| v.get("outputs")) {
            Some(p) => walk(p, &mut out),
            None => out.extend(body.bytes().map(f64::from)),
        },
        Err(_) => out.extend(body.bytes().map(f64::from)),
    }
    out
}

/// One POST on its own connection: the body of a 200, else why not.
fn post(addr: &str, path: &str, body: &str) -> Result<String, String> {
    let sock: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut c = TcpStream::connect_timeout(&sock, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    c.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    c.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    c.take(MAX_ANSWER as u64)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{addr}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}: no HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut rest = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: no HTTP status"))?;
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"))
    {
        rest = dechunk(&rest);
    }
    let text = String::from_utf8_lossy(&rest).to_string();
    if status == 200 {
        Ok(text)
    } else {
        Err(format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        ))
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || size > b.len() {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_is_noted_after_one_attempt_not_an_error() {
        // A port nothing listens on: connection refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = check(
            &format!("http://127.0.0.1:{port}"),
            "m",
            None,
            &RequestSource::Body(r#"{"instances": [[1.0]]}"#.into()),
            1,
        )
        .unwrap();
        assert_eq!((c.compared, c.differing), (0, 0));
        assert!(c.note.unwrap().contains("could not be reached"));
    }

    #[test]
    fn answers_within_the_relative_tolerance_agree_and_others_are_named() {
        let a = |x: &str| Ok::<String, String>(format!(r#"{{"predictions": [[{x}]]}}"#));
        let alone = [
            a("0.4213"),
            a("100.0"),
            a("0.0"),
            Err("HTTP 503: shed".to_string()),
        ];
        let close = [a("0.42130001"), a("100.0"), a("0.0"), a("1")];
        let c = compare(&alone, &close);
        assert_eq!((c.sample, c.compared, c.differing), (4, 3, 0), "{c:?}");
        assert!(c.note.as_deref().unwrap().contains("HTTP 503"), "{c:?}");
        assert!(
            c.summary().contains("relative tolerance 1e-4: identical"),
            "{}",
            c.summary()
        );
        let off = [a("0.4213"), a("100.1"), a("0.0"), a("1")];
        let c = compare(&alone, &off);
        assert_eq!(c.differing, 1);
        assert!(c.differs());
        let worst = c.worst.unwrap();
        assert!(
            worst.contains("request 1, number 0: 100.1 batched, 100 alone"),
            "{worst}"
        );
        // A different shape is a difference too.
        let shape = [a("0.4213, 1"), a("100.0"), a("0.0"), a("1")];
        assert_eq!(compare(&alone, &shape).differing, 1);
    }
}
