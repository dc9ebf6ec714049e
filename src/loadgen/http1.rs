//! A lean HTTP/1.1 keep-alive client for the hot path: the request bytes are built once,
//! written with one `write_all`, and the reply is parsed in place with `httparse`
//! (Content-Length, chunked, or read-to-close bodies). No per-request allocation.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::engine::Ctx;
use super::record::ErrorKind;

/// The position of `needle` in `hay` (bodies and header values here are short).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One parsed reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The connection may carry another request.
    pub keep_alive: bool,
    /// A 200 reply whose body looks like a predict reply (`predictions` or `outputs`).
    pub body_ok: bool,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Parses a complete reply from `buf`, or `Ok(None)` when more bytes are needed.
/// `eof` says the peer has closed (completes a read-to-close body).
pub fn parse_reply(buf: &[u8], eof: bool) -> Result<Option<Reply>, ErrorKind> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if eof {
                Err(ErrorKind::Closed)
            } else {
                Ok(None)
            };
        }
        Err(_) => return Err(ErrorKind::Malformed),
    };
    let status = res.code.ok_or(ErrorKind::Malformed)?;
    let mut keep_alive = res.version == Some(1);
    let mut framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or(ErrorKind::Malformed)?;
            framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if find(&h.value.to_ascii_lowercase(), b"chunked").is_some() {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.to_ascii_lowercase();
            if find(&v, b"close").is_some() {
                keep_alive = false;
            } else if find(&v, b"keep-alive").is_some() {
                keep_alive = true;
            }
        }
    }
    let rest = &buf[head_len..];
    let body_ok = |body: &[u8]| {
        status == 200
            && (find(body, b"\"predictions\"").is_some()
                || find(body, b"\"outputs\"").is_some())
    };
    match framing {
        Framing::Length(n) => {
            if rest.len() < n {
                return if eof {
                    Err(ErrorKind::Closed)
                } else {
                    Ok(None)
                };
            }
            Ok(Some(Reply {
                status,
                keep_alive,
                body_ok: body_ok(&rest[..n]),
            }))
        }
        Framing::UntilClose => {
            if !eof {
                return Ok(None);
            }
            Ok(Some(Reply {
                status,
                keep_alive: false,
                body_ok: body_ok(rest),
            }))
        }
        Framing::Chunked => {
            let mut pos = 0;
            let mut body = Vec::new();
            loop {
                match httparse::parse_chunk_size(&rest[pos..]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        let size = size as usize;
                        let start = pos + used;
                        if size == 0 {
                            // Last chunk: skip optional trailers up to the blank line.
                            let tail = &rest[start..];
                            if tail.starts_with(b"\r\n") {
                                break;
                            }
                            if find(tail, b"\r\n\r\n").is_some() {
                                break;
                            }
                            return if eof {
                                Err(ErrorKind::Closed)
                            } else {
                                Ok(None)
                            };
                        }
                        if rest.len() < start + size + 2 {
                            return if eof {
                                Err(ErrorKind::Closed)
                            } else {
                                Ok(None)
                            };
                        }
                        body.extend_from_slice(&rest[start..start + size]);
                        if &rest[start + size..start + size + 2] != b"\r\n" {
                            return Err(ErrorKind::Malformed);
                        }
                        pos = start + size + 2;
                    }
                    Ok(httparse::Status::Partial) => {
                        return if eof {
                            Err(ErrorKind::Closed)
                        } else {
                            Ok(None)
                        };
                    }
                    Err(_) => return Err(ErrorKind::Malformed),
                }
            }
            Ok(Some(Reply {
                status,
                keep_alive,
                body_ok: body_ok(&body),
            }))
        }
    }
}

fn io_kind(e: &io::Error) -> ErrorKind {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof | K::ConnectionAborted => {
            ErrorKind::Closed
        }
        K::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Io,
    }
}

/// Writes one request and reads its reply.
async fn exchange(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> Result<Reply, ErrorKind> {
    s.write_all(req).await.map_err(|e| io_kind(&e))?;
    buf.clear();
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8192);
        }
        let n = s.read_buf(buf).await.map_err(|e| io_kind(&e))?;
        if let Some(r) = parse_reply(buf, n == 0)? {
            return Ok(r);
        }
        if n == 0 {
            return Err(ErrorKind::Closed);
        }
    }
}

pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ErrorKind> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            // Requests are written whole; Nagle would only delay them.
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(_)) => Err(ErrorKind::Connect),
        Err(_) => Err(ErrorKind::Connect),
    }
}

/// One keep-alive connection: takes released requests (or, in a closed-loop stage, makes its
/// own), sends them one at a time, and records each outcome. Reconnects after an error.
pub async fn worker(ctx: Rc<Ctx>, addr: SocketAddr, requests: Rc<[Vec<u8>]>, first: usize) {
    let mut conn: Option<TcpStream> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut i = first;
    let timeout = ctx.timeout;
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    while let Some(job) = ctx.next_job().await {
        let req = &requests[i % requests.len()];
        i = i.wrapping_add(1);
        let sent = Instant::now();
        ctx.sent(&job, sent);
        let stream = match conn.as_mut() {
            Some(s) => s,
            None => match connect(addr, timeout).await {
                Ok(s) => conn.insert(s),
                Err(kind) => {
                    ctx.done(&job, sent, Instant::now(), Err(kind));
                    // Do not spin on a refusing server: the schedule keeps its own time.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        sleep
            .as_mut()
            .reset(tokio::time::Instant::from_std(sent + timeout));
        let outcome = tokio::select! {
            biased;
            r = exchange(stream, req, &mut buf) => r,
            _ = &mut sleep => Err(ErrorKind::Timeout),
        };
        let done = Instant::now();
        let result = match outcome {
            Ok(reply) => {
                if !reply.keep_alive {
                    conn = None;
                }
                if reply.status != 200 {
                    Err(ErrorKind::Http(reply.status))
                } else if !reply.body_ok {
                    Err(ErrorKind::Malformed)
                } else {
                    Ok(())
                }
            }
            Err(kind) => {
                conn = None;
                Err(kind)
            }
        };
        ctx.done(&job, sent, done, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_replies_parse_when_complete() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{\"predictions\": [[0.4213]]}";
        assert_eq!(parse_reply(&r[..r.len() - 3], false), Ok(None));
        assert_eq!(
            parse_reply(r, false),
            Ok(Some(Reply {
                status: 200,
                keep_alive: true,
                body_ok: true
            }))
        );
    }

    #[test]
    fn chunked_replies_are_reassembled() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"pre\r\n11\r\ndictions\": [[1]]}\r\n0\r\n\r\n";
        let got = parse_reply(r, false).unwrap().unwrap();
        assert!(got.body_ok && got.keep_alive);
        assert_eq!(parse_reply(&r[..r.len() - 4], false), Ok(None));
    }

    #[test]
    fn statuses_close_and_garbage_are_told_apart() {
        let r = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let got = parse_reply(r, false).unwrap().unwrap();
        assert_eq!((got.status, got.keep_alive), (503, false));
        assert_eq!(
            parse_reply(b"SSH-2.0-OpenSSH\r\n\r\n", false),
            Err(ErrorKind::Malformed)
        );
        let ok_not_predict = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert!(!parse_reply(ok_not_predict, false).unwrap().unwrap().body_ok);
        let until_close = b"HTTP/1.0 200 OK\r\n\r\n{\"outputs\": 1}";
        assert_eq!(parse_reply(until_close, false), Ok(None));
        assert!(parse_reply(until_close, true).unwrap().unwrap().body_ok);
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{", true),
            Err(ErrorKind::Closed)
        );
    }
}
