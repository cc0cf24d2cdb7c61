//! `aes-gcm`: GCM with the 16-byte IV as nonce, no AAD, the 16-byte tag
//! appended: what `AESGCM(key).encrypt(iv16, data, None)` in Python's
//! `cryptography` writes.
//!
//! NIST SP 800-38D section 7 with a 128-bit IV: J0 = GHASH_H(IV || 0^64 ||
//! \[128\]_64), the payload keystream starts at inc32(J0), the tag is
//! E_K(J0) XOR GHASH_H(C || \[0\]_64 || \[len(C)\]_64). AWS-LC computes it
//! (see [`super::evp`]), streaming: decryption holds back only the last 16
//! bytes, which may be the tag, and AWS-LC compares tags in constant time.

use super::evp::{Direction, EvpStream, Kind};
use super::format::{BLOCK_LEN, CipherError, GCM_MAX_PLAINTEXT_LEN, GCM_TAG_LEN};
use crate::custody::keys::EncryptionMode;

/// Counts ciphertext bytes against the NIST limit for one key and IV.
#[derive(Debug, Default)]
struct Budget {
    len: u64,
}

impl Budget {
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
}

/// Streaming GCM encryption.
pub(super) struct GcmEncrypt {
    stream: EvpStream,
    budget: Budget,
}

impl GcmEncrypt {
    pub(super) fn new(key: &[u8], iv: &[u8; BLOCK_LEN]) -> Result<Self, CipherError> {
        Ok(GcmEncrypt { stream: EvpStream::new(Kind::Gcm, Direction::Encrypt, key, iv)?, budget: Budget::default() })
    }

    pub(super) fn encrypt_update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.budget.admit(input.len())?;
        out.reserve(input.len() + GCM_TAG_LEN);
        self.stream.update(input, out)
    }

    /// Appends the tag.
    pub(super) fn encrypt_finalize(self, out: &mut Vec<u8>) -> Result<(), CipherError> {
        out.extend_from_slice(&self.stream.gcm_tag()?);
        Ok(())
    }
}

/// Streaming GCM decryption; the last 16 bytes seen are held back as the
/// candidate tag.
pub(super) struct GcmDecrypt {
    stream: EvpStream,
    budget: Budget,
    held: [u8; GCM_TAG_LEN],
    held_len: usize,
}

impl GcmDecrypt {
    pub(super) fn new(key: &[u8], iv: &[u8; BLOCK_LEN]) -> Result<Self, CipherError> {
        Ok(GcmDecrypt {
            stream: EvpStream::new(Kind::Gcm, Direction::Decrypt, key, iv)?,
            budget: Budget::default(),
            held: [0; GCM_TAG_LEN],
            held_len: 0,
        })
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
        self.budget.admit(release)?;
        out.reserve(release);
        let held = self.held;
        if release >= self.held_len {
            let (now, tag) = input.split_at(release - self.held_len);
            self.stream.update(&held[..self.held_len], out)?;
            self.stream.update(now, out)?;
            self.held.copy_from_slice(tag);
        } else {
            self.stream.update(&held[..release], out)?;
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
        self.stream.gcm_verify(&self.held)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [0x61; 16];

    #[test]
    fn encryption_stops_at_the_nist_length_limit() {
        let mut enc = GcmEncrypt::new(&KEY, &[0x62; 16]).unwrap();
        enc.budget.len = GCM_MAX_PLAINTEXT_LEN - 10;
        let mut out = Vec::new();
        assert_eq!(enc.encrypt_update(&[0; 11], &mut out), Err(CipherError::TooLong));
        assert!(out.is_empty(), "a refused chunk appends nothing");
        enc.encrypt_update(&[0; 10], &mut out).unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(enc.encrypt_update(&[0; 1], &mut out), Err(CipherError::TooLong));
    }

    #[test]
    fn decryption_stops_at_the_nist_length_limit() {
        let mut dec = GcmDecrypt::new(&KEY, &[0x62; 16]).unwrap();
        dec.budget.len = GCM_MAX_PLAINTEXT_LEN - 10;
        let mut out = Vec::new();
        // 16 bytes are held as the tag; the 11 before them are too many.
        assert_eq!(dec.decrypt_update(&[0; 27], &mut out), Err(CipherError::TooLong));
        assert!(out.is_empty());
        dec.decrypt_update(&[0; 26], &mut out).unwrap();
        assert_eq!(out.len(), 10);
    }
}
