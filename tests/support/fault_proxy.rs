//! An HTTP proxy in front of fake-gcs-server that answers `503 Service Unavailable` to
//! uploads of one object, a given number of times, and forwards everything else. GCS
//! documents 503 (and 429, 408, other 5xx) as transient: "retry using exponential backoff"
//! (https://cloud.google.com/storage/docs/retry-strategy). fake-gcs-server never fails on its
//! own, so the fault is injected here.
//!
//! It forwards with the upstream's own Host header. google-cloud-storage sends the
//! endpoint's host without its port, and fake-gcs-server builds a resumable upload's
//! `Location` from the Host header; through the proxy that Location is a URL that works, as
//! GCS's own absolute Location always does (uploads over 16 MiB are resumable).

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};

pub struct FaultProxy {
    addr: SocketAddr,
    /// Uploads of the object still to fail (u32::MAX: always).
    remaining: Arc<AtomicU32>,
    /// Uploads of the object answered with 503 so far.
    pub failed: Arc<AtomicU32>,
    /// The query string of every upload seen, and `GET path?query` of every read (decoded `%2F`).
    pub uploads: Arc<std::sync::Mutex<Vec<String>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Forwards to `upstream` (`http://host:port`); uploads whose object name ends with
    /// `object` fail `times` times with 503.
    pub fn start(upstream: String, object: &str, times: u32) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let remaining = Arc::new(AtomicU32::new(times));
        let failed = Arc::new(AtomicU32::new(0));
        let uploads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let object = object.to_string();
        let (rem, fail, seen) = (remaining.clone(), failed.clone(), uploads.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let client = reqwest::Client::new();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let (client, upstream, object) = (client.clone(), upstream.clone(), object.clone());
                            let (rem, fail, seen) = (rem.clone(), fail.clone(), seen.clone());
                            tokio::spawn(async move {
                                let service = service_fn(move |req| {
                                    let (client, upstream, object) = (client.clone(), upstream.clone(), object.clone());
                                    let (rem, fail, seen) = (rem.clone(), fail.clone(), seen.clone());
                                    async move {
                                        Ok::<_, Infallible>(handle(req, &client, &upstream, &object, &rem, &fail, &seen).await)
                                    }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        FaultProxy {
            addr,
            remaining,
            failed,
            uploads,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn failed(&self) -> u32 {
        self.failed.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    client: &reqwest::Client,
    upstream: &str,
    object: &str,
    remaining: &AtomicU32,
    failed: &AtomicU32,
    seen: &std::sync::Mutex<Vec<String>>,
) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or("").replace("%2F", "/");
    let is_upload = req.method() == hyper::Method::POST && req.uri().path().starts_with("/upload/");
    let names_object = query.split('&').any(|kv| {
        kv.strip_prefix("name=")
            .is_some_and(|n| n.ends_with(object))
    });
    if is_upload {
        seen.lock().unwrap().push(query.clone());
    } else if req.method() == hyper::Method::GET {
        let path = req.uri().path().replace("%2F", "/");
        seen.lock().unwrap().push(format!("GET {path}?{query}"));
    }
    let (parts, body) = req.into_parts();
    // Read the whole request first, as a server does before it answers.
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if is_upload && names_object {
        let left = remaining.load(Ordering::SeqCst);
        if left > 0 {
            if left != u32::MAX {
                remaining.store(left - 1, Ordering::SeqCst);
            }
            failed.fetch_add(1, Ordering::SeqCst);
            let mut resp = Response::new(Full::new(Bytes::from_static(
                br#"{"error":{"code":503,"message":"Service Unavailable","errors":[{"reason":"backendError"}]}}"#,
            )));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return resp;
        }
    }
    let url = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut fwd = client.request(parts.method.clone(), url).body(body);
    for (k, v) in &parts.headers {
        if k != hyper::header::HOST
            && k != hyper::header::CONTENT_LENGTH
            && k != hyper::header::TRANSFER_ENCODING
        {
            fwd = fwd.header(k, v);
        }
    }
    match fwd.send().await {
        Ok(r) => {
            let status = r.status();
            let headers = r.headers().clone();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = Response::new(Full::new(bytes));
            *resp.status_mut() = status;
            for (k, v) in &headers {
                if k != hyper::header::CONTENT_LENGTH
                    && k != hyper::header::TRANSFER_ENCODING
                    && k != hyper::header::CONNECTION
                {
                    resp.headers_mut().insert(k, v.clone());
                }
            }
            resp
        }
        Err(e) => {
            let mut resp = Response::new(Full::new(Bytes::from(e.to_string())));
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
    }
}
