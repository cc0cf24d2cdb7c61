//! Proves that a dropped data key's buffer is zeroed before it is freed.
//!
//! The test suite's only unsafe code: a global allocator that wraps the
//! system allocator and, on every deallocation, looks at the bytes being
//! freed (which the allocator owns at that moment) for a marker pattern
//! before passing the block on. Reading a block inside `dealloc`, before it
//! is released, is sound: the caller has given up the block, no other
//! reference to it can exist, and its `layout.size()` bytes are allocated
//! and initialised or not read by us beyond a byte-wise comparison of
//! plain `u8`s.

#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use keybroker::custody::keys::{DataKey, KeyBits};

/// The marker the allocator looks for, set by a test while it runs.
static WATCH: Mutex<Option<Vec<u8>>> = Mutex::new(None);
static WATCHING: AtomicBool = AtomicBool::new(false);
/// Freed blocks that still held the marker.
static FOUND: AtomicUsize = AtomicUsize::new(0);

/// Keys a test publishes while code it does not control makes and drops
/// them (the key pool's minting): published without a lock or an
/// allocation, so `dealloc` can read them at any moment.
const MAX_MARKERS: usize = 64;
static MARKERS: [[AtomicU8; 32]; MAX_MARKERS] = [const { [const { AtomicU8::new(0) }; 32] }; MAX_MARKERS];
static PUBLISHED: AtomicUsize = AtomicUsize::new(0);
static MARKERS_WATCHED: AtomicBool = AtomicBool::new(false);
/// Freed blocks that still held a published key.
static FOUND_PUBLISHED: AtomicUsize = AtomicUsize::new(0);

/// Publishes a 32-byte key for `dealloc` to look for; false when full.
fn publish_marker(key: &[u8]) -> bool {
    let slot = PUBLISHED.load(Ordering::SeqCst);
    if slot >= MAX_MARKERS || key.len() != 32 {
        return false;
    }
    for (cell, byte) in MARKERS[slot].iter().zip(key) {
        cell.store(*byte, Ordering::SeqCst);
    }
    PUBLISHED.store(slot + 1, Ordering::SeqCst);
    true
}

/// Whether `block` holds any published key (no allocation).
fn holds_a_published_marker(block: &[u8]) -> bool {
    let published = PUBLISHED.load(Ordering::SeqCst).min(MAX_MARKERS);
    (0..published).any(|slot| {
        let mut marker = [0u8; 32];
        for (byte, cell) in marker.iter_mut().zip(&MARKERS[slot]) {
            *byte = cell.load(Ordering::SeqCst);
        }
        block.windows(32).any(|w| w == marker)
    })
}

struct Inspecting;

// SAFETY: every method forwards to `System` with the same arguments, so
// allocation behaviour is the system allocator's. `dealloc` additionally
// reads the block it is about to free, which is valid for `layout.size()`
// bytes until `System.dealloc` returns.
unsafe impl GlobalAlloc for Inspecting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WATCHING.load(Ordering::SeqCst) {
            // SAFETY: `ptr` came from `alloc` with `layout`, is not yet freed,
            // and the caller no longer uses it; we only read it.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            // try_lock: never block or allocate inside the allocator.
            if let Ok(guard) = WATCH.try_lock()
                && let Some(marker) = guard.as_ref()
                && !marker.is_empty()
                && block.windows(marker.len()).any(|w| w == marker.as_slice())
            {
                FOUND.fetch_add(1, Ordering::SeqCst);
            }
        }
        if MARKERS_WATCHED.load(Ordering::SeqCst) {
            // SAFETY: as above: a block being freed, read only.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if holds_a_published_marker(block) {
                FOUND_PUBLISHED.fetch_add(1, Ordering::SeqCst);
            }
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Inspecting = Inspecting;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `drop_it` while the allocator watches for `marker` in freed blocks;
/// answers how many freed blocks still held it.
fn freed_blocks_holding(marker: &[u8], drop_it: impl FnOnce()) -> usize {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    *WATCH.lock().unwrap() = Some(marker.to_vec());
    FOUND.store(0, Ordering::SeqCst);
    WATCHING.store(true, Ordering::SeqCst);
    drop_it();
    WATCHING.store(false, Ordering::SeqCst);
    *WATCH.lock().unwrap() = None;
    FOUND.load(Ordering::SeqCst)
}

#[test]
fn the_check_sees_a_plain_buffer_freed_with_its_bytes() {
    // The positive control: without zeroizing, the allocator sees the bytes.
    let marker: Vec<u8> = (0..32).map(|i| 0xA0 ^ i).collect();
    let plain = marker.clone();
    assert_eq!(freed_blocks_holding(&marker, move || drop(plain)), 1);
}

#[test]
fn a_dropped_data_key_is_zeroed_before_it_is_freed() {
    let marker: Vec<u8> = (0..32).map(|i| 0x5C ^ (i * 3)).collect();
    let key = DataKey::from_vec(marker.clone(), "test").unwrap();
    assert_eq!(key.expose_secret(), marker.as_slice());
    assert_eq!(freed_blocks_holding(&marker, move || drop(key)), 0);
}

#[test]
fn a_generated_key_is_zeroed_too() {
    for bits in [KeyBits::Aes128, KeyBits::Aes192, KeyBits::Aes256] {
        let key = DataKey::generate(bits).unwrap();
        let marker = key.expose_secret().to_vec();
        assert_eq!(freed_blocks_holding(&marker, move || drop(key)), 0, "{bits:?}");
    }
}

#[test]
fn a_rejected_key_of_the_wrong_length_is_zeroed() {
    let marker: Vec<u8> = (0..15).map(|i| 0x33 ^ (i * 5)).collect();
    let material = marker.clone();
    assert_eq!(
        freed_blocks_holding(&marker, move || {
            assert!(DataKey::from_vec(material, "plaintext_key").is_err());
        }),
        0
    );
}

/// Through the broker: an issued key handed back with its plaintext, and an
/// unwrapped key, are zeroed when dropped, and their `Debug` output shows no
/// key bytes in any encoding.
#[tokio::test]
async fn keys_from_the_broker_are_zeroed_and_never_debug_printed() {
    use keybroker::custody::broker::{BrokerSettings, IssueRequest, UnwrapRequest};
    use keybroker::custody::keys::{EncryptionMode, KeyMd5Source, ServiceContext};
    use keybroker::custody::kms::{KmsKeyId, LocalKeyring};
    use keybroker::custody::policy::Grant;

    let dir = tempfile::tempdir().unwrap();
    let ring = std::sync::Arc::new(LocalKeyring::open_or_create(&dir.path().join("mk")).unwrap());
    let settings = BrokerSettings {
        default_key: Some(KmsKeyId::parse("alias/x", "k").unwrap()),
        key_md5: KeyMd5Source::Plaintext,
        kms_deadline: std::time::Duration::from_secs(5),
    };
    let broker = keybroker::custody::broker::Broker::new(
        ring,
        settings,
        keybroker::custody::fingerprint::Fingerprinter::ephemeral().unwrap(),
    );
    let grant = Grant::unrestricted("test", true);
    let issued = broker
        .issue_data_key(
            IssueRequest {
                key_id: None,
                bits: KeyBits::Aes256,
                mode: EncryptionMode::AesGcm,
                return_plaintext: true,
                context: ServiceContext::ElasticTranscoder,
            },
            &grant,
        )
        .await
        .unwrap();
    let plaintext = issued.plaintext.as_ref().unwrap().expose_secret().to_vec();
    let unwrapped = broker
        .unwrap_key(
            UnwrapRequest {
                key_id: None,
                wrapped: issued.block.wrapped.clone(),
                key_md5: Some(issued.block.key_md5),
                context: ServiceContext::ElasticTranscoder,
            },
            &grant,
        )
        .await
        .unwrap();
    assert_eq!(unwrapped.key.expose_secret(), plaintext.as_slice());

    use base64::Engine as _;
    let shown = format!("{issued:?} {unwrapped:?} {:#?}", issued.plaintext);
    for form in [
        hex::encode(&plaintext),
        hex::encode_upper(&plaintext),
        base64::engine::general_purpose::STANDARD.encode(&plaintext),
        format!("{plaintext:?}"),
        format!("{:?}", &plaintext[..8]),
    ] {
        assert!(!shown.contains(&form), "Debug output carries the key: {shown}");
    }
    assert!(shown.contains("redacted"));

    assert_eq!(freed_blocks_holding(&plaintext, move || drop((issued, unwrapped))), 0);
}

/// A request refused for a field over its length limit has its key
/// material wiped before it is dropped, whichever field was too long.
#[test]
fn a_request_refused_at_the_field_limits_has_its_key_material_zeroed() {
    use keybroker::edge::rpc::bounds;
    use keybroker::pb;

    let marker: Vec<u8> = (0..32).map(|i| 0x6D ^ (i * 7)).collect();
    let mut request =
        pb::WrapKeyRequest { kms_key_id: "k".repeat(5000), plaintext_key: marker.clone(), ..Default::default() };
    assert_eq!(
        freed_blocks_holding(&marker, move || {
            assert!(bounds::check(&mut request, "").is_err());
            drop(request);
        }),
        0
    );

    let mut job = pb::SubmitEncryptedJobRequest {
        pipeline_id: "p".repeat(100),
        playlists: vec![pb::Playlist {
            play_ready_drm: Some(pb::PlayReadyDrm { content_key: marker.clone(), ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        freed_blocks_holding(&marker, move || {
            assert!(bounds::check(&mut job, "").is_err());
            drop(job);
        }),
        0
    );
}

/// A KMS over the local keyring that publishes every plaintext it is asked
/// to wrap before wrapping it, so the allocator can look for it in every
/// block freed afterwards.
struct Publishing(std::sync::Arc<keybroker::custody::kms::LocalKeyring>);

#[async_trait::async_trait]
impl keybroker::custody::kms::Kms for Publishing {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn wrap(
        &self,
        key_id: &keybroker::custody::kms::KmsKeyId,
        plaintext: &DataKey,
        context: keybroker::custody::keys::ServiceContext,
    ) -> Result<keybroker::custody::kms::Wrapped, keybroker::custody::kms::KmsError> {
        assert!(publish_marker(plaintext.expose_secret()), "more keys minted than markers");
        self.0.wrap(key_id, plaintext, context).await
    }

    async fn unwrap(
        &self,
        key_id: Option<&keybroker::custody::kms::KmsKeyId>,
        wrapped: &keybroker::custody::keys::WrappedKey,
        context: keybroker::custody::keys::ServiceContext,
    ) -> Result<keybroker::custody::kms::Unwrapped, keybroker::custody::kms::KmsError> {
        self.0.unwrap(key_id, wrapped, context).await
    }
}

/// The key pool mints keys and shelves them wrapped: every minted key's
/// buffer is zeroed before it is freed (no freed block holds any of them),
/// the pool's keys are those very keys (KMS unwraps them to the published
/// plaintexts), and nothing the pool holds prints key bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_zeroes_every_key_it_mints_and_holds_none() {
    use keybroker::custody::broker::{Broker, BrokerSettings};
    use keybroker::custody::keys::{EncryptionMode, KeyMd5Source, ServiceContext};
    use keybroker::custody::kms::{Kms as _, KmsKeyId, LocalKeyring};
    use keybroker::custody::pool::{Cadence, PoolKey, PoolSettings, Sizing};
    use std::time::Duration;

    // Runs beside the other tests: its markers are its own random keys,
    // which no other test's blocks hold.
    let dir = tempfile::tempdir().unwrap();
    let ring = std::sync::Arc::new(LocalKeyring::open_or_create(&dir.path().join("mk")).unwrap());
    let key_id = KmsKeyId::parse("alias/pool", "k").unwrap();
    let settings = BrokerSettings {
        default_key: Some(key_id.clone()),
        key_md5: KeyMd5Source::Plaintext,
        kms_deadline: Duration::from_secs(5),
    };
    let pool_settings = PoolSettings {
        sizing: Sizing {
            min: 48,
            max: 48,
            low_water: 0.5,
            cover: Duration::from_secs(1),
            ttl: Duration::from_secs(600),
        },
        cadence: Cadence { tick: Duration::from_millis(50), concurrency: 8, backoff: Duration::from_millis(100) },
    };
    let pool_key =
        PoolKey { key_id: key_id.clone(), context: ServiceContext::ElasticTranscoder, bits: KeyBits::Aes256 };
    FOUND_PUBLISHED.store(0, Ordering::SeqCst);
    PUBLISHED.store(0, Ordering::SeqCst);
    MARKERS_WATCHED.store(true, Ordering::SeqCst);
    let broker = Broker::new(
        std::sync::Arc::new(Publishing(ring.clone())),
        settings,
        keybroker::custody::fingerprint::Fingerprinter::ephemeral().unwrap(),
    )
    .with_pool(pool_settings, vec![pool_key]);
    let pool = broker.pool().unwrap();
    assert!(pool.wait_filled(48, Duration::from_secs(30)).await, "the pool did not fill");
    // Let minting that raced past the target finish and drop its keys.
    tokio::time::sleep(Duration::from_millis(200)).await;
    MARKERS_WATCHED.store(false, Ordering::SeqCst);
    let minted = PUBLISHED.load(Ordering::SeqCst);
    assert!(minted >= 48, "{minted} keys minted");
    assert_eq!(FOUND_PUBLISHED.load(Ordering::SeqCst), 0, "a minted key's buffer was freed unzeroed");

    // The published plaintexts are the pooled keys: KMS unwraps each
    // handed-out key to one of them.
    let published: Vec<Vec<u8>> = (0..minted.min(MAX_MARKERS))
        .map(|slot| MARKERS[slot].iter().map(|c| c.load(Ordering::SeqCst)).collect())
        .collect();
    let shown = format!("{:?}", pool.depths());
    for _ in 0..8 {
        let issued = broker
            .issue_wrapped(&key_id, KeyBits::Aes256, EncryptionMode::AesCbcPkcs7, ServiceContext::ElasticTranscoder)
            .await
            .unwrap();
        let plaintext = ring.unwrap(None, &issued.block.wrapped, ServiceContext::ElasticTranscoder).await.unwrap();
        assert!(
            published.iter().any(|p| p.as_slice() == plaintext.key.expose_secret()),
            "a pooled key was not minted here"
        );
        let shown = format!("{shown} {issued:?}");
        for key in &published {
            assert!(!shown.contains(&hex::encode(key)), "Debug output carries a key");
        }
    }

    // The positive control, in the same mechanism: a copy of a minted key
    // freed without zeroing is seen.
    let copy = published[0].clone();
    MARKERS_WATCHED.store(true, Ordering::SeqCst);
    drop(copy);
    MARKERS_WATCHED.store(false, Ordering::SeqCst);
    assert_eq!(FOUND_PUBLISHED.load(Ordering::SeqCst), 1);
}
