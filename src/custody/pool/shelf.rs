//! One pool's keys: a queue of wrapped keys for one (KMS key, service
//! context, key length), its target size and the demand it observes.
//!
//! Owns handing each key out at most once (a key leaves the queue under
//! the lock, oldest first), discarding keys past their time to live, and
//! sizing the pool to the demand within its bounds. Holds no plaintext:
//! a [`PooledKey`] has no field a plaintext key could live in. Must never
//! call KMS (the refill task does) or block while holding its lock.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::custody::keys::{Iv16, KeyBits, ServiceContext, WrappedKey};
use crate::custody::kms::KmsKeyId;

/// What a pool holds keys for: a KMS key as configuration names it, the
/// context the keys are wrapped under, and their length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The KMS key, spelled as the configuration (and requests) name it.
    pub key_id: KmsKeyId,
    /// The encryption context the keys are wrapped under.
    pub context: ServiceContext,
    /// The key length.
    pub bits: KeyBits,
}

/// A key wrapped ahead of demand, with everything a fresh key's
/// `Encryption` block needs, all made at minting: the wrapped key, its
/// own IV, its `KeyMd5` and its fingerprint. The plaintext was zeroized
/// as soon as KMS wrapped it.
pub struct PooledKey {
    /// The wrapped key.
    pub wrapped: WrappedKey,
    /// The ARN KMS reported for the wrapping key.
    pub key_arn: String,
    /// The `KeyMd5` digest, per the server's reading.
    pub key_md5: [u8; 16],
    /// The key's own IV, drawn at minting.
    pub iv: Iv16,
    /// The keyed hash of the wrapped key.
    pub fingerprint: String,
    /// When it was minted; past the pool's time to live it is discarded.
    pub minted: Instant,
}

impl fmt::Debug for PooledKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PooledKey({}, {:?})", self.fingerprint, self.wrapped)
    }
}

/// How one pool is sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    /// The fewest keys the pool aims to hold, however quiet.
    pub min: usize,
    /// The most keys the pool holds, however busy.
    pub max: usize,
    /// Refill starts when the pool holds fewer than this share of its
    /// target (0 to 1).
    pub low_water: f64,
    /// How much of the observed demand the pool holds: its target is the
    /// rate times this, within `min` and `max`.
    pub cover: Duration,
    /// Keys older than this are discarded, never handed out.
    pub ttl: Duration,
}

/// What a pool counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShelfStats {
    /// Keys handed out from the pool.
    pub hits: u64,
    /// Takes that found the pool empty.
    pub misses: u64,
    /// Keys discarded past their time to live.
    pub expired: u64,
    /// Keys taken for a job that then failed: discarded, never returned.
    pub unused: u64,
}

#[derive(Debug)]
struct State {
    keys: VecDeque<PooledKey>,
    target: usize,
    /// Takes (hits and misses) since the demand was last sampled.
    demand: u64,
    /// The demand the target follows, in keys per second: it rises at
    /// once with a busier sample and falls slowly.
    rate: f64,
    stats: ShelfStats,
}

/// One pool's keys, shared by the callers that take them and the task
/// that refills them.
#[derive(Debug)]
pub struct Shelf {
    sizing: Sizing,
    state: Mutex<State>,
}

/// How a take went.
#[derive(Debug)]
pub enum Taken {
    /// A key, handed out to this caller alone.
    Hit(PooledKey),
    /// None fit to hand out; the count of keys discarded as expired while
    /// looking.
    Miss {
        /// Keys discarded past their time to live during this take.
        expired: usize,
    },
}

impl Shelf {
    /// An empty pool aiming for `sizing.min` keys.
    pub fn new(sizing: Sizing) -> Self {
        let state = State {
            keys: VecDeque::new(),
            target: sizing.min.max(1),
            demand: 0,
            rate: 0.0,
            stats: ShelfStats::default(),
        };
        Shelf { sizing, state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave a key half-taken: pop is atomic.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands out the oldest key younger than the time to live, discarding
    /// the expired ones in front of it. Each key leaves exactly once.
    pub fn take(&self, now: Instant) -> (Taken, usize) {
        let mut state = self.lock();
        state.demand += 1;
        let mut expired = 0;
        while let Some(key) = state.keys.pop_front() {
            if now.saturating_duration_since(key.minted) >= self.sizing.ttl {
                expired += 1;
                continue;
            }
            state.stats.hits += 1;
            state.stats.expired += expired as u64;
            let depth = state.keys.len();
            return (Taken::Hit(key), depth);
        }
        state.stats.misses += 1;
        state.stats.expired += expired as u64;
        (Taken::Miss { expired }, 0)
    }

    /// Hands out `count` keys at once, oldest first, or none: when the pool
    /// holds fewer than `count` keys younger than the time to live, every
    /// key stays where it was (the expired ones found are discarded) and
    /// the take counts `count` misses. A job asking for many keys gets
    /// them all from the pool or mints them all, so concurrent jobs never
    /// strand each other with part of what they need.
    pub fn take_many(&self, now: Instant, count: usize) -> (Result<Vec<PooledKey>, usize>, usize) {
        let mut state = self.lock();
        state.demand += count as u64;
        let mut expired = 0;
        let mut keys = Vec::with_capacity(count.min(state.keys.len()));
        while keys.len() < count {
            let Some(key) = state.keys.pop_front() else { break };
            if now.saturating_duration_since(key.minted) >= self.sizing.ttl {
                expired += 1;
                continue;
            }
            keys.push(key);
        }
        state.stats.expired += expired as u64;
        if keys.len() < count {
            // Not enough: every key goes back in front, in its order. None
            // left the lock, so none was handed out.
            for key in keys.into_iter().rev() {
                state.keys.push_front(key);
            }
            state.stats.misses += count as u64;
            let depth = state.keys.len();
            return (Err(expired), depth);
        }
        state.stats.hits += count as u64;
        let depth = state.keys.len();
        (Ok(keys), depth)
    }

    /// Counts `count` keys taken for a job that then failed: they are
    /// discarded, never put back (the job may have shown or recorded them).
    pub fn discarded_unused(&self, count: usize) {
        self.lock().stats.unused += count as u64;
    }

    /// Adds a freshly minted key at the back.
    pub fn put(&self, key: PooledKey) {
        self.lock().keys.push_back(key);
    }

    /// Discards every key past its time to live; answers how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut state = self.lock();
        let before = state.keys.len();
        state.keys.retain(|key| now.saturating_duration_since(key.minted) < self.sizing.ttl);
        let expired = before - state.keys.len();
        state.stats.expired += expired as u64;
        expired
    }

    /// Folds the takes seen over `elapsed` into the demand and sets the
    /// target to cover it; answers the new target.
    pub fn adapt(&self, elapsed: Duration) -> usize {
        let mut state = self.lock();
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let sample = state.demand as f64 / seconds;
        state.demand = 0;
        state.rate = if sample >= state.rate { sample } else { state.rate * 0.95 + sample * 0.05 };
        let wanted = (state.rate * self.sizing.cover.as_secs_f64()).ceil() as usize;
        state.target = wanted.clamp(self.sizing.min.max(1), self.sizing.max.max(self.sizing.min).max(1));
        state.target
    }

    /// How many keys to mint now: up to the target once the pool is below
    /// its low-water mark, else none.
    pub fn shortfall(&self) -> usize {
        let state = self.lock();
        let low = ((state.target as f64) * self.sizing.low_water).ceil() as usize;
        if state.keys.len() < low.max(1) { state.target - state.keys.len().min(state.target) } else { 0 }
    }

    /// Whether a take just left the pool below its low-water mark.
    pub fn below_low_water(&self, depth: usize) -> bool {
        let target = self.lock().target;
        (depth as f64) < (target as f64) * self.sizing.low_water
    }

    /// Keys held now.
    pub fn depth(&self) -> usize {
        self.lock().keys.len()
    }

    /// The size the pool aims for now.
    pub fn target(&self) -> usize {
        self.lock().target
    }

    /// What the pool counted since it started.
    pub fn stats(&self) -> ShelfStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizing() -> Sizing {
        Sizing { min: 4, max: 100, low_water: 0.5, cover: Duration::from_secs(10), ttl: Duration::from_secs(60) }
    }

    fn key(n: u8, minted: Instant) -> PooledKey {
        PooledKey {
            wrapped: WrappedKey::new(vec![n; 8]),
            key_arn: "arn:aws:kms:local:000000000000:key/k".to_owned(),
            key_md5: [n; 16],
            iv: Iv16([n; 16]),
            fingerprint: format!("hmac-sha256:{n}"),
            minted,
        }
    }

    #[test]
    fn keys_leave_oldest_first_and_once() {
        let shelf = Shelf::new(sizing());
        let now = Instant::now();
        for n in 0..3 {
            shelf.put(key(n, now));
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            match shelf.take(now).0 {
                Taken::Hit(k) => seen.push(k.key_md5[0]),
                Taken::Miss { .. } => panic!("a held key was not handed out"),
            }
        }
        assert_eq!(seen, vec![0, 1, 2]);
        assert!(matches!(shelf.take(now).0, Taken::Miss { expired: 0 }));
        assert_eq!(shelf.stats(), ShelfStats { hits: 3, misses: 1, expired: 0, unused: 0 });
    }

    #[test]
    fn an_expired_key_is_discarded_never_handed_out() {
        let shelf = Shelf::new(sizing());
        let start = Instant::now();
        shelf.put(key(1, start));
        shelf.put(key(2, start + Duration::from_secs(30)));
        // At 61 s the first is past its 60 s; the second is handed out.
        match shelf.take(start + Duration::from_secs(61)).0 {
            Taken::Hit(k) => assert_eq!(k.key_md5[0], 2),
            Taken::Miss { .. } => panic!("the young key was not handed out"),
        }
        shelf.put(key(3, start));
        assert!(matches!(shelf.take(start + Duration::from_secs(60)).0, Taken::Miss { expired: 1 }));
        shelf.put(key(4, start));
        shelf.put(key(5, start + Duration::from_secs(10)));
        assert_eq!(shelf.sweep(start + Duration::from_secs(65)), 1);
        assert_eq!(shelf.depth(), 1);
        assert_eq!(shelf.stats().expired, 3);
    }

    #[test]
    fn a_take_of_many_is_all_or_nothing() {
        let shelf = Shelf::new(sizing());
        let start = Instant::now();
        shelf.put(key(0, start));
        for n in 1..5 {
            shelf.put(key(n, start + Duration::from_secs(30)));
        }
        // At 61 s key 0 is expired; 4 young keys remain: 5 is too many.
        let (taken, depth) = shelf.take_many(start + Duration::from_secs(61), 5);
        assert_eq!(taken.err(), Some(1), "the expired key is discarded");
        assert_eq!(depth, 4, "a short pool keeps every young key");
        assert_eq!(shelf.stats(), ShelfStats { hits: 0, misses: 5, expired: 1, unused: 0 });
        let (taken, depth) = shelf.take_many(start + Duration::from_secs(61), 3);
        let taken: Vec<u8> = taken.unwrap().iter().map(|k| k.key_md5[0]).collect();
        assert_eq!(taken, vec![1, 2, 3], "oldest first, in order");
        assert_eq!(depth, 1);
        // The key put back in front by the failed take is the next one out.
        match shelf.take(start + Duration::from_secs(61)).0 {
            Taken::Hit(k) => assert_eq!(k.key_md5[0], 4),
            Taken::Miss { .. } => panic!("the remaining key was not handed out"),
        }
        assert_eq!(shelf.stats(), ShelfStats { hits: 4, misses: 5, expired: 1, unused: 0 });
        assert!(shelf.take_many(start, 0).0.unwrap().is_empty());
    }

    #[test]
    fn the_target_follows_demand_within_bounds() {
        let shelf = Shelf::new(sizing());
        assert_eq!(shelf.target(), 4);
        assert_eq!(shelf.shortfall(), 4, "an empty pool fills to its minimum");
        for _ in 0..5 {
            shelf.take(Instant::now());
        }
        // 5 takes in 1 s, covering 10 s: 50 keys.
        assert_eq!(shelf.adapt(Duration::from_secs(1)), 50);
        for _ in 0..100 {
            shelf.take(Instant::now());
        }
        assert_eq!(shelf.adapt(Duration::from_secs(1)), 100, "never above max");
        // Quiet: the rate falls slowly, never below min.
        let mut target = 100;
        for _ in 0..200 {
            target = shelf.adapt(Duration::from_secs(1));
        }
        assert_eq!(target, 4);
    }

    #[test]
    fn refill_waits_for_the_low_water_mark() {
        let shelf = Shelf::new(sizing());
        let now = Instant::now();
        for n in 0..2 {
            shelf.put(key(n, now));
        }
        // Target 4, low water 2: holding 2 needs nothing yet.
        assert_eq!(shelf.shortfall(), 0);
        assert!(!shelf.below_low_water(2));
        shelf.take(now);
        assert!(shelf.below_low_water(1));
        assert_eq!(shelf.shortfall(), 3);
    }

    #[test]
    fn debug_shows_the_fingerprint_and_no_key_material() {
        let shown = format!("{:?}", key(7, Instant::now()));
        assert_eq!(shown, "PooledKey(hmac-sha256:7, WrappedKey(8 bytes))");
    }
}
