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

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::http_emulator::{Reply, Request, Server};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

pub struct FaultProxy {
    server: Server,
    /// Uploads of the object still to fail (u32::MAX: always).
    remaining: Arc<AtomicU32>,
    /// Uploads of the object answered with 503 so far.
    pub failed: Arc<AtomicU32>,
    /// The query string of every upload seen, and `GET path?query` of every read (decoded `%2F`).
    pub uploads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl FaultProxy {
    /// Forwards to `upstream` (`http://host:port`); uploads whose object name ends with
    /// `object` fail `times` times with 503.
    pub fn start(upstream: String, object: &str, times: u32) -> FaultProxy {
        let remaining = Arc::new(AtomicU32::new(times));
        let failed = Arc::new(AtomicU32::new(0));
        let uploads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let object = object.to_string();
        let (rem, fail, seen) = (remaining.clone(), failed.clone(), uploads.clone());
        let client = reqwest::Client::new();
        let server = Server::start_async(move |req| {
            let (client, upstream, object) = (client.clone(), upstream.clone(), object.clone());
            let (rem, fail, seen) = (rem.clone(), fail.clone(), seen.clone());
            async move { handle(req, &client, &upstream, &object, &rem, &fail, &seen).await }
        });
        FaultProxy {
            server,
            remaining,
            failed,
            uploads,
        }
    }

    pub fn host(&self) -> String {
        self.server.url()
    }

    pub fn failed(&self) -> u32 {
        self.failed.load(Ordering::SeqCst)
    }
}

async fn handle(
    req: Request,
    client: &reqwest::Client,
    upstream: &str,
    object: &str,
    remaining: &AtomicU32,
    failed: &AtomicU32,
    seen: &std::sync::Mutex<Vec<String>>,
) -> Reply {
    let query = req.query().replace("%2F", "/");
    let is_upload = req.method == hyper::Method::POST && req.path().starts_with("/upload/");
    let names_object = query.split('&').any(|kv| {
        kv.strip_prefix("name=")
            .is_some_and(|n| n.ends_with(object))
    });
    if is_upload {
        seen.lock().unwrap().push(query.clone());
    } else if req.method == hyper::Method::GET {
        let path = req.path().replace("%2F", "/");
        seen.lock().unwrap().push(format!("GET {path}?{query}"));
    }
    // The whole request is read before this runs, as a server does before it answers.
    let Request {
        method,
        uri,
        headers,
        body,
        ..
    } = req;
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
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut fwd = client.request(method, url).body(body);
    for (k, v) in &headers {
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
