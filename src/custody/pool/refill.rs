//! Minting pooled keys and keeping each pool filled.
//!
//! Owns the only code that makes a key for a pool: draw the key and its IV
//! from the OS CSPRNG, have KMS wrap the key under the pool's context,
//! compute its `KeyMd5` and fingerprint, and drop (zeroize) the plaintext
//! before the key is shelved. One task per pool sweeps expired keys,
//! follows the demand, and mints up to the target with concurrent KMS
//! calls once the pool falls below its low-water mark; when KMS fails it
//! backs off and tries again. Must never keep, log or shelve plaintext.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::sync::{Notify, watch};

use super::shelf::{PoolKey, PooledKey, Shelf};
use crate::custody::fingerprint::Fingerprinter;
use crate::custody::keys::{DataKey, Iv16, KeyMd5Source};
use crate::custody::kms::{Kms, KmsError, KmsErrorKind, KmsKeyId};

/// Makes pooled keys through one KMS backend.
pub struct Minter {
    /// The KMS that wraps the keys.
    pub kms: Arc<dyn Kms>,
    /// The broker's fingerprinter, so pooled keys are named as fresh ones.
    pub fingerprints: Arc<Fingerprinter>,
    /// What `KeyMd5` digests.
    pub key_md5: KeyMd5Source,
    /// The deadline of one KMS call.
    pub kms_deadline: Duration,
}

impl Minter {
    /// Mints one key for `pool`: the plaintext exists only inside this
    /// call and is zeroized when it returns.
    ///
    /// # Errors
    /// [`KmsError`] when the CSPRNG fails or KMS refuses or does not answer.
    pub async fn mint(&self, pool: &PoolKey) -> Result<PooledKey, KmsError> {
        let random = |_| KmsError::new("Encrypt", KmsErrorKind::Internal, "the OS random number generator failed");
        let plaintext = DataKey::generate(pool.bits).map_err(random)?;
        let iv = Iv16::generate().map_err(random)?;
        let started = Instant::now();
        let wrapped = match tokio::time::timeout(
            self.kms_deadline,
            self.kms.wrap(&pool.key_id, &plaintext, pool.context),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(KmsError::new(
                "Encrypt",
                KmsErrorKind::Unavailable,
                format!("did not answer within {:?}", self.kms_deadline),
            )),
        };
        crate::app::metrics::record_kms("Encrypt", wrapped.is_ok(), started.elapsed());
        let wrapped = wrapped?;
        let key_md5 = self.key_md5.digest(&plaintext, &wrapped.key);
        drop(plaintext);
        Ok(PooledKey {
            fingerprint: self.fingerprints.of(&wrapped.key),
            wrapped: wrapped.key,
            key_arn: wrapped.key_arn,
            key_md5,
            iv,
            minted: Instant::now(),
        })
    }
}

/// How a pool's task runs.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// How often demand is sampled and expired keys swept.
    pub tick: Duration,
    /// KMS calls in flight while refilling one pool.
    pub concurrency: usize,
    /// The first pause after a failed refill; it doubles up to a minute.
    pub backoff: Duration,
}

/// Keeps `shelf` filled until `stop` is dropped: sweeps, adapts and
/// refills every tick, and at once when `wake` is notified. Keys are
/// wrapped with `wrap_with` (the key's ARN when KMS reported it).
pub async fn keep_filled(
    pool: PoolKey,
    wrap_with: KmsKeyId,
    shelf: Arc<Shelf>,
    minter: Arc<Minter>,
    cadence: Cadence,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<()>,
) {
    let labels = crate::app::metrics::PoolLabels::new(pool.key_id.as_str(), pool.context.entry().1, pool.bits.bits());
    let mint_as = PoolKey { key_id: wrap_with, ..pool.clone() };
    let mut last = Instant::now();
    let mut backoff = cadence.backoff;
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { return },
            () = wake.notified() => {}
            () = tokio::time::sleep(cadence.tick) => {}
        }
        let now = Instant::now();
        let expired = shelf.sweep(now);
        crate::app::metrics::record_pool_discards(&labels, "expired", expired);
        if now.duration_since(last) >= cadence.tick {
            let target = shelf.adapt(now.duration_since(last));
            last = now;
            crate::app::metrics::record_pool_target(&labels, target);
        }
        if retry_at.is_some_and(|at| now < at) {
            crate::app::metrics::record_pool_depth(&labels, shelf.depth());
            continue;
        }
        let wanted = shelf.shortfall();
        if wanted == 0 {
            crate::app::metrics::record_pool_depth(&labels, shelf.depth());
            continue;
        }
        let started = Instant::now();
        let failed = refill(&mint_as, &shelf, &minter, wanted, cadence.concurrency, &labels).await;
        match failed {
            None => {
                crate::app::metrics::record_pool_refill(&labels, started.elapsed());
                backoff = cadence.backoff;
                retry_at = None;
            }
            Some(error) => {
                tracing::warn!(
                    kms_key = %pool.key_id,
                    bits = pool.bits.bits(),
                    error = %error,
                    retry_in = ?backoff,
                    depth = shelf.depth(),
                    "key pool: refill failed; keys already pooled are still handed out"
                );
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Mints `wanted` keys, `concurrency` at a time, shelving each as it is
/// wrapped; stops at the first failure and answers it.
async fn refill(
    pool: &PoolKey,
    shelf: &Shelf,
    minter: &Minter,
    wanted: usize,
    concurrency: usize,
    labels: &crate::app::metrics::PoolLabels,
) -> Option<KmsError> {
    let mut minted = futures::stream::iter(0..wanted).map(|_| minter.mint(pool)).buffer_unordered(concurrency.max(1));
    while let Some(result) = minted.next().await {
        match result {
            Ok(key) => {
                shelf.put(key);
                crate::app::metrics::record_pool_depth(labels, shelf.depth());
            }
            Err(error) => return Some(error),
        }
    }
    None
}
