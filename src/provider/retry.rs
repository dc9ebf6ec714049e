//! The one retry loop of the remote providers: a transient failure (unavailable, throttled)
//! is tried again after a capped exponential backoff with full jitter, within a total time
//! budget, stopping early on cancel. Anything else is returned at once.
//!
//! The Google client's own retry policy is switched off (`NeverRetry`) so that a call is
//! never retried by two loops at once: this budget is the only one.
//!
//! A call refused because the resource is busy with another operation (GKE's 400
//! FAILED_PRECONDITION "Operation … is currently upgrading cluster C. Please wait and try
//! again once it is done.") is retried too, under its own, longer budget, when the policy
//! has one (`busy`): deletes and resizes wait out an auto-repair or an upgrade, as
//! Terraform's modules do (terraform-google-modules/terraform-google-kubernetes-engine#2469).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

use super::ProviderError;

/// How long a remote call may keep being retried in total (humantime, default 30s; `0s`
/// turns retries off).
pub const RETRY_BUDGET_ENV: &str = "BENCHSTACK_RETRY_BUDGET";
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(30);
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// How often a backoff sleep looks at the cancel flag.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

/// Whether a call may be repeated after it reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Reads, server-side apply, deletes: repeating does no harm.
    Idempotent,
    /// Creates: repeated only when the first attempt never reached the server, or was
    /// refused before any work (throttled).
    Once,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub budget: Duration,
    pub first: Duration,
    pub cap: Duration,
    /// How long a call refused as busy (see [`is_busy`]) keeps being retried; zero: not at
    /// all.
    pub busy: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget: DEFAULT_BUDGET,
            first: FIRST_DELAY,
            cap: MAX_DELAY,
            busy: Duration::ZERO,
        }
    }
}

impl RetryPolicy {
    /// The default policy with the budget from `BENCHSTACK_RETRY_BUDGET`, if set.
    pub fn from_env() -> Result<Self, ProviderError> {
        let budget = super::env_duration(RETRY_BUDGET_ENV, "30s or 2m")?.unwrap_or(DEFAULT_BUDGET);
        Ok(RetryPolicy {
            budget,
            ..RetryPolicy::default()
        })
    }

    pub fn with_budget(budget: Duration) -> Self {
        RetryPolicy {
            budget,
            ..RetryPolicy::default()
        }
    }

    /// This policy, also retrying a busy refusal for up to `wait`.
    pub fn waiting_while_busy(self, wait: Duration) -> Self {
        RetryPolicy { busy: wait, ..self }
    }

    /// The longest wait before attempt `retry + 1` (full jitter picks in `0..=this`).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(20));
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// Full jitter: a uniformly random wait up to the ceiling.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry).as_millis() as u64;
        Duration::from_millis(rng.random_range(0..=ceiling))
    }
}

/// Whether `e` may be tried again for a call of kind `call`.
pub fn retryable(e: &ProviderError, call: Call) -> bool {
    match e {
        ProviderError::Throttled(_) => true,
        ProviderError::Unavailable(f) => call == Call::Idempotent || f.unsent,
        _ => false,
    }
}

/// A refusal because another operation holds the resource: a failed precondition whose
/// message asks to wait (GKE: "… is currently upgrading cluster C. Please wait and try again
/// once it is done.", "Cluster is running incompatible operation operation-….", "Cluster is
/// currently being created, deleted, updated or repaired and cannot be updated."). The call
/// did nothing, so repeating it is safe even for a create.
pub fn is_busy(e: &ProviderError) -> bool {
    match e {
        ProviderError::Conflict(f) => {
            let m = f.message.to_ascii_lowercase();
            m.contains("please wait and try again")
                || m.contains("incompatible operation")
                || m.contains("is currently being created, deleted, updated or repaired")
        }
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails for good, the budget is spent or `cancel` is set.
/// The error returned is the last one, with the number of attempts when there was more than
/// one.
pub async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    cancel: &AtomicBool,
    call: Call,
    attempt: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    retry_telling(policy, cancel, call, &|_, _| {}, attempt).await
}

/// As [`retry`], calling `waiting(error, wait)` before each wait on a busy refusal (so a
/// long wait can be shown).
pub async fn retry_telling<T, F, Fut>(
    policy: &RetryPolicy,
    cancel: &AtomicBool,
    call: Call,
    waiting: &(dyn Fn(&ProviderError, Duration) + Sync),
    mut attempt: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let e = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let busy = !policy.busy.is_zero() && is_busy(&e);
        if !busy && !retryable(&e, call) {
            return Err(e.with_attempts(attempts, started.elapsed()));
        }
        let wait = policy.delay(attempts - 1, &mut rand::rng());
        let budget = if busy { policy.busy } else { policy.budget };
        if started.elapsed() + wait >= budget {
            return Err(e.with_attempts(attempts, started.elapsed()));
        }
        if busy {
            waiting(&e, wait);
        }
        let wake = Instant::now() + wait;
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Err(ProviderError::Interrupted);
            }
            let now = Instant::now();
            if now >= wake {
                break;
            }
            tokio::time::sleep(CANCEL_CHECK.min(wake - now)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ErrorKind;
    use std::sync::atomic::AtomicU32;

    fn policy(budget_ms: u64) -> RetryPolicy {
        RetryPolicy {
            budget: Duration::from_millis(budget_ms),
            first: Duration::from_millis(1),
            cap: Duration::from_millis(4),
            busy: Duration::ZERO,
        }
    }

    fn busy(message: &str) -> ProviderError {
        ProviderError::new(ErrorKind::Conflict, "deleting cluster serving", message)
    }

    #[test]
    fn a_busy_refusal_is_retried_only_under_a_busy_budget_and_even_for_a_create() {
        let message = "Operation operation-1 is currently upgrading cluster serving. Please wait and try again once it is done.";
        let cancel = AtomicBool::new(false);
        // No busy budget: returned at once, like any conflict.
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = rt().block_on(retry(
            &policy(10_000),
            &cancel,
            Call::Idempotent,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(busy(message))
            },
        ));
        assert!(matches!(r, Err(ProviderError::Conflict(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // With one: retried (also a call that must not be repeated once it did work, since
        // a busy refusal did none) until the operation is over.
        let calls = AtomicU32::new(0);
        let told = AtomicU32::new(0);
        let p = policy(0).waiting_while_busy(Duration::from_secs(10));
        let r = rt().block_on(retry_telling(
            &p,
            &cancel,
            Call::Once,
            &|e, _| {
                assert!(is_busy(e));
                told.fetch_add(1, Ordering::SeqCst);
            },
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(busy(
                        "Cluster is running incompatible operation operation-2.",
                    ))
                } else {
                    Ok(5)
                }
            },
        ));
        assert_eq!(r.unwrap(), 5);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(told.load(Ordering::SeqCst), 3);
        // Other conflicts are not busy.
        assert!(!is_busy(&busy(
            "Labels could not be set due to fingerprint mismatch"
        )));
        assert!(!is_busy(&ProviderError::new(
            ErrorKind::Unavailable,
            "",
            message
        )));
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn the_backoff_ceiling_doubles_up_to_the_cap_and_jitter_stays_under_it() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(0), Duration::from_millis(250));
        assert_eq!(p.ceiling(1), Duration::from_millis(500));
        assert_eq!(p.ceiling(3), Duration::from_secs(2));
        assert_eq!(p.ceiling(10), MAX_DELAY);
        assert_eq!(p.ceiling(u32::MAX), MAX_DELAY);
        let mut rng = rand::rng();
        for retry in 0..12 {
            assert!(p.delay(retry, &mut rng) <= p.ceiling(retry));
        }
    }

    #[test]
    fn a_transient_failure_is_retried_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let cancel = AtomicBool::new(false);
        let r = rt().block_on(retry(
            &policy(10_000),
            &cancel,
            Call::Idempotent,
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(ProviderError::new(
                        ErrorKind::Unavailable,
                        "reading x",
                        "503",
                    ))
                } else {
                    Ok(7)
                }
            },
        ));
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_permanent_failure_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let cancel = AtomicBool::new(false);
        let r: Result<(), _> = rt().block_on(retry(
            &policy(10_000),
            &cancel,
            Call::Idempotent,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ProviderError::new(
                    ErrorKind::Permission,
                    "reading x",
                    "denied",
                ))
            },
        ));
        assert!(matches!(r, Err(ProviderError::Permission(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_sent_create_is_not_repeated_but_an_unsent_one_is() {
        let calls = AtomicU32::new(0);
        let cancel = AtomicBool::new(false);
        let r: Result<(), _> =
            rt().block_on(retry(&policy(10_000), &cancel, Call::Once, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ProviderError::new(
                    ErrorKind::Unavailable,
                    "creating x",
                    "503",
                ))
            }));
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let r = rt().block_on(retry(&policy(10_000), &cancel, Call::Once, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(
                    ProviderError::new(ErrorKind::Unavailable, "creating x", "refused")
                        .unsent_request(),
                )
            } else {
                Ok(())
            }
        }));
        assert!(r.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_budget_bounds_the_retries_and_the_error_says_how_many_were_made() {
        let cancel = AtomicBool::new(false);
        let r: Result<(), _> =
            rt().block_on(retry(&policy(30), &cancel, Call::Idempotent, || async {
                Err(ProviderError::new(
                    ErrorKind::Unavailable,
                    "reading cluster serving",
                    "The service is currently unavailable.",
                ))
            }));
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.message(), Some("The service is currently unavailable."));
        let text = e.to_string();
        assert!(
            text.starts_with("reading cluster serving: The service is currently unavailable."),
            "{text}"
        );
    }

    #[test]
    fn a_cancel_stops_the_retries() {
        let cancel = AtomicBool::new(true);
        let r: Result<(), _> = rt().block_on(retry(
            &policy(60_000),
            &cancel,
            Call::Idempotent,
            || async { Err(ProviderError::new(ErrorKind::Unavailable, "", "503")) },
        ));
        assert!(matches!(r, Err(ProviderError::Interrupted)));
    }
}
