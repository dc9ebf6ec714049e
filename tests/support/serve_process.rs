//! Starts `benchstack serve` on loopback ports chosen by the OS and stops it on drop.
//! Include with `#[path = "support/serve_process.rs"] mod serve_process;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example_model() -> PathBuf {
    repo().join("examples/model/regression")
}

pub struct ServeProcess {
    pub child: Child,
    pub grpc_port: u16,
    pub rest_port: u16,
}

impl ServeProcess {
    /// Starts the stand-in with extra flags; panics with its stderr if it does not come up.
    pub fn start(extra: &[&str]) -> ServeProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_benchstack"));
        cmd.arg("serve")
            .args(["--port", "0", "--rest_api_port", "0"])
            .args(extra);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn benchstack serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        if line.trim().is_empty() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            panic!("benchstack serve did not start: {err}");
        }
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("ready line is JSON");
        ServeProcess {
            child,
            grpc_port: v["grpc_port"].as_u64().expect("grpc_port") as u16,
            rest_port: v["rest_port"].as_u64().expect("rest_port") as u16,
        }
    }

    pub fn start_model(extra: &[&str]) -> ServeProcess {
        let base = example_model();
        let mut args = vec![
            "--model_name",
            "regression",
            "--model_base_path",
            base.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// SIGTERM, then wait; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request on its own connection; returns (status, body).
pub fn http(method: &str, port: u16, path: &str, body: &str) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    raw_http(port, &head, body.as_bytes())
}

/// Sends `head` then `body` as written (any framing, even a lying one) on a new connection
/// and reads until the server closes; returns (status, body), status 0 when none came.
pub fn raw_http(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer and close before taking the whole body; that is its right.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
