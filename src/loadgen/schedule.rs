//! Arrival schedules (intended send times) and a precise timer to wait for them.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::vocab::load::Arrival;

/// Offsets (seconds since the stage began) of successive intended sends. Constant arrivals
/// are computed as `k / rate` (no accumulated rounding); Poisson arrivals add exponential
/// gaps with mean `1 / rate` drawn from a seeded generator, so a run is reproducible.
pub struct Schedule {
    arrival: Arrival,
    rate: f64,
    k: u64,
    t: f64,
    /// Constant arrivals start this fraction of an interval late (0 ≤ phase < 1).
    phase: f64,
    rng: StdRng,
}

impl Schedule {
    pub fn new(arrival: Arrival, rate: f64, seed: u64) -> Self {
        Schedule {
            arrival,
            rate,
            k: 0,
            t: 0.0,
            phase: 0.0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Shifts constant arrivals by `phase` of an interval: worker i of N uses i/N, so the
    /// workers' sends interleave into exactly the schedule one generator would follow at the
    /// total rate (Poisson arrivals need no shift: a union of Poisson processes is one).
    pub fn with_phase(mut self, phase: f64) -> Self {
        self.phase = if phase.is_finite() {
            phase.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The next offset in seconds.
    pub fn next_offset(&mut self) -> f64 {
        match self.arrival {
            Arrival::Constant => {
                let t = (self.k as f64 + self.phase) / self.rate;
                self.k += 1;
                t
            }
            Arrival::Poisson => {
                // Inverse transform: -ln(U) / rate with U in (0, 1].
                let u: f64 = 1.0 - self.rng.random::<f64>();
                self.t += -u.ln() / self.rate;
                self.t
            }
        }
    }
}

/// Waits until an absolute instant with sub-millisecond precision. tokio's own timers round
/// up to whole milliseconds, which at thousands of requests per second would make every send
/// up to 1 ms late; on Linux a timerfd armed with the absolute deadline wakes the reactor on
/// time. Elsewhere it falls back to tokio's timer.
pub struct PreciseTimer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<TimerFd>>,
    /// `Instant` and CLOCK_MONOTONIC are the same clock on Linux; this anchors one to the other.
    #[cfg(target_os = "linux")]
    anchor: (Instant, Duration),
}

#[cfg(target_os = "linux")]
pub struct TimerFd(std::os::fd::OwnedFd);

#[cfg(target_os = "linux")]
impl std::os::fd::AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(target_os = "linux")]
fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl PreciseTimer {
    /// Must be called inside a tokio runtime.
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::FromRawFd;
            // SAFETY: plain syscall; the result is checked before use.
            let raw = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            let fd = if raw >= 0 {
                // SAFETY: raw is a fresh descriptor we own.
                let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
                // SAFETY: TimerFd owns the descriptor and always returns that same one.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        TimerFd(owned),
                        tokio::io::Interest::READABLE,
                    )
                }
                .ok()
            } else {
                None
            };
            PreciseTimer {
                fd,
                anchor: (Instant::now(), monotonic_now()),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            PreciseTimer {}
        }
    }

    pub async fn sleep_until(&mut self, deadline: Instant) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            use std::os::fd::AsRawFd;
            let now = Instant::now();
            if deadline <= now {
                return;
            }
            let (i0, m0) = self.anchor;
            let abs = m0 + deadline.duration_since(i0);
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: abs.as_secs() as libc::time_t,
                    tv_nsec: abs.subsec_nanos() as libc::c_long,
                },
            };
            let raw = fd.get_ref().as_raw_fd();
            // SAFETY: arming a timerfd we own with a valid itimerspec.
            let rc = unsafe {
                libc::timerfd_settime(raw, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
            };
            if rc == 0 {
                loop {
                    let Ok(mut guard) = fd.readable().await else {
                        break;
                    };
                    let mut buf = [0u8; 8];
                    // SAFETY: reading the 8-byte expiration count into our buffer.
                    let n = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), 8) };
                    // Readiness is cleared after a successful read too: left set, the next
                    // sleep would first read an empty timer (one wasted syscall per wake-up).
                    guard.clear_ready();
                    if n == 8 {
                        return;
                    }
                    if Instant::now() >= deadline {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

impl Default for PreciseTimer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phased_workers_interleave_into_the_single_generator_schedule() {
        let (rate, workers, secs) = (195.0, 4u32, 1.0);
        let mut union: Vec<f64> = (0..workers)
            .flat_map(|i| {
                let mut s = Schedule::new(Arrival::Constant, rate / f64::from(workers), 1)
                    .with_phase(f64::from(i) / f64::from(workers));
                std::iter::from_fn(move || Some(s.next_offset())).take_while(move |t| *t < secs)
            })
            .collect();
        union.sort_by(f64::total_cmp);
        let mut single = Schedule::new(Arrival::Constant, rate, 1);
        let expected: Vec<f64> = std::iter::from_fn(|| Some(single.next_offset()))
            .take_while(|t| *t < secs)
            .collect();
        assert_eq!(union.len(), expected.len());
        for (a, b) in union.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced_without_drift() {
        let mut s = Schedule::new(Arrival::Constant, 3900.0, 1);
        let offsets: Vec<f64> = (0..3901).map(|_| s.next_offset()).collect();
        assert_eq!(offsets[0], 0.0);
        assert!((offsets[3900] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn poisson_gaps_have_mean_and_variance_of_an_exponential() {
        let rate = 2000.0;
        let n = 200_000;
        let mut s = Schedule::new(Arrival::Poisson, rate, 42);
        let mut prev = 0.0;
        let gaps: Vec<f64> = (0..n)
            .map(|_| {
                let t = s.next_offset();
                let g = t - prev;
                prev = t;
                g
            })
            .collect();
        let mean = gaps.iter().sum::<f64>() / n as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        // Exponential(rate): mean 1/rate, variance 1/rate². With 200k samples the standard
        // error of the mean is 0.22% and of the variance ~0.5%; allow 2% on both.
        assert!((mean * rate - 1.0).abs() < 0.02, "mean {mean}");
        assert!((var * rate * rate - 1.0).abs() < 0.02, "variance {var}");
        // Arrivals in 1 ms windows are Poisson(2): their variance equals their mean.
        let mut counts = vec![0u32; (prev * 1000.0) as usize + 1];
        let mut t = 0.0;
        for g in &gaps {
            t += g;
            counts[(t * 1000.0) as usize] += 1;
        }
        counts.pop();
        let m = counts.iter().map(|&c| c as f64).sum::<f64>() / counts.len() as f64;
        let v = counts.iter().map(|&c| (c as f64 - m).powi(2)).sum::<f64>() / counts.len() as f64;
        assert!((v / m - 1.0).abs() < 0.05, "index of dispersion {}", v / m);
    }

    #[test]
    fn poisson_schedules_repeat_for_a_seed_and_differ_across_seeds() {
        let take = |seed| {
            let mut s = Schedule::new(Arrival::Poisson, 100.0, seed);
            (0..10).map(|_| s.next_offset()).collect::<Vec<_>>()
        };
        assert_eq!(take(7), take(7));
        assert_ne!(take(7), take(8));
    }

    #[test]
    fn precise_timer_wakes_close_to_the_deadline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut t = PreciseTimer::new();
            let mut worst = Duration::ZERO;
            for _ in 0..50 {
                let d = Instant::now() + Duration::from_micros(300);
                t.sleep_until(d).await;
                let now = Instant::now();
                assert!(now >= d, "woke early");
                worst = worst.max(now - d);
            }
            // Not a timing assertion on the machine's speed: only that it never wakes early
            // and is not stuck on a coarse tick; a loaded machine may still be late.
            assert!(worst < Duration::from_millis(500));
        });
    }
}
