//! Talking to GKE: the client and its runtime, one retry loop per call (with the busy wait
//! for changes GKE refuses while another operation runs), and operation polling.

use super::*;

/// `2m10s`, `45s`, `1h3m0s`.
pub(super) fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

impl GkeProvider {
    /// Runs `f` with the client on the provider's runtime, from a plain thread.
    pub(super) fn run<T>(
        &self,
        f: impl AsyncFnOnce(&ClusterManager) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        self.runtime.block_on(async {
            let client = self.client().await?;
            f(&client).await
        })
    }

    pub(super) async fn client(&self) -> Result<ClusterManager, ProviderError> {
        if let Some(c) = self
            .client
            .lock()
            .map_err(|_| GkeError::Client("client lock poisoned".into()))?
            .as_ref()
        {
            return Ok(c.clone());
        }
        // The client's own retries are off in every case: `retry::retry` is the one loop, with
        // one budget, that also honours a cancel (two nested loops would multiply).
        let mut builder =
            ClusterManager::builder().with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
        if let Some(url) = &self.apis.gke {
            builder = builder.with_endpoint(url);
        }
        // Emulators: nothing may look for credentials off loopback.
        if self.apis.anonymous() {
            builder = builder.with_credentials(gcp::anonymous_credentials());
        }
        let built = builder
            .build()
            .await
        .map_err(|e| {
            GkeError::Client(format!(
                "{e} (run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS)"
            ))
        })?;
        let mut slot = self
            .client
            .lock()
            .map_err(|_| GkeError::Client("client lock poisoned".into()))?;
        Ok(slot.get_or_insert(built).clone())
    }

    /// Sends a request with the provider's retry policy; GKE errors are classified by
    /// `api_error`.
    pub(super) async fn call<T, Fut>(
        &self,
        r: &ClusterRef,
        action: &'static str,
        kind: Call,
        cancel: &AtomicBool,
        send: impl Fn() -> Fut,
    ) -> Result<T, ProviderError>
    where
        Fut: std::future::Future<Output = Result<T, google_cloud_gax::error::Error>>,
    {
        let policy = self.retry_policy()?;
        retry::retry(&policy, cancel, kind, || async {
            send()
                .await
                .map_err(|e| ProviderError::from(r.api_error(action, &e)))
        })
        .await
    }

    /// As [`Self::call`] for a change that GKE refuses while another operation runs on the
    /// cluster (an upgrade, an auto-repair): that refusal is retried, backing off, for up to
    /// the busy wait, with a progress line naming the operation.
    pub(super) async fn call_waiting<T, Fut>(
        &self,
        ctx: &Context<'_>,
        r: &ClusterRef,
        action: &'static str,
        kind: Call,
        send: impl Fn() -> Fut,
    ) -> Result<T, ProviderError>
    where
        Fut: std::future::Future<Output = Result<T, google_cloud_gax::error::Error>>,
    {
        let policy = self.retry_policy()?.waiting_while_busy(self.busy_wait()?);
        let waiting = |e: &ProviderError, wait: Duration| {
            (ctx.progress)(format!(
                "{action} cluster {}: GKE is busy with another operation ({}); trying again in {}",
                r.name,
                e.message().unwrap_or("no message"),
                short_duration(wait.max(Duration::from_secs(1)))
            ))
        };
        retry::retry_telling(&policy, ctx.cancel, kind, &waiting, || async {
            send()
                .await
                .map_err(|e| ProviderError::from(r.api_error(action, &e)))
        })
        .await
    }

    /// The live cluster, or None when GKE says it does not exist (NOT_FOUND, and nothing
    /// else: any other failure is an error, retried first when it is transient).
    pub(super) async fn get(
        &self,
        client: &ClusterManager,
        r: &ClusterRef,
        cancel: &AtomicBool,
    ) -> Result<Option<Cluster>, ProviderError> {
        let got = self
            .call(r, "reading", Call::Idempotent, cancel, || {
                client.get_cluster().set_name(r.path()).send()
            })
            .await;
        match got {
            Ok(c) => Ok(Some(c)),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn get_existing(
        &self,
        client: &ClusterManager,
        r: &ClusterRef,
        action: &'static str,
        cancel: &AtomicBool,
    ) -> Result<Cluster, ProviderError> {
        self.get(client, r, cancel).await?.ok_or_else(|| {
            GkeError::Api {
                action,
                cluster: Box::new(r.clone()),
                message: "GKE reports no such cluster (deleted outside benchstack?)".into(),
                kind: ErrorKind::NotFound,
                unsent: false,
            }
            .into()
        })
    }

    /// Polls the operation until DONE, backing off; fails with the operation's own error.
    /// `cancel` is None during recovery, which has nobody to interrupt it.
    pub(super) async fn wait(
        &self,
        client: &ClusterManager,
        r: &ClusterRef,
        first: Operation,
        action: &'static str,
        ctx: &Context<'_>,
        honour_cancel: bool,
    ) -> Result<(), ProviderError> {
        let name = first.name.clone();
        match self
            .poll_until_done(client, r, first, action, ctx, honour_cancel)
            .await?
        {
            None => Ok(()),
            Some(message) => Err(self.operation_failed(r, action, &name, &message, "")),
        }
    }

    /// Polls until DONE: Ok(None) when the operation succeeded, Ok(Some(its error message))
    /// when it failed; Err when waiting itself failed (timeout, cancel, API error).
    pub(super) async fn poll_until_done(
        &self,
        client: &ClusterManager,
        r: &ClusterRef,
        first: Operation,
        action: &'static str,
        ctx: &Context<'_>,
        honour_cancel: bool,
    ) -> Result<Option<String>, ProviderError> {
        let started = Instant::now();
        let timeout = self.timeout()?;
        let mut interval = self.poll_interval()?;
        let name = first.name.clone();
        let mut op = first;
        loop {
            if op.status == operation::Status::Done {
                return Ok(match &op.error {
                    Some(e) if e.code != 0 || !e.message.is_empty() => Some(e.message.clone()),
                    _ => None,
                });
            }
            (ctx.progress)(format!(
                "{action} cluster {}: {}, {}",
                r.name,
                operation_status(&op),
                short_duration(started.elapsed())
            ));
            if started.elapsed() >= timeout {
                return Err(GkeError::Timeout {
                    action,
                    cluster: Box::new(r.clone()),
                    operation: name,
                    status: operation_status(&op),
                    waited: short_duration(started.elapsed()),
                }
                .into());
            }
            let wake = Instant::now() + interval;
            while Instant::now() < wake {
                if honour_cancel && ctx.cancel.load(Ordering::SeqCst) {
                    return Err(ProviderError::Interrupted);
                }
                tokio::time::sleep(CANCEL_CHECK.min(wake - Instant::now())).await;
            }
            if honour_cancel && ctx.cancel.load(Ordering::SeqCst) {
                return Err(ProviderError::Interrupted);
            }
            interval = gcp::backoff(interval, POLL_CAP);
            op = self
                .call(r, action, Call::Idempotent, ctx.cancel, || {
                    client
                        .get_operation()
                        .set_name(r.operation_path(&name))
                        .send()
                })
                .await?;
        }
    }

    pub(super) fn operation_failed(
        &self,
        r: &ClusterRef,
        action: &'static str,
        operation: &str,
        message: &str,
        cleanup: &str,
    ) -> ProviderError {
        GkeError::OperationFailed {
            action,
            cluster: Box::new(r.clone()),
            operation: operation.to_string(),
            message: if message.is_empty() {
                "no reason given".into()
            } else {
                message.to_string()
            },
            cleanup: cleanup.to_string(),
        }
        .into()
    }
}
