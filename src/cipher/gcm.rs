//! `aes-gcm`: GCM with the 16-byte IV as nonce, no AAD, the 16-byte tag
//! appended: what `AESGCM(key).encrypt(iv16, data, None)` in Python's
//! `cryptography` writes.
//!
//! Built from `aes`, a 32-bit counter ([`::ctr::flavors::Ctr32BE`]) and
//! `ghash`, following NIST SP 800-38D section 7: H = E_K(0^128); for a
//! 128-bit IV, J0 = GHASH_H(IV || 0^64 || \[128\]_64); the payload keystream
//! starts at inc32(J0); the tag is E_K(J0) XOR GHASH_H(C || \[0\]_64 ||
//! \[len(C)\]_64). Unlike the one-shot `aes_gcm::AesGcm`, it streams: the
//! ciphertext is hashed as it passes, and decryption holds back only the last
//! 16 bytes, which may be the tag. Tags are compared in constant time.

use ::cipher::BlockCipherEncrypt;
use ::cipher::array::Array;
use ::cipher::consts::U16;
use ::ctr::flavors::Ctr32BE;
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use zeroize::Zeroizing;

use super::ctr::Keystream;
use super::{BLOCK_LEN, CipherError, GCM_MAX_PLAINTEXT_LEN, GCM_TAG_LEN, PIECE};
use crate::keys::EncryptionMode;

type Block = Array<u8, U16>;

/// The state both directions share: keystream, running GHASH, tag mask.
struct GcmCore<C: BlockCipherEncrypt<BlockSize = U16>> {
    keystream: Keystream<C, Ctr32BE>,
    ghash: GHash,
    /// Ciphertext not yet a whole block for GHASH (public data).
    partial: [u8; BLOCK_LEN],
    partial_len: usize,
    /// E_K(J0), XORed onto GHASH to make the tag.
    mask: Zeroizing<[u8; BLOCK_LEN]>,
    /// Ciphertext bytes accepted so far (excluding the tag).
    len: u64,
}

impl<C: BlockCipherEncrypt<BlockSize = U16>> GcmCore<C> {
    fn new(cipher: C, iv: &[u8; BLOCK_LEN]) -> Self {
        let mut h = Zeroizing::new([0u8; BLOCK_LEN]);
        cipher.encrypt_block((&mut *h).into());
        let ghash = GHash::new((&*h).into());

        // A 128-bit IV needs no zero padding (s = 0), then one length block.
        let mut j0_hash = ghash.clone();
        j0_hash.update(&[Block::from(*iv), length_block(0, BLOCK_LEN as u64)]);
        let j0 = Zeroizing::new(<[u8; BLOCK_LEN]>::from(j0_hash.finalize()));

        let mut keystream = Keystream::new(cipher, &j0);
        // The first counter block, J0, masks the tag; the payload starts at inc32(J0).
        let mut mask = Zeroizing::new([0u8; BLOCK_LEN]);
        keystream.apply(&mut *mask);
        GcmCore { keystream, ghash, partial: [0; BLOCK_LEN], partial_len: 0, mask, len: 0 }
    }

    /// Accounts for `n` more ciphertext bytes, refusing to pass the limit.
    fn admit(&mut self, n: usize) -> Result<(), CipherError> {
        match self.len.checked_add(n as u64) {
            Some(len) if len <= GCM_MAX_PLAINTEXT_LEN => {
                self.len = len;
                Ok(())
            }
            _ => Err(CipherError::TooLong),
        }
    }

    /// Feeds ciphertext to GHASH, buffering a partial block.
    fn absorb(&mut self, mut ciphertext: &[u8]) {
        if self.partial_len > 0 {
            let take = (BLOCK_LEN - self.partial_len).min(ciphertext.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&ciphertext[..take]);
            self.partial_len += take;
            ciphertext = &ciphertext[take..];
            if self.partial_len < BLOCK_LEN {
                return;
            }
            self.ghash.update(&[Block::from(self.partial)]);
            self.partial_len = 0;
        }
        let (blocks, tail) = Block::slice_as_chunks(ciphertext);
        self.ghash.update(blocks);
        self.partial[..tail.len()].copy_from_slice(tail);
        self.partial_len = tail.len();
    }

    /// Hashes and decrypts ciphertext (already admitted), appending plaintext.
    fn open(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) {
        for piece in ciphertext.chunks(PIECE) {
            self.absorb(piece);
            let start = out.len();
            out.extend_from_slice(piece);
            self.keystream.apply(&mut out[start..]);
        }
    }

    /// GHASH over the padded ciphertext and the length block, ready to be
    /// finalized or verified.
    fn into_ghash(mut self) -> (GHash, Zeroizing<[u8; BLOCK_LEN]>) {
        self.ghash.update_padded(&self.partial[..self.partial_len]);
        self.ghash.update(&[length_block(0, self.len)]);
        (self.ghash, self.mask)
    }
}

/// `[len(A)]_64 || [len(C)]_64`, in bits, from lengths in bytes.
fn length_block(aad_len: u64, ciphertext_len: u64) -> Block {
    let mut block = [0u8; BLOCK_LEN];
    block[..8].copy_from_slice(&(aad_len * 8).to_be_bytes());
    block[8..].copy_from_slice(&(ciphertext_len * 8).to_be_bytes());
    Block::from(block)
}

/// Streaming GCM encryption.
pub(super) struct GcmEncrypt<C: BlockCipherEncrypt<BlockSize = U16>> {
    core: GcmCore<C>,
}

impl<C: BlockCipherEncrypt<BlockSize = U16>> GcmEncrypt<C> {
    pub(super) fn new(cipher: C, iv: &[u8; BLOCK_LEN]) -> Self {
        GcmEncrypt { core: GcmCore::new(cipher, iv) }
    }

    pub(super) fn encrypt_update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.core.admit(input.len())?;
        out.reserve(input.len() + GCM_TAG_LEN);
        for piece in input.chunks(PIECE) {
            let start = out.len();
            out.extend_from_slice(piece);
            self.core.keystream.apply(&mut out[start..]);
            self.core.absorb(&out[start..]);
        }
        Ok(())
    }

    pub(super) fn encrypt_finalize(self, out: &mut Vec<u8>) {
        let (ghash, mask) = self.core.into_ghash();
        let mut tag = <[u8; BLOCK_LEN]>::from(ghash.finalize());
        for (byte, m) in tag.iter_mut().zip(mask.iter()) {
            *byte ^= m;
        }
        out.extend_from_slice(&tag);
    }
}

/// Streaming GCM decryption; the last 16 bytes seen are held back as the
/// candidate tag.
pub(super) struct GcmDecrypt<C: BlockCipherEncrypt<BlockSize = U16>> {
    core: GcmCore<C>,
    held: [u8; GCM_TAG_LEN],
    held_len: usize,
}

impl<C: BlockCipherEncrypt<BlockSize = U16>> GcmDecrypt<C> {
    pub(super) fn new(cipher: C, iv: &[u8; BLOCK_LEN]) -> Self {
        GcmDecrypt { core: GcmCore::new(cipher, iv), held: [0; GCM_TAG_LEN], held_len: 0 }
    }

    pub(super) fn decrypt_update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        let total = self.held_len + input.len();
        if total <= GCM_TAG_LEN {
            self.held[self.held_len..total].copy_from_slice(input);
            self.held_len = total;
            return Ok(());
        }
        // Everything but the last 16 bytes is ciphertext.
        let release = total - GCM_TAG_LEN;
        self.core.admit(release)?;
        out.reserve(release);
        let held = self.held;
        if release >= self.held_len {
            let (now, tag) = input.split_at(release - self.held_len);
            self.core.open(&held[..self.held_len], out);
            self.core.open(now, out);
            self.held.copy_from_slice(tag);
        } else {
            self.core.open(&held[..release], out);
            self.held.copy_within(release..self.held_len, 0);
            self.held[self.held_len - release..].copy_from_slice(input);
        }
        self.held_len = GCM_TAG_LEN;
        Ok(())
    }

    pub(super) fn decrypt_finalize(self, _out: &mut Vec<u8>) -> Result<(), CipherError> {
        if self.held_len < GCM_TAG_LEN {
            return Err(CipherError::Truncated {
                mode: EncryptionMode::AesGcm,
                len: self.held_len as u64,
                rule: "shorter than the 16-byte tag",
            });
        }
        let (ghash, mask) = self.core.into_ghash();
        // tag = GHASH ^ mask, so compare GHASH with tag ^ mask: `verify` is
        // constant time.
        let mut expected = self.held;
        for (byte, m) in expected.iter_mut().zip(mask.iter()) {
            *byte ^= m;
        }
        ghash.verify(&Block::from(expected)).map_err(|_| CipherError::Authentication)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ::cipher::KeyInit;
    use aes::Aes128;

    use super::*;

    fn cipher() -> Aes128 {
        Aes128::new_from_slice(&[0x61; 16]).unwrap()
    }

    #[test]
    fn encryption_stops_at_the_nist_length_limit() {
        let mut enc = GcmEncrypt::new(cipher(), &[0x62; 16]);
        enc.core.len = GCM_MAX_PLAINTEXT_LEN - 10;
        let mut out = Vec::new();
        assert_eq!(enc.encrypt_update(&[0; 11], &mut out), Err(CipherError::TooLong));
        assert!(out.is_empty(), "a refused chunk appends nothing");
        enc.encrypt_update(&[0; 10], &mut out).unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(enc.encrypt_update(&[0; 1], &mut out), Err(CipherError::TooLong));
    }

    #[test]
    fn decryption_stops_at_the_nist_length_limit() {
        let mut dec = GcmDecrypt::new(cipher(), &[0x62; 16]);
        dec.core.len = GCM_MAX_PLAINTEXT_LEN - 10;
        let mut out = Vec::new();
        // 16 bytes are held as the tag; the 11 before them are too many.
        assert_eq!(dec.decrypt_update(&[0; 27], &mut out), Err(CipherError::TooLong));
        assert!(out.is_empty());
        dec.decrypt_update(&[0; 26], &mut out).unwrap();
        assert_eq!(out.len(), 10);
    }
}
