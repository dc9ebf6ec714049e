//! Socket-level defences shared by the REST and gRPC listeners: a cap on open connections,
//! back-off when `accept` fails (EMFILE must not turn the loop into a spin), and a deadline on
//! every connection that goes quiet (before it has sent a request's first bytes: the header-read
//! timeout; after: the idle timeout), which also ends peers that stop reading what they are sent.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};

/// Limits on connections, set from flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLimits {
    /// Open connections per listener; more wait in the kernel's backlog until one closes.
    pub max_connections: usize,
    /// Time a client has to send a whole HTTP/1 request head (and, as hyper applies it, to
    /// start the next request on a kept-alive connection); also the time to send a first byte.
    pub header_read_timeout: Duration,
    /// Time a connection may go with no byte read or written before it is closed.
    pub idle_timeout: Duration,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_connections: 1024,
            // hyper's own default for HTTP/1 headers.
            header_read_timeout: Duration::from_secs(30),
            // Long enough that HTTP/2 keep-alive pings (every 60 s) keep a live client's
            // channel open; it only ends peers that answer nothing.
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// HTTP/2 keep-alive: a ping after this much quiet, and the connection closes if it goes
/// unanswered for [`H2_KEEPALIVE_TIMEOUT`].
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Concurrent streams per HTTP/2 connection (hyper's default, stated so it is a decision).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 200;

/// A connection is under the header-read deadline until it has sent this many bytes: the
/// length of the HTTP/2 client preface, and less than any HTTP/1 request head. Past it, hyper's
/// own header timeout (HTTP/1) or keep-alive pings (HTTP/2) take over, with the idle timeout
/// behind them.
const STARTED_AFTER: usize = 24;

const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Errors that concern one connection that went away before it was accepted; the next
/// `accept` can go ahead at once.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Accepts connections under the limits.
pub struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: NetLimits,
    what: &'static str,
    /// The current back-off and how many accept errors in a row led to it.
    backoff: Option<Duration>,
    failures: u64,
}

impl Acceptor {
    pub fn new(listener: TcpListener, limits: NetLimits, what: &'static str) -> Self {
        Acceptor {
            listener,
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            what,
            backoff: None,
            failures: 0,
        }
    }

    /// The next connection, once a slot is free. Never returns an error: failures other than
    /// a vanished peer (EMFILE, ENFILE, ENOBUFS…) are logged once per streak and waited out
    /// with a growing pause.
    pub async fn accept(&mut self) -> Guarded {
        loop {
            let permit = match self.permits.clone().acquire_owned().await {
                Ok(p) => p,
                // Only a closed semaphore fails, and this one is never closed; start afresh.
                Err(_) => {
                    self.permits = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
                    continue;
                }
            };
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    if self.failures > 0 {
                        eprintln!(
                            "benchstack serve: {} accepting connections again after {} failed attempts",
                            self.what, self.failures
                        );
                    }
                    self.backoff = None;
                    self.failures = 0;
                    let _ = stream.set_nodelay(true);
                    return Guarded::new(stream, permit, self.limits);
                }
                Err(e) if per_connection(&e) => continue,
                Err(e) => {
                    drop(permit);
                    self.failures += 1;
                    let delay = match self.backoff {
                        None => {
                            eprintln!(
                                "benchstack serve: {} cannot accept connections: {e}; retrying with back-off up to {:?}",
                                self.what, BACKOFF_MAX
                            );
                            BACKOFF_START
                        }
                        Some(d) => (d * 2).min(BACKOFF_MAX),
                    };
                    self.backoff = Some(delay);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Feeds accepted connections to a stream (what tonic's `serve_with_incoming` takes);
    /// stops, closing the listener, when the stream is dropped.
    pub fn into_stream(
        mut self,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<Guarded, io::Error>> {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    conn = self.accept() => {
                        if tx.send(Ok(conn)).await.is_err() {
                            break;
                        }
                    }
                    _ = tx.closed() => break,
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// A TCP connection that holds a connection slot until dropped and fails its reads and
/// writes with `TimedOut` once it has been quiet past its deadline.
pub struct Guarded {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    limits: NetLimits,
    /// Bytes read so far, up to [`STARTED_AFTER`] (switches the deadline from header to idle).
    read: usize,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit, limits: NetLimits) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            _permit: permit,
            limits,
            read: 0,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + limits.header_read_timeout)),
        }
    }

    fn deadline(&self) -> Instant {
        let allowed = if self.read >= STARTED_AFTER {
            self.limits.idle_timeout
        } else {
            self.limits.header_read_timeout
        };
        self.last_activity + allowed
    }

    /// Called when the socket has no data to give or no room to take: true once the quiet
    /// has lasted past the deadline. The timer is moved only when it fires early, so busy
    /// connections do not touch the timer wheel on every read.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.deadline();
            if Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the connection was quiet past its deadline",
        )
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    self.read = self.read.saturating_add(n).min(STARTED_AFTER);
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            // A peer that stops reading fills the send buffer; it gets the same deadline.
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            other => other,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::Connected::connect_info(&self.inner)
    }
}

/// Raises the soft open-file limit to the hard one, so the connection cap (not EMFILE) is
/// what bounds connections. Failure only means the back-off above does the bounding.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max: usize, header_ms: u64, idle_ms: u64) -> NetLimits {
        NetLimits {
            max_connections: max,
            header_read_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_ended_and_its_slot_freed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut acceptor = Acceptor::new(listener, limits(1, 50, 50), "test");
        let _client = TcpStream::connect(addr).await.unwrap();
        let mut conn = acceptor.accept().await;
        let mut buf = [0u8; 8];
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // The only slot is held until the timed-out connection is dropped.
        assert_eq!(acceptor.permits.available_permits(), 0);
        drop(conn);
        assert_eq!(acceptor.permits.available_permits(), 1);
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut conn = acceptor.accept().await;
        second.write_all(b"hi").await.unwrap();
        let n = conn.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hi");
        // Two bytes do not start a request: the header deadline still ends the connection.
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
