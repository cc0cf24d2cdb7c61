//! Keys ahead of demand: pools of keys KMS has already wrapped, so a call
//! that needs no plaintext gets its key without waiting for KMS, and keeps
//! getting keys through a KMS outage until the pool runs dry.
//!
//! Owns one pool per (KMS key, service context, key length) the
//! configuration names ([`KeyPool::start`]); each is filled in the
//! background ([`refill`]) and handed out once per key ([`shelf`]). A
//! pooled key is minted exactly as a fresh one (key and IV from the OS
//! CSPRNG, wrapped by KMS, `KeyMd5` and fingerprint computed then), and its
//! plaintext is zeroized as soon as it is wrapped. Must never hold
//! plaintext, hand a key out twice, hand out a key past its time to live,
//! or fill a pool for a key the configuration does not name; recording
//! and auditing a key stay with whoever hands it out, as for a fresh key.

pub mod refill;
pub mod shelf;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

pub use self::refill::{Cadence, Minter};
pub use self::shelf::{PoolKey, PooledKey, Shelf, ShelfStats, Sizing, Taken};
use crate::custody::keys::{KeyBits, ServiceContext};
use crate::custody::kms::KmsKeyId;

/// How every pool is sized and refilled.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Bounds, low-water mark, demand cover and time to live.
    pub sizing: Sizing,
    /// Tick, refill concurrency and backoff.
    pub cadence: Cadence,
}

struct Pooled {
    shelf: Arc<Shelf>,
    wake: Arc<Notify>,
    labels: crate::app::metrics::PoolLabels,
}

/// The broker's pools, fixed at start. Dropping it stops their refills.
pub struct KeyPool {
    pools: HashMap<PoolKey, Pooled>,
    _stop: watch::Sender<()>,
}

impl KeyPool {
    /// Starts one pool per entry of `keys` (duplicates are one pool), each
    /// filling in the background through `minter`. Must be called inside
    /// a Tokio runtime.
    pub fn start(minter: Minter, settings: PoolSettings, keys: Vec<PoolKey>) -> KeyPool {
        let minter = Arc::new(minter);
        let (stop, _) = watch::channel(());
        let mut pools = HashMap::new();
        for key in keys {
            if pools.contains_key(&key) {
                continue;
            }
            let shelf = Arc::new(Shelf::new(settings.sizing));
            let wake = Arc::new(Notify::new());
            tokio::spawn(refill::keep_filled(
                key.clone(),
                shelf.clone(),
                minter.clone(),
                settings.cadence,
                wake.clone(),
                stop.subscribe(),
            ));
            wake.notify_one();
            tracing::info!(
                kms_key = %key.key_id,
                context = key.context.entry().1,
                bits = key.bits.bits(),
                min = settings.sizing.min,
                max = settings.sizing.max,
                ttl = ?settings.sizing.ttl,
                "key pool: filling"
            );
            let labels =
                crate::app::metrics::PoolLabels::new(key.key_id.as_str(), key.context.entry().1, key.bits.bits());
            pools.insert(key, Pooled { shelf, wake, labels });
        }
        KeyPool { pools, _stop: stop }
    }

    /// A pooled key for `key_id`, `context` and `bits`, handed out to this
    /// caller alone: `None` when no pool holds such keys or the pool is
    /// empty (the caller then mints one on demand).
    pub fn take(&self, key_id: &KmsKeyId, context: ServiceContext, bits: KeyBits) -> Option<PooledKey> {
        let wanted = PoolKey { key_id: key_id.clone(), context, bits };
        let pooled = self.pools.get(&wanted)?;
        let (taken, depth) = pooled.shelf.take(Instant::now());
        match taken {
            Taken::Hit(key) => {
                crate::app::metrics::record_pool_take(&pooled.labels, true, depth);
                if pooled.shelf.below_low_water(depth) {
                    pooled.wake.notify_one();
                }
                Some(key)
            }
            Taken::Miss { expired } => {
                crate::app::metrics::record_pool_discards(&pooled.labels, expired);
                crate::app::metrics::record_pool_take(&pooled.labels, false, 0);
                pooled.wake.notify_one();
                None
            }
        }
    }

    /// The pools, with the keys each holds now.
    pub fn depths(&self) -> Vec<(PoolKey, usize)> {
        self.pools.iter().map(|(key, pooled)| (key.clone(), pooled.shelf.depth())).collect()
    }

    /// Keys held now for `key_id`, `context` and `bits`; `None` when no
    /// pool holds such keys.
    pub fn depth(&self, key_id: &KmsKeyId, context: ServiceContext, bits: KeyBits) -> Option<usize> {
        let wanted = PoolKey { key_id: key_id.clone(), context, bits };
        self.pools.get(&wanted).map(|pooled| pooled.shelf.depth())
    }

    /// What the pool for `key_id`, `context` and `bits` counted.
    pub fn stats(&self, key_id: &KmsKeyId, context: ServiceContext, bits: KeyBits) -> Option<ShelfStats> {
        let wanted = PoolKey { key_id: key_id.clone(), context, bits };
        self.pools.get(&wanted).map(|pooled| pooled.shelf.stats())
    }

    /// Waits until every pool holds at least `keys` keys, or `within`
    /// passes; answers whether they do (for start-up checks and tests).
    pub async fn wait_filled(&self, keys: usize, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            if self.pools.values().all(|pooled| pooled.shelf.depth() >= keys) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
