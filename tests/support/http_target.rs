//! A small hyper HTTP/1.1 server on 127.0.0.1:0 answering TF Serving predict requests with
//! controllable misbehaviour: a fixed delay, periodic freezes, 503s and dropped connections.
//! Include with `#[path = "support/http_target.rs"] mod http_target;`. Stops on drop.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Added to every reply.
    pub delay: Duration,
    /// `(period, frozen)`: the last `frozen` of every `period` (from the server's start) the
    /// server answers nothing; requests arriving then are answered when the freeze ends.
    pub freeze: Option<(Duration, Duration)>,
    /// Every Nth request (1-based) gets a 503 (0 = never).
    pub status_503_every: u64,
    /// Every Nth request (1-based) has its connection closed without a reply (0 = never).
    pub drop_every: u64,
}

pub struct HttpTarget {
    pub port: u16,
    /// Requests received (including dropped ones).
    pub requests: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpTarget {
    pub fn start(behaviour: Behaviour) -> HttpTarget {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let counter = requests.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let t0 = Instant::now();
                let behaviour = Arc::new(behaviour);
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let _ = stream.set_nodelay(true);
                            let b = behaviour.clone();
                            let counter = counter.clone();
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(move |req| {
                                    handle(req, b.clone(), counter.clone(), t0)
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .keep_alive(true)
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        HttpTarget {
            port,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    req: Request<hyper::body::Incoming>,
    b: Arc<Behaviour>,
    counter: Arc<AtomicU64>,
    t0: Instant,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    let _ = req.into_body().collect().await;
    if let Some((period, frozen)) = b.freeze {
        let since = t0.elapsed();
        let phase = Duration::from_nanos((since.as_nanos() % period.as_nanos()) as u64);
        if phase >= period - frozen {
            tokio::time::sleep(period - phase).await;
        }
    }
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await;
    }
    if b.drop_every > 0 && n % b.drop_every == 0 {
        // hyper closes the connection without a reply when the service fails.
        return Err(Dropped);
    }
    if b.status_503_every > 0 && n % b.status_503_every == 0 {
        return Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"error\": \"overloaded\"}")))
            .unwrap());
    }
    let _: Option<Infallible> = None;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"predictions\": [[0.4213]]}")))
        .unwrap())
}
