//! A scripted KMS for tests and benchmarks: it wraps a real one (the local
//! keyring or moto's KMS), counts the calls that reach it and answers each
//! after a set delay, a stand-in for a network round trip, or fails the
//! wraps a test asks it to, or shows each key to a hook before wrapping it.
//! Never part of the broker itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keybroker::custody::keys::{DataKey, ServiceContext, WrappedKey};
use keybroker::custody::kms::{Kms, KmsError, KmsKeyId, Unwrapped, Wrapped};

/// Shown every key before it is wrapped; its error is the wrap's answer.
type WrapHook = Box<dyn Fn(&DataKey) -> Result<(), KmsError> + Send + Sync>;

/// A KMS over `inner` that counts calls and delays each answer.
pub struct ScriptedKms {
    inner: Arc<dyn Kms>,
    delay: Duration,
    calls: AtomicUsize,
    failing_wraps: AtomicUsize,
    on_wrap: Option<WrapHook>,
}

impl ScriptedKms {
    /// Counts the calls to `inner`, answering as fast as it does.
    pub fn counting(inner: Arc<dyn Kms>) -> Arc<ScriptedKms> {
        Self::delayed(inner, Duration::ZERO)
    }

    /// Answers every call of `inner` `delay` later.
    pub fn delayed(inner: Arc<dyn Kms>, delay: Duration) -> Arc<ScriptedKms> {
        Arc::new(Self::new(inner, delay, None))
    }

    /// Shows every key to `hook` before wrapping it; an error from the hook
    /// is the wrap's answer, and the key never reaches `inner`.
    pub fn on_wrap(
        inner: Arc<dyn Kms>,
        hook: impl Fn(&DataKey) -> Result<(), KmsError> + Send + Sync + 'static,
    ) -> Arc<ScriptedKms> {
        Arc::new(Self::new(inner, Duration::ZERO, Some(Box::new(hook))))
    }

    fn new(inner: Arc<dyn Kms>, delay: Duration, on_wrap: Option<WrapHook>) -> ScriptedKms {
        ScriptedKms { inner, delay, calls: AtomicUsize::new(0), failing_wraps: AtomicUsize::new(0), on_wrap }
    }

    /// The calls that reached the KMS so far.
    pub fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Answers the next `times` wraps (Encrypt) with a throttling error.
    pub fn fail_next_wraps(&self, times: usize) {
        self.failing_wraps.fetch_add(times, Ordering::SeqCst);
    }

    async fn enter(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait::async_trait]
impl Kms for ScriptedKms {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn wrap(&self, key_id: &KmsKeyId, plaintext: &DataKey, context: ServiceContext) -> Result<Wrapped, KmsError> {
        self.enter().await;
        let failing = self.failing_wraps.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(KmsError {
                operation: "Encrypt",
                kind: keybroker::custody::kms::KmsErrorKind::Unavailable,
                message: "ThrottlingException: Rate exceeded (scripted)".into(),
            });
        }
        if let Some(hook) = &self.on_wrap {
            hook(plaintext)?;
        }
        self.inner.wrap(key_id, plaintext, context).await
    }

    async fn unwrap(
        &self,
        key_id: Option<&KmsKeyId>,
        wrapped: &WrappedKey,
        context: ServiceContext,
    ) -> Result<Unwrapped, KmsError> {
        self.enter().await;
        self.inner.unwrap(key_id, wrapped, context).await
    }

    async fn rewrap(
        &self,
        source_key_id: Option<&KmsKeyId>,
        wrapped: &WrappedKey,
        source: ServiceContext,
        destination_key_id: &KmsKeyId,
        destination: ServiceContext,
    ) -> Result<keybroker::custody::kms::Rewrapped, KmsError> {
        self.enter().await;
        self.inner.rewrap(source_key_id, wrapped, source, destination_key_id, destination).await
    }
}

/// The plaintext of every key a [`recording`] KMS was asked to wrap.
pub type Seen = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// A KMS over `inner` that remembers every plaintext it is asked to wrap,
/// so a test can look for those bytes where they must never be.
pub fn recording(inner: Arc<dyn Kms>) -> (Arc<dyn Kms>, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let kms = ScriptedKms::on_wrap(inner, move |key| {
        log.lock().unwrap().push(key.expose_secret().to_vec());
        Ok(())
    });
    (kms, seen)
}
