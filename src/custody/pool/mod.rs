//! Keys ahead of demand: pools of keys KMS has already wrapped, so a call
//! that needs no plaintext gets its key without waiting for KMS, and keeps
//! getting keys through a KMS outage until the pool runs dry.
//!
//! Owns one pool per (KMS key, service context, key length) the
//! configuration names ([`KeyPool::start`]); each is filled in the
//! background ([`refill`]) and handed out once per key ([`shelf`]). A
//! pool answers to every name of its KMS key that KMS reported when the
//! pools were set up ([`names`]: key id, key ARN, aliases, alias ARNs),
//! so callers naming one key differently share its pools. A job takes all
//! the keys it needs from a pool at once or none ([`KeyPool::take_many`]).
//! A
//! pooled key is minted exactly as a fresh one (key and IV from the OS
//! CSPRNG, wrapped by KMS, `KeyMd5` and fingerprint computed then), and its
//! plaintext is zeroized as soon as it is wrapped. Must never hold
//! plaintext, hand a key out twice, hand out a key past its time to live,
//! or fill a pool for a key the configuration does not name; recording
//! and auditing a key stay with whoever hands it out, as for a fresh key.

pub mod names;
pub mod refill;
pub mod shelf;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

pub use self::names::{KeyNames, resolve_names};
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
    /// Every name of a pooled KMS key KMS reported, to the configured name
    /// its pools are keyed by.
    names: HashMap<String, KmsKeyId>,
    _stop: watch::Sender<()>,
}

/// Keys a job took from a pool at once. Dropped before
/// [`PoolBatch::delivered`] (the job failed after taking them) they are
/// discarded and counted, never put back: the job may have recorded,
/// audited or shown them.
pub struct PoolBatch {
    keys: Vec<PooledKey>,
    count: usize,
    delivered: bool,
    shelf: Arc<Shelf>,
    labels: crate::app::metrics::PoolLabels,
}

impl PoolBatch {
    /// The keys, to be used by the job; the batch still counts them until
    /// it is marked delivered.
    pub fn take_keys(&mut self) -> Vec<PooledKey> {
        std::mem::take(&mut self.keys)
    }

    /// How many keys the batch took.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch took no key.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The job that took the keys handed them out (they are recorded).
    pub fn delivered(mut self) {
        self.delivered = true;
    }
}

impl Drop for PoolBatch {
    fn drop(&mut self) {
        if !self.delivered && self.count > 0 {
            self.shelf.discarded_unused(self.count);
            crate::app::metrics::record_pool_discards(&self.labels, "unused", self.count);
        }
    }
}

impl fmt::Debug for PoolBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolBatch({} keys, delivered: {})", self.count, self.delivered)
    }
}

impl KeyPool {
    /// Starts one pool per entry of `keys` (duplicates are one pool), each
    /// filling in the background through `minter`. `names` are what KMS
    /// reported for the configured keys ([`resolve_names`]): two keys
    /// configured by different names of the same KMS key are one pool, a
    /// pool answers to every name of its key, and it is filled through the
    /// key's ARN (so an alias moved to another key later does not mix keys
    /// of two KMS keys in one pool). Must be called inside a Tokio runtime.
    pub fn start(minter: Minter, settings: PoolSettings, keys: Vec<PoolKey>, names: &[KeyNames]) -> KeyPool {
        let minter = Arc::new(minter);
        let (stop, _) = watch::channel(());
        let (canonical, lookup, wrap_with) = names::index(&keys, names);
        let mut pools = HashMap::new();
        for key in keys {
            let key = PoolKey { key_id: canonical(&key.key_id), ..key };
            if pools.contains_key(&key) {
                continue;
            }
            let shelf = Arc::new(Shelf::new(settings.sizing));
            let wake = Arc::new(Notify::new());
            tokio::spawn(refill::keep_filled(
                key.clone(),
                wrap_with(&key.key_id),
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
            crate::app::metrics::register_pool(&labels);
            crate::app::metrics::record_pool_target(&labels, shelf.target());
            pools.insert(key, Pooled { shelf, wake, labels });
        }
        KeyPool { pools, names: lookup, _stop: stop }
    }

    /// The pool for `key_id` (by any name of its KMS key), `context` and
    /// `bits`; `None` for a key the configuration does not pool.
    fn find(&self, key_id: &KmsKeyId, context: ServiceContext, bits: KeyBits) -> Option<&Pooled> {
        let key_id = self.names.get(key_id.as_str()).unwrap_or(key_id).clone();
        self.pools.get(&PoolKey { key_id, context, bits })
    }

    /// A pooled key for `key_id`, `context` and `bits`, handed out to this
    /// caller alone: `None` when no pool holds such keys or the pool is
    /// empty (the caller then mints one on demand).
    pub fn take(&self, key_id: &KmsKeyId, context: ServiceContext, bits: KeyBits) -> Option<PooledKey> {
        let pooled = self.find(key_id, context, bits)?;
        let (taken, depth) = pooled.shelf.take(Instant::now());
        match taken {
            Taken::Hit(key) => {
                crate::app::metrics::record_pool_take(&pooled.labels, true, 1, depth);
                if pooled.shelf.below_low_water(depth) {
                    pooled.wake.notify_one();
                }
                Some(key)
            }
            Taken::Miss { expired } => {
                crate::app::metrics::record_pool_discards(&pooled.labels, "expired", expired);
                crate::app::metrics::record_pool_take(&pooled.labels, false, 1, 0);
                pooled.wake.notify_one();
                None
            }
        }
    }

    /// `count` pooled keys for `key_id`, `context` and `bits`, all at once,
    /// handed out to this caller alone; `None` when no pool holds such
    /// keys or the pool holds fewer than `count` (it keeps them all, and
    /// the caller mints all `count` on demand). Whatever the batch still
    /// holds when dropped undelivered is discarded, never put back.
    pub fn take_many(
        &self,
        key_id: &KmsKeyId,
        context: ServiceContext,
        bits: KeyBits,
        count: usize,
    ) -> Option<PoolBatch> {
        let pooled = self.find(key_id, context, bits)?;
        let (taken, depth) = pooled.shelf.take_many(Instant::now(), count);
        match taken {
            Ok(keys) => {
                crate::app::metrics::record_pool_take(&pooled.labels, true, count, depth);
                if pooled.shelf.below_low_water(depth) {
                    pooled.wake.notify_one();
                }
                Some(PoolBatch {
                    keys,
                    count,
                    delivered: false,
                    shelf: pooled.shelf.clone(),
                    labels: pooled.labels.clone(),
                })
            }
            Err(expired) => {
                crate::app::metrics::record_pool_discards(&pooled.labels, "expired", expired);
                crate::app::metrics::record_pool_take(&pooled.labels, false, count, depth);
                pooled.wake.notify_one();
                None
            }
        }
    }

    /// The pools, with the keys each holds now.
    pub fn depths(&self) -> Vec<(PoolKey, usize)> {
        self.pools.iter().map(|(key, pooled)| (key.clone(), pooled.shelf.depth())).collect()
    }

    /// Keys held now for `key_id` (by any name of its KMS key), `context`
    /// and `bits`; `None` when no pool holds such keys.
    pub fn depth(&self, key_id: &KmsKeyId, context: ServiceContext, bits: KeyBits) -> Option<usize> {
        self.find(key_id, context, bits).map(|pooled| pooled.shelf.depth())
    }

    /// What the pool for `key_id` (by any name of its KMS key), `context`
    /// and `bits` counted.
    pub fn stats(&self, key_id: &KmsKeyId, context: ServiceContext, bits: KeyBits) -> Option<ShelfStats> {
        self.find(key_id, context, bits).map(|pooled| pooled.shelf.stats())
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
