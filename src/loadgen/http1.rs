//! A lean HTTP/1.1 keep-alive client for the hot path: the request bytes are built once,
//! written with one `write_all`, and the reply is parsed incrementally as it arrives
//! (`ReplyParser`: Content-Length, chunked, or read-to-close bodies). No per-request
//! allocation.
//!
//! The server is not trusted: every size read from the wire is checked, the bytes held for
//! one reply are capped (`Limits`), body bytes are inspected and dropped as they arrive
//! (never stored whole), and anything the parser cannot make sense of is an `ErrorKind`,
//! never a panic. A connection task that dies anyway still records its request
//! (`Pending`, `CatchUnwind`), so the report's counts add up.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::engine::Ctx;
use super::pending::Pending;
use super::record::ErrorKind;

/// Default cap on a reply's status line and headers (with any 1xx replies and trailers).
pub const DEFAULT_MAX_HEAD: usize = 64 << 10;
/// Default cap on a reply's body.
pub const DEFAULT_MAX_BODY: u64 = 64 << 20;
/// A chunk-size line: 16 hex digits already exceed any size we accept; the rest would be
/// chunk extensions, which nobody sends to a predict client.
const MAX_CHUNK_LINE: usize = 1024;
/// Header fields per reply (TF Serving sends a handful).
const MAX_HEADERS: usize = 64;
/// Spare room kept in the receive buffer for each read.
const READ_ROOM: usize = 16 << 10;

/// Caps on what one reply may make the client hold or read. Exceeding one is `malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Status line and headers, plus any 1xx interim replies and chunked trailers.
    pub max_head: usize,
    /// The body, however it is framed.
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: DEFAULT_MAX_HEAD,
            max_body: DEFAULT_MAX_BODY,
        }
    }
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

/// Where the parser is within one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a complete status line and headers.
    Head,
    /// A Content-Length body with this many bytes still to come.
    Length(u64),
    /// No framing: the body ends when the server closes.
    UntilClose,
    /// Chunked: waiting for a chunk-size line.
    ChunkSize,
    /// Chunked: this many bytes of chunk data still to come.
    ChunkData(u64),
    /// Chunked: the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: trailer lines up to the blank line after the last chunk.
    Trailers,
    Done,
}

/// Finds `"predictions"` or `"outputs"` in a body that arrives in pieces, keeping only the
/// last few bytes of the previous piece (a match may straddle two reads).
#[derive(Debug, Clone, Copy)]
struct BodyMatch {
    found: bool,
    carry: [u8; CARRY],
    carry_len: usize,
}

const NEEDLES: [&[u8]; 2] = [b"\"predictions\"", b"\"outputs\""];
/// The longest needle less one byte: enough context to see a match across a boundary.
const CARRY: usize = 12;

fn contains_needle(hay: &[u8]) -> bool {
    // Both needles start with `"`: jump from quote to quote.
    let mut from = 0;
    while let Some(off) = hay
        .get(from..)
        .and_then(|h| h.iter().position(|&b| b == b'"'))
    {
        let at = from + off;
        let tail = hay.get(at..).unwrap_or_default();
        if NEEDLES.iter().any(|n| tail.starts_with(n)) {
            return true;
        }
        from = at + 1;
    }
    false
}

impl BodyMatch {
    const fn new() -> Self {
        BodyMatch {
            found: false,
            carry: [0; CARRY],
            carry_len: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.found || data.is_empty() {
            return;
        }
        // The seam: the carried tail of earlier pieces and the start of this one.
        let head = data.len().min(CARRY);
        let mut seam = [0u8; 2 * CARRY];
        let carry_len = self.carry_len.min(CARRY);
        seam[..carry_len].copy_from_slice(&self.carry[..carry_len]);
        seam[carry_len..carry_len + head].copy_from_slice(&data[..head]);
        let seam = &seam[..carry_len + head];
        if contains_needle(seam) || contains_needle(data) {
            self.found = true;
            return;
        }
        // Keep the last CARRY bytes of everything seen so far.
        let keep = if data.len() >= CARRY {
            &data[data.len() - CARRY..]
        } else {
            &seam[seam.len().saturating_sub(CARRY)..]
        };
        self.carry[..keep.len()].copy_from_slice(keep);
        self.carry_len = keep.len();
    }
}

/// An incremental HTTP/1.1 reply parser: `feed` it the unconsumed bytes as they arrive; it
/// consumes what it has understood and remembers where it is, so no byte is parsed twice
/// (a head is handed to httparse once, when its end has been seen).
#[derive(Debug, Clone)]
pub struct ReplyParser {
    limits: Limits,
    state: State,
    /// Head bytes consumed for this reply so far (interim replies, trailers).
    head_bytes: usize,
    /// Where the search for the end of the head resumes in the unconsumed bytes.
    scan: usize,
    /// The status line of the head being received has been checked.
    line_checked: bool,
    status: u16,
    keep_alive: bool,
    body_bytes: u64,
    body: BodyMatch,
}

/// The index just past the blank line ending a head (`\n\n` or `\n\r\n`), searching from
/// `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let at = i + buf.get(i..)?.iter().position(|&b| b == b'\n')?;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => i = at + 1,
        }
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A decimal number of at most u64, digits only (`+5`, `-1`, `5x` and overflow are `None`).
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// A Content-Length value; a list (`5, 5`, from merged duplicates) must repeat one number.
fn content_length(v: &[u8]) -> Option<u64> {
    let mut out = None;
    for part in v.split(|&b| b == b',') {
        let n = decimal(trim_ows(part))?;
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// A chunk-size line without its line ending: hex digits, then optional `;extensions`.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = trim_ows(size);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(d))
    })
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
}

/// A line ending at the first `\n` of `buf`: (the line without `\r\n`, bytes used).
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let l = buf.get(..nl)?;
    Some((l.strip_suffix(b"\r").unwrap_or(l), nl + 1))
}

impl ReplyParser {
    pub fn new(limits: Limits) -> Self {
        ReplyParser {
            limits,
            state: State::Head,
            head_bytes: 0,
            scan: 0,
            line_checked: false,
            status: 0,
            keep_alive: false,
            body_bytes: 0,
            body: BodyMatch::new(),
        }
    }

    /// Readies the parser for the next reply on the connection.
    pub fn reset(&mut self) {
        *self = ReplyParser::new(self.limits);
    }

    fn reply(&self) -> Reply {
        Reply {
            status: self.status,
            keep_alive: self.keep_alive,
            body_ok: self.status == 200 && self.body.found,
        }
    }

    /// Parses what it can of `buf` (the bytes received and not yet consumed). Returns how
    /// many bytes it consumed (the caller drops them) and the reply once it is complete.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, Option<Reply>), ErrorKind> {
        let mut pos = 0;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            match self.state {
                State::Done => return Ok((pos, Some(self.reply()))),
                State::Head => match self.head(rest)? {
                    Some(used) => pos += used,
                    None => return Ok((pos, None)),
                },
                State::Length(left) | State::ChunkData(left) => {
                    let take = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    self.body(rest.get(..take).unwrap_or_default())?;
                    pos += take;
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), n) => State::Length(n),
                        (_, 0) => State::ChunkEnd,
                        (_, n) => State::ChunkData(n),
                    };
                    if left > 0 {
                        return Ok((pos, None));
                    }
                }
                State::UntilClose => {
                    self.body(rest)?;
                    return Ok((buf.len(), None));
                }
                State::ChunkSize => {
                    let Some((l, used)) = line(rest) else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(ErrorKind::Malformed);
                        }
                        return Ok((pos, None));
                    };
                    if used > MAX_CHUNK_LINE {
                        return Err(ErrorKind::Malformed);
                    }
                    let size = chunk_size(l).ok_or(ErrorKind::Malformed)?;
                    if self
                        .body_bytes
                        .checked_add(size)
                        .is_none_or(|total| total > self.limits.max_body)
                    {
                        return Err(ErrorKind::Malformed);
                    }
                    pos += used;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::ChunkSize;
                    }
                    [b'\n', ..] => {
                        pos += 1;
                        self.state = State::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok((pos, None)),
                    _ => return Err(ErrorKind::Malformed),
                },
                State::Trailers => {
                    let Some((l, used)) = line(rest) else {
                        if self.head_bytes.saturating_add(rest.len()) > self.limits.max_head {
                            return Err(ErrorKind::Malformed);
                        }
                        return Ok((pos, None));
                    };
                    self.head_bytes = self.head_bytes.saturating_add(used);
                    if self.head_bytes > self.limits.max_head {
                        return Err(ErrorKind::Malformed);
                    }
                    pos += used;
                    if l.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// The peer closed the connection: completes a read-to-close body; anything else was
    /// cut short.
    pub fn finish(&mut self) -> Result<Reply, ErrorKind> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                self.keep_alive = false;
                Ok(self.reply())
            }
            _ => Err(ErrorKind::Closed),
        }
    }

    fn body(&mut self, data: &[u8]) -> Result<(), ErrorKind> {
        self.body_bytes = self
            .body_bytes
            .checked_add(data.len() as u64)
            .filter(|&n| n <= self.limits.max_body)
            .ok_or(ErrorKind::Malformed)?;
        if self.status == 200 {
            self.body.push(data);
        }
        Ok(())
    }

    /// Parses a head once its end is in `rest`; returns the bytes it used, or `None` when
    /// more are needed.
    fn head(&mut self, rest: &[u8]) -> Result<Option<usize>, ErrorKind> {
        let Some(end) = head_end(rest, self.scan) else {
            if self.head_bytes.saturating_add(rest.len()) > self.limits.max_head {
                return Err(ErrorKind::Malformed);
            }
            // Refuse a garbage status line as soon as it is whole, not after the timeout.
            if !self.line_checked && rest.contains(&b'\n') {
                self.line_checked = true;
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                if httparse::Response::new(&mut headers).parse(rest).is_err() {
                    return Err(ErrorKind::Malformed);
                }
            }
            // The blank line may straddle this read and the next.
            self.scan = rest.len().saturating_sub(2);
            return Ok(None);
        };
        if self.head_bytes.saturating_add(end) > self.limits.max_head {
            return Err(ErrorKind::Malformed);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let used = match res.parse(rest.get(..end).unwrap_or_default()) {
            Ok(httparse::Status::Complete(n)) => n,
            // The whole head was given: partial means it does not parse.
            Ok(httparse::Status::Partial) | Err(_) => return Err(ErrorKind::Malformed),
        };
        self.head_bytes = self.head_bytes.saturating_add(used);
        self.scan = 0;
        self.line_checked = false;
        let status = res.code.ok_or(ErrorKind::Malformed)?;
        match status {
            // 101 would switch protocols, which was never asked for.
            0..=99 | 101 => return Err(ErrorKind::Malformed),
            // Interim replies (100 Continue, 103 Early Hints): the real one follows.
            100..=199 => return Ok(Some(used)),
            _ => {}
        }
        self.status = status;
        self.keep_alive = res.version == Some(1);
        let mut length: Option<u64> = None;
        let mut encoded = false;
        let mut chunked = false;
        for h in res.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = content_length(h.value).ok_or(ErrorKind::Malformed)?;
                // Duplicates that disagree: no way to tell where the body ends.
                if length.is_some_and(|l| l != n) {
                    return Err(ErrorKind::Malformed);
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                encoded = true;
                // Chunked counts only as the final coding (RFC 9112 §6.3).
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|t| trim_ows(t).eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                if has_token(h.value, b"close") {
                    self.keep_alive = false;
                } else if has_token(h.value, b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        }
        self.state = if status == 204 || status == 304 {
            State::Done
        } else if encoded {
            // Transfer-Encoding wins over Content-Length, but a reply with both is not to
            // be trusted with the next request.
            if length.is_some() {
                self.keep_alive = false;
            }
            if chunked {
                State::ChunkSize
            } else {
                self.keep_alive = false;
                State::UntilClose
            }
        } else {
            match length {
                Some(n) if n > self.limits.max_body => return Err(ErrorKind::Malformed),
                Some(0) => State::Done,
                Some(n) => State::Length(n),
                None => {
                    self.keep_alive = false;
                    State::UntilClose
                }
            }
        };
        Ok(Some(used))
    }
}

/// Parses a complete reply from `buf` in one go, or `Ok(None)` when more bytes are needed.
/// `eof` says the peer has closed (completes a read-to-close body). Bytes after the reply
/// make it not reusable.
pub fn parse_reply(buf: &[u8], eof: bool) -> Result<Option<Reply>, ErrorKind> {
    let mut p = ReplyParser::new(Limits::default());
    let (used, reply) = p.feed(buf)?;
    match reply {
        Some(mut r) => {
            r.keep_alive &= used == buf.len();
            Ok(Some(r))
        }
        None if eof => p.finish().map(Some),
        None => Ok(None),
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

/// How long a kept-alive connection sits unused before it is checked for a close by the
/// server ahead of the next request.
const IDLE_LOOK: Duration = Duration::from_millis(20);

/// Writes one request and reads its reply. `buf` only ever holds bytes not yet consumed by
/// the parser (a partial head or chunk-size line), so it stays within the head cap plus
/// one read.
async fn exchange(
    s: &mut TcpStream,
    req: &[u8],
    buf: &mut Vec<u8>,
    parser: &mut ReplyParser,
) -> Result<Reply, ErrorKind> {
    s.write_all(req).await.map_err(|e| io_kind(&e))?;
    buf.clear();
    parser.reset();
    loop {
        if buf.capacity() - buf.len() < READ_ROOM / 4 {
            buf.reserve(READ_ROOM);
        }
        let n = s.read_buf(buf).await.map_err(|e| io_kind(&e))?;
        if n == 0 {
            return parser.finish();
        }
        let (used, reply) = parser.feed(buf)?;
        if let Some(mut r) = reply {
            // Bytes nobody asked for: the connection's framing cannot be trusted.
            r.keep_alive &= used == buf.len();
            return Ok(r);
        }
        if used >= buf.len() {
            buf.clear();
        } else if used > 0 {
            buf.drain(..used);
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

/// Runs a future, turning a panic inside it into `Err(())`: the last line of defence at
/// the connection task's boundary, so one bad reply cannot take a connection out of the
/// run (the `Pending` guard records the request it was carrying).
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// One keep-alive connection: takes released requests (or, in a closed-loop stage, makes its
/// own), sends them one at a time, and records each outcome. Reconnects after an error.
/// Should the connection's code panic, the request is recorded and a fresh one starts.
pub async fn worker(
    ctx: Rc<Ctx>,
    addr: SocketAddr,
    requests: Rc<[Vec<u8>]>,
    first: usize,
    limits: Limits,
) {
    let announced = std::cell::Cell::new(false);
    let mut first = first;
    loop {
        // Boxed once per connection task (not per request) so it can be polled under
        // catch_unwind without unsafe pinning.
        let run = Box::pin(connection(&ctx, addr, &requests, first, limits, &announced));
        match CatchUnwind(run).await {
            Ok(()) => return,
            Err(()) => {
                first = first.wrapping_add(1);
                if !announced.get() {
                    announced.set(true);
                    ctx.connected();
                }
                // Do not spin should it keep failing.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(
    ctx: &Ctx,
    addr: SocketAddr,
    requests: &[Vec<u8>],
    first: usize,
    limits: Limits,
    announced: &std::cell::Cell<bool>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_ROOM);
    let mut parser = ReplyParser::new(limits);
    let mut i = first;
    let timeout = ctx.timeout;
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    // Connect before the schedule starts (the run waits for every connection's attempt).
    let mut conn = connect(addr, timeout).await.ok();
    let mut last_done = Instant::now();
    if !announced.get() {
        announced.set(true);
        ctx.connected();
    }
    while let Some(job) = ctx.next_job().await {
        let sent = Instant::now();
        // From here until `finish`, dropping or unwinding still records the request.
        let mut pending = Pending::new(ctx, job, sent);
        let Some(req) = requests.get(i % requests.len().max(1)) else {
            pending.finish(Instant::now(), Err(ErrorKind::Malformed));
            continue;
        };
        i = i.wrapping_add(1);
        ctx.sent(&job, sent);
        let reused = conn.is_some();
        let stream = match conn.as_mut() {
            Some(s) => s,
            None => match connect(addr, timeout).await {
                Ok(s) => conn.insert(s),
                Err(kind) => {
                    pending.finish(Instant::now(), Err(kind));
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
            r = async {
                // A kept-alive connection that sat idle may have been closed by the server
                // (servers close quiet connections; the stand-in after its header-read
                // timeout). Look before sending, as HTTP clients do, so that is not counted as
                // the request's failure; a close that comes after the request was sent still
                // is. Busy connections skip the look (a read syscall).
                if reused && sent.saturating_duration_since(last_done) >= IDLE_LOOK {
                    let mut probe = [0u8; 1];
                    match stream.try_read(&mut probe) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // End of stream, stray bytes or an error: not fit for a request.
                        _ => *stream = connect(addr, timeout).await?,
                    }
                }
                exchange(stream, req, &mut buf, &mut parser).await
            } => r,
            _ = &mut sleep => Err(ErrorKind::Timeout),
        };
        let done = Instant::now();
        last_done = done;
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
        // A buffer grown by one large head goes back to its usual size.
        if buf.capacity() > 4 * READ_ROOM {
            buf = Vec::with_capacity(READ_ROOM);
        }
        pending.finish(done, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(keep_alive: bool) -> Reply {
        Reply {
            status: 200,
            keep_alive,
            body_ok: true,
        }
    }

    /// Feeds `pieces` the way `exchange` does (dropping consumed bytes), then the close if
    /// `eof`. Also checks that the unconsumed bytes stay bounded.
    fn feed_pieces(
        limits: Limits,
        pieces: &[&[u8]],
        eof: bool,
    ) -> Result<Option<Reply>, ErrorKind> {
        let mut p = ReplyParser::new(limits);
        let mut buf = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            let (used, reply) = p.feed(&buf)?;
            if let Some(r) = reply {
                return Ok(Some(r));
            }
            buf.drain(..used.min(buf.len()));
            assert!(
                buf.len() <= limits.max_head + MAX_CHUNK_LINE + piece.len(),
                "holding {} bytes",
                buf.len()
            );
        }
        if eof { p.finish().map(Some) } else { Ok(None) }
    }

    #[test]
    fn content_length_replies_parse_when_complete() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{\"predictions\": [[0.4213]]}";
        assert_eq!(parse_reply(&r[..r.len() - 3], false), Ok(None));
        assert_eq!(parse_reply(r, false), Ok(Some(ok(true))));
    }

    #[test]
    fn chunked_replies_are_reassembled() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"pre\r\n11\r\ndictions\": [[1]]}\r\n0\r\n\r\n";
        let got = parse_reply(r, false).unwrap().unwrap();
        assert!(got.body_ok && got.keep_alive);
        assert_eq!(parse_reply(&r[..r.len() - 4], false), Ok(None));
        let with_trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1b;x=y\r\n{\"predictions\": [[0.4213]]}\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(parse_reply(with_trailers, false), Ok(Some(ok(true))));
    }

    #[test]
    fn statuses_close_and_garbage_are_told_apart() {
        let r =
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
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

    #[test]
    fn a_garbage_status_line_is_refused_before_the_head_ends() {
        assert_eq!(
            parse_reply(b"SSH-2.0-OpenSSH_9.6\r\n", false),
            Err(ErrorKind::Malformed)
        );
        assert_eq!(
            parse_reply(b"HTTP/1.1 2x0 OK\r\n", false),
            Err(ErrorKind::Malformed)
        );
        assert_eq!(
            parse_reply(b"HTTP/1.1 042 Odd\r\nContent-Length: 0\r\n\r\n", false),
            Err(ErrorKind::Malformed)
        );
    }

    #[test]
    fn chunk_sizes_that_overflow_or_exceed_the_cap_are_malformed() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for size in [
            "FFFFFFFFFFFFFFFF",
            "10000000000000000",
            "123456789abcdef0123",
            "4000001",
            "",
            "zz",
            "-1",
        ] {
            let r = [&head[..], size.as_bytes(), b"\r\nx"].concat();
            assert_eq!(parse_reply(&r, false), Err(ErrorKind::Malformed), "{size}");
        }
        // A chunk-size line that never ends.
        let r = [&head[..], &[b'0'; MAX_CHUNK_LINE + 1][..]].concat();
        assert_eq!(parse_reply(&r, false), Err(ErrorKind::Malformed));
        // Chunk data not followed by CRLF.
        let r = [&head[..], b"2\r\n{}XX0\r\n\r\n"].concat();
        assert_eq!(parse_reply(&r, false), Err(ErrorKind::Malformed));
        // Chunks that add up past the cap.
        let small = Limits {
            max_head: 1024,
            max_body: 10,
        };
        let r = [&head[..], b"6\r\n123456\r\n6\r\n123456\r\n"].concat();
        assert_eq!(feed_pieces(small, &[&r], false), Err(ErrorKind::Malformed));
    }

    #[test]
    fn content_length_must_be_one_plain_number_within_the_cap() {
        let with = |cl: &str| format!("HTTP/1.1 200 OK\r\n{cl}\r\n\r\n");
        for cl in [
            "Content-Length: 99999999999999999999999",
            "Content-Length: -1",
            "Content-Length: +5",
            "Content-Length: 5x",
            "Content-Length:",
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: 5, 6",
            "Content-Length: 67108865",
        ] {
            assert_eq!(
                parse_reply(with(cl).as_bytes(), false),
                Err(ErrorKind::Malformed),
                "{cl}"
            );
        }
        // Agreeing duplicates are tolerated (RFC 9110 §8.6).
        let r = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\ncontent-length: 13, 13\r\n\r\n{\"outputs\":1}";
        assert_eq!(parse_reply(r.as_bytes(), false), Ok(Some(ok(true))));
    }

    #[test]
    fn an_endless_head_or_body_is_cut_off_at_the_cap() {
        let small = Limits {
            max_head: 256,
            max_body: 1000,
        };
        let endless_head = [
            &b"HTTP/1.1 200 OK\r\n"[..],
            &b"X-Pad: aaaaaaaa\r\n".repeat(20),
        ]
        .concat();
        assert_eq!(
            feed_pieces(small, &[&endless_head], false),
            Err(ErrorKind::Malformed)
        );
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let kib = [b'x'; 100];
        let mut pieces: Vec<&[u8]> = vec![head];
        pieces.extend(std::iter::repeat_n(&kib[..], 11));
        assert_eq!(
            feed_pieces(small, &pieces, false),
            Err(ErrorKind::Malformed)
        );
        // Within the cap it is a read-to-close body.
        assert!(feed_pieces(small, &pieces[..5], true).is_ok());
    }

    #[test]
    fn interim_replies_are_skipped_and_101_is_refused() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"outputs\":1}";
        assert_eq!(parse_reply(r, false), Ok(Some(ok(true))));
        assert_eq!(
            parse_reply(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            Err(ErrorKind::Malformed)
        );
        // Endless interim replies count against the head cap.
        let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(4000);
        assert_eq!(parse_reply(&many, false), Err(ErrorKind::Malformed));
    }

    #[test]
    fn a_close_mid_reply_is_closed_and_extra_bytes_end_keep_alive() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"pre";
        assert_eq!(parse_reply(r, true), Err(ErrorKind::Closed));
        assert_eq!(parse_reply(b"HTTP/1.1 200", true), Err(ErrorKind::Closed));
        assert_eq!(parse_reply(b"", true), Err(ErrorKind::Closed));
        let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"outputs\":1}HTTP/1.1";
        assert_eq!(parse_reply(extra, false), Ok(Some(ok(false))));
        // Both framings: chunked wins, the connection is not reused.
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"outputs\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_reply(both, false), Ok(Some(ok(false))));
    }

    #[test]
    fn a_needle_split_across_reads_is_found() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{\"predictions\": [[0.4213]]}";
        for cut in 0..r.len() {
            for cut2 in cut..r.len() {
                let got = feed_pieces(
                    Limits::default(),
                    &[&r[..cut], &r[cut..cut2], &r[cut2..]],
                    false,
                );
                assert_eq!(got, Ok(Some(ok(true))), "cuts {cut} {cut2}");
            }
        }
    }

    /// A valid reply: a body framed by Content-Length, chunks of the given sizes, or the
    /// close, with or without the predict member.
    fn encode(body: &[u8], framing: u8, chunks: &[usize]) -> (Vec<u8>, bool) {
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_vec();
        match framing % 3 {
            0 => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
                (out, false)
            }
            1 => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = body;
                for &c in chunks.iter().cycle().take(body.len() + 1) {
                    if rest.is_empty() {
                        break;
                    }
                    let n = c.clamp(1, rest.len());
                    out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                out.extend_from_slice(b"0\r\n\r\n");
                (out, false)
            }
            _ => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(body);
                (out, true)
            }
        }
    }

    fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut out = Vec::new();
        let mut prev = 0;
        for c in at {
            out.push(&bytes[prev..c]);
            prev = c;
        }
        out.push(&bytes[prev..]);
        out
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_in_arbitrary_pieces_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            eof in any::<bool>(),
        ) {
            let small = Limits { max_head: 512, max_body: 1024 };
            let _ = feed_pieces(small, &split(&bytes, &cuts), eof);
            let _ = parse_reply(&bytes, eof);
        }

        #[test]
        fn hostile_looking_replies_never_panic(
            prefix in proptest::sample::select(vec![
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: ",
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
                "HTTP/1.0 200 OK\r\n\r\n",
            ]),
            tail in "[0-9a-fA-F;\r\n :xX\"-]{0,200}",
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            eof in any::<bool>(),
        ) {
            let bytes = [prefix.as_bytes(), tail.as_bytes()].concat();
            let small = Limits { max_head: 256, max_body: 512 };
            let _ = feed_pieces(small, &split(&bytes, &cuts), eof);
        }

        #[test]
        fn valid_replies_parse_the_same_however_they_are_split(
            body in "[a-z{}\\[\\]\":, 0-9]{0,300}",
            predict in any::<bool>(),
            framing in any::<u8>(),
            chunks in proptest::collection::vec(1usize..40, 1..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let body = if predict { format!("{{\"predictions\": [{body}]}}") } else { body };
            let (bytes, needs_close) = encode(body.as_bytes(), framing, &chunks);
            let got = feed_pieces(Limits::default(), &split(&bytes, &cuts), needs_close);
            let expect_ok = body.contains("\"predictions\"") || body.contains("\"outputs\"");
            prop_assert_eq!(got, Ok(Some(Reply { status: 200, keep_alive: !needs_close, body_ok: expect_ok })));
        }
    }
}
