//! The one progress-line renderer of the command line. On a terminal a progress line is
//! rewritten in place (`\r` + erase line) and a new one starts when the phase changes; in a
//! log or a pipe a line is printed when a phase begins and then at most every few seconds, so
//! CI logs stay readable. Any other output first ends an open line ([`end_line`]).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a progress line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        }
    }

    fn write(self, text: &str) {
        // A closed reader is not this renderer's business: the command's own prints notice.
        let _ = match self {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|_| out.flush())
            }
            Stream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(text.as_bytes()).and_then(|_| err.flush())
            }
        };
    }
}

/// How often a log (not a terminal) gets a line within one phase.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

struct Open {
    stream: Stream,
    phase: String,
}

struct Logged {
    phase: String,
    at: Instant,
}

static OPEN: Mutex<Option<Open>> = Mutex::new(None);
static LOGGED: Mutex<Option<Logged>> = Mutex::new(None);

/// Shows `text` as the progress of `phase` (e.g. `serving.tf: rollout`). On a terminal the
/// line is rewritten in place, and a change of phase keeps the previous line; elsewhere a line
/// is printed when the phase changes and then every [`LOG_INTERVAL`].
pub fn update(stream: Stream, phase: &str, text: &str) {
    if stream.is_terminal() {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        let keep_previous = open
            .as_ref()
            .is_some_and(|o| o.stream == stream && o.phase != phase);
        if let Some(o) = open.as_ref().filter(|o| o.stream != stream) {
            o.stream.write("\n");
        }
        stream.write(&format!(
            "{}\r\x1b[2K{text}",
            if keep_previous { "\n" } else { "" }
        ));
        *open = Some(Open {
            stream,
            phase: phase.to_string(),
        });
        return;
    }
    let mut last = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    let due = match &*last {
        Some(l) => l.phase != phase || l.at.elapsed() >= LOG_INTERVAL,
        None => true,
    };
    if due {
        stream.write(&format!("{text}\n"));
        *last = Some(Logged {
            phase: phase.to_string(),
            at: Instant::now(),
        });
    }
}

/// A resource's progress on stdout (apply, destroy): `ADDRESS: MESSAGE`, whose phase is the
/// message up to its first ':' ("rollout", "stage-1 (1/2)").
pub fn resource(address: &str, message: &str) {
    let phase = format!(
        "{address}: {}",
        message.split(':').next().unwrap_or(message)
    );
    update(Stream::Stdout, &phase, &format!("{address}: {message}"));
}

/// Erases an open in-place line (its news is superseded by what is printed next).
pub fn clear_line() {
    if let Some(o) = OPEN.lock().unwrap_or_else(|p| p.into_inner()).take() {
        o.stream.write("\r\x1b[2K");
    }
}

/// Ends an open in-place line (before other output).
pub fn end_line() {
    if let Some(o) = OPEN.lock().unwrap_or_else(|p| p.into_inner()).take() {
        o.stream.write("\n");
    }
}
