//! The tokio runtime a provider's async clients (GKE, Kubernetes, Cloud Build) run on. The
//! apply engine calls providers from plain threads, so each provider owns one, built on first
//! use: a provider never asked (a local stack) starts no threads.

use std::future::Future;
use std::sync::OnceLock;

use super::ProviderError;

pub struct ClientRuntime {
    /// The worker threads' name, `benchstack-gke` …
    thread_name: &'static str,
    /// What the runtime serves, for errors: "the GKE client".
    serves: &'static str,
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl ClientRuntime {
    pub const fn new(thread_name: &'static str, serves: &'static str) -> Self {
        ClientRuntime {
            thread_name,
            serves,
            runtime: OnceLock::new(),
        }
    }

    /// The runtime, built now if this is its first use.
    pub fn get(&self) -> Result<&tokio::runtime::Runtime, ProviderError> {
        if self.runtime.get().is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(self.thread_name)
                .enable_all()
                .build()
                .map_err(ProviderError::io(format!(
                    "starting the {} runtime",
                    self.serves
                )))?;
            // Another thread may have won the race; its runtime is as good as ours.
            let _ = self.runtime.set(rt);
        }
        self.runtime.get().ok_or_else(|| {
            ProviderError::other(format!("the {} runtime is not available", self.serves))
        })
    }

    /// Runs `f` to completion on the runtime, from a plain thread.
    pub fn block_on<T>(
        &self,
        f: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        self.get()?.block_on(f)
    }
}
