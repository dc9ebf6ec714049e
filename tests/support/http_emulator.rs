//! The HTTP plumbing the loopback emulators share, so each emulator file holds only the
//! service it models. A test that includes an emulator built on it includes it once, beside
//! the emulators: `#[path = "support/http_emulator.rs"] mod http_emulator;`; the emulators
//! use it as `crate::http_emulator`.
//!
//! `Server::start` listens on 127.0.0.1:0 and serves HTTP/1.1 with hyper from a thread
//! with its own current-thread tokio runtime. The handler sees each request with its whole
//! body read; a body that cannot be read (the peer broke the stream) is answered 400 and
//! never reaches the handler. Dropping the `Server` stops accepting and joins the thread.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Response, StatusCode, Uri};
use serde_json::Value;

pub type Reply = Response<Full<Bytes>>;

/// One request, its body read.
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The address the server listens on (for the absolute URLs a service puts in answers).
    pub local_addr: SocketAddr,
}

impl Request {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query string without `?` ("" when there is none).
    pub fn query(&self) -> &str {
        self.uri.query().unwrap_or("")
    }

    /// A header's value as text ("" when absent or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A loopback HTTP/1.1 server in a thread of its own; stops on drop.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves every request with `handler`.
    pub fn start<H>(handler: H) -> Server
    where
        H: Fn(Request) -> Reply + Send + Sync + 'static,
    {
        Server::start_async(move |req| std::future::ready(handler(req)))
    }

    /// Serves every request with an async `handler` (one that itself awaits, e.g. calls
    /// another emulator).
    pub fn start_async<H, F>(handler: H) -> Server
    where
        H: Fn(Request) -> F + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let handler = handler.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req: hyper::Request<Incoming>| {
                                    let handler = handler.clone();
                                    async move { Ok::<_, Infallible>(serve(&*handler, addr, req).await) }
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
        Server {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve<H, F>(handler: &H, local_addr: SocketAddr, req: hyper::Request<Incoming>) -> Reply
where
    H: Fn(Request) -> F,
    F: Future<Output = Reply>,
{
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            "unreadable body",
        );
    };
    handler(Request {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
        local_addr,
    })
    .await
}

/// A response with `status`, one `content-type` and `body`.
pub fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap()
}

/// `body` as JSON with the content type Google's APIs send.
pub fn json(status: StatusCode, body: &Value) -> Reply {
    reply(status, "application/json; charset=UTF-8", body.to_string())
}

/// A status from a number the emulator itself chose (a bad one is a bug in the emulator).
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("an HTTP status code")
}
