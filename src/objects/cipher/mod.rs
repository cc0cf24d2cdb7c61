//! File encryption in Elastic Transcoder's client-side formats, streaming.
//!
//! Owns the byte-exact formats of ET-ENCRYPTION.md ("File formats for
//! client-side encryption"): `aes-cbc-pkcs7` (what `openssl enc -nosalt
//! -aes-NNN-cbc` writes), `aes-ctr` (the IV is the initial 128-bit big-endian
//! counter block, as `openssl enc -aes-NNN-ctr` writes) and `aes-gcm` (the
//! 16-byte IV as nonce with a GHASH-derived J0, no AAD, the 16-byte tag
//! appended). Every key size (128, 192, 256) works in every mode.
//!
//! [`Encryptor`] and [`Decryptor`] run in constant memory: they hold back at
//! most one block (CBC), or the 16 bytes that may be the tag (GCM decryption),
//! and append everything else to the caller's buffer, so a file of any size
//! streams through a fixed pair of buffers.
//!
//! This module must never log, format or persist key bytes, key schedules,
//! keystream or plaintext it holds back; its `Debug` output names only the
//! mode and key size. Key schedules are zeroized on drop (the `aes` crate's
//! `zeroize` feature for CBC; `EVP_CIPHER_CTX_free`'s cleanse for CTR and
//! GCM); held-back CBC plaintext is kept in [`zeroize::Zeroizing`] storage. It holds no I/O: callers own files and
//! sockets.
//!
//! Streaming decryption releases plaintext before it can be authenticated:
//! for `aes-gcm`, output is trustworthy only once [`Decryptor::finalize`]
//! returns `Ok`. Callers that write plaintext somewhere durable should write
//! to a temporary place and publish it only then.

mod cbc;
mod ctr;
mod evp;
mod format;
mod gcm;
#[cfg(test)]
mod tests;

use std::fmt;

use ::cipher::KeyInit;
use aes::{Aes128, Aes192, Aes256};

use crate::custody::keys::{DataKey, EncryptionMode, Iv16, KeyBits};

pub use self::format::{BLOCK_LEN, CipherError, GCM_MAX_PLAINTEXT_LEN, GCM_TAG_LEN, ciphertext_len};

use self::cbc::{CbcDecrypt, CbcEncrypt};
use self::ctr::CtrStream;
use self::gcm::{GcmDecrypt, GcmEncrypt};

/// An expanded AES key of one of the three sizes, for CBC; an enum so that CBC
/// is monomorphized per size instead of going through a vtable.
enum AnyAes {
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
}

impl AnyAes {
    fn new(key: &DataKey) -> Result<Self, CipherError> {
        let bytes = key.expose_secret();
        let bad_len = |_| CipherError::KeyLength { len: bytes.len() };
        Ok(match bytes.len() {
            16 => AnyAes::Aes128(Aes128::new_from_slice(bytes).map_err(bad_len)?),
            24 => AnyAes::Aes192(Aes192::new_from_slice(bytes).map_err(bad_len)?),
            32 => AnyAes::Aes256(Aes256::new_from_slice(bytes).map_err(bad_len)?),
            len => return Err(CipherError::KeyLength { len }),
        })
    }
}

/// Declares a mode-and-key-size state enum, plus `mode()` and `key_bits()`.
/// CBC is RustCrypto's, monomorphized per key size; CTR and GCM are
/// AWS-LC's (see [`evp`]), keyed from the bytes.
macro_rules! state_enum {
    ($name:ident, $cbc:ident, $ctr:ident, $gcm:ident) => {
        enum $name {
            Cbc128($cbc<Aes128>),
            Cbc192($cbc<Aes192>),
            Cbc256($cbc<Aes256>),
            Ctr($ctr, KeyBits),
            Gcm($gcm, KeyBits),
        }

        impl $name {
            fn new(mode: EncryptionMode, key: &DataKey, iv: &Iv16) -> Result<Self, CipherError> {
                let iv = &iv.0;
                let bytes = key.expose_secret();
                let bits =
                    || KeyBits::from_len(bytes.len(), "key").map_err(|_| CipherError::KeyLength { len: bytes.len() });
                Ok(match mode {
                    EncryptionMode::AesCtr => $name::Ctr($ctr::new(bytes, iv)?, bits()?),
                    EncryptionMode::AesGcm => $name::Gcm($gcm::new(bytes, iv)?, bits()?),
                    EncryptionMode::AesCbcPkcs7 => match AnyAes::new(key)? {
                        AnyAes::Aes128(c) => $name::Cbc128($cbc::new(c, iv)),
                        AnyAes::Aes192(c) => $name::Cbc192($cbc::new(c, iv)),
                        AnyAes::Aes256(c) => $name::Cbc256($cbc::new(c, iv)),
                    },
                    // Server-side modes: refused before any key is touched.
                    EncryptionMode::S3 | EncryptionMode::S3AwsKms => {
                        return Err(CipherError::UnsupportedMode { mode });
                    }
                })
            }

            fn mode(&self) -> EncryptionMode {
                match self {
                    $name::Cbc128(_) | $name::Cbc192(_) | $name::Cbc256(_) => EncryptionMode::AesCbcPkcs7,
                    $name::Ctr(..) => EncryptionMode::AesCtr,
                    $name::Gcm(..) => EncryptionMode::AesGcm,
                }
            }

            fn key_bits(&self) -> KeyBits {
                match self {
                    $name::Cbc128(_) => KeyBits::Aes128,
                    $name::Cbc192(_) => KeyBits::Aes192,
                    $name::Cbc256(_) => KeyBits::Aes256,
                    $name::Ctr(_, bits) | $name::Gcm(_, bits) => *bits,
                }
            }
        }
    };
}

/// Runs `$body` with `$state` bound to whichever variant `$value` holds.
macro_rules! dispatch {
    ($name:ident, $value:expr, $state:ident => $body:expr) => {
        match $value {
            $name::Cbc128($state) => $body,
            $name::Cbc192($state) => $body,
            $name::Cbc256($state) => $body,
            $name::Ctr($state, _) => $body,
            $name::Gcm($state, _) => $body,
        }
    };
}

state_enum!(EncryptState, CbcEncrypt, CtrStream, GcmEncrypt);
state_enum!(DecryptState, CbcDecrypt, CtrStream, GcmDecrypt);

/// Encrypts one file in an ET format, a chunk at a time, so a file of any size
/// needs only the caller's reusable buffers.
///
/// Feed the plaintext to [`update`](Self::update) in chunks of any size, then
/// call [`finalize`](Self::finalize) once; the concatenated output is the
/// whole file. Never reuse a key and IV for two files.
pub struct Encryptor {
    state: EncryptState,
}

impl Encryptor {
    /// Expands the key for `mode`; no bytes are produced yet.
    ///
    /// # Errors
    /// [`CipherError::UnsupportedMode`] for `s3` and `s3-aws-kms`;
    /// [`CipherError::KeyLength`] if the key is not 16, 24 or 32 bytes.
    pub fn new(mode: EncryptionMode, key: &DataKey, iv: &Iv16) -> Result<Self, CipherError> {
        Ok(Encryptor { state: EncryptState::new(mode, key, iv)? })
    }

    /// Encrypts `input` and appends the ciphertext ready so far to `out`
    /// (CBC holds back less than one block until more input or
    /// [`finalize`](Self::finalize)).
    ///
    /// Appends at most `input.len() + 16` bytes: give `out` that much spare
    /// capacity and `clear()` it between chunks, and it never reallocates
    /// (so no copy of plaintext is left behind in freed memory).
    ///
    /// # Errors
    /// [`CipherError::TooLong`] when an `aes-gcm` file would exceed
    /// [`GCM_MAX_PLAINTEXT_LEN`]; the rejected chunk is not consumed and
    /// nothing is appended, so the file so far can still be finalized.
    /// [`CipherError::Backend`] when the AES library failed; every later
    /// call fails too.
    pub fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        dispatch!(EncryptState, &mut self.state, s => s.encrypt_update(input, out))
    }

    /// Appends the rest of the file (at most 16 bytes): CBC's padded last
    /// block, or GCM's tag.
    ///
    /// # Errors
    /// [`CipherError::Backend`] when the AES library failed (the file has
    /// no valid end and must be discarded).
    pub fn finalize(self, out: &mut Vec<u8>) -> Result<(), CipherError> {
        dispatch!(EncryptState, self.state, s => s.encrypt_finalize(out))
    }
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor")
            .field("mode", &self.state.mode().as_str())
            .field("key_bits", &self.state.key_bits().bits())
            .finish_non_exhaustive()
    }
}

/// Decrypts one file in an ET format, a chunk at a time, so a file of any size
/// needs only the caller's reusable buffers.
///
/// For `aes-gcm` the plaintext appended by [`update`](Self::update) is
/// unauthenticated until [`finalize`](Self::finalize) returns `Ok`; on any
/// error, discard everything this decryptor produced.
pub struct Decryptor {
    state: DecryptState,
}

impl Decryptor {
    /// Expands the key for `mode`; no bytes are produced yet.
    ///
    /// # Errors
    /// [`CipherError::UnsupportedMode`] for `s3` and `s3-aws-kms`;
    /// [`CipherError::KeyLength`] if the key is not 16, 24 or 32 bytes.
    pub fn new(mode: EncryptionMode, key: &DataKey, iv: &Iv16) -> Result<Self, CipherError> {
        Ok(Decryptor { state: DecryptState::new(mode, key, iv)? })
    }

    /// Decrypts `input` and appends the plaintext ready so far to `out`. CBC
    /// holds back its last block (it carries the padding), GCM the last 16
    /// bytes (they may be the tag), until [`finalize`](Self::finalize).
    ///
    /// Appends at most `input.len() + 16` bytes: give `out` that much spare
    /// capacity and `clear()` it between chunks, and it never reallocates
    /// (so no copy of plaintext is left behind in freed memory).
    ///
    /// # Errors
    /// [`CipherError::TooLong`] when an `aes-gcm` file would exceed
    /// [`GCM_MAX_PLAINTEXT_LEN`] plus its tag; nothing is appended.
    pub fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        dispatch!(DecryptState, &mut self.state, s => s.decrypt_update(input, out))
    }

    /// Checks the end of the file and appends the last plaintext: CBC's
    /// unpadded last block; for GCM, nothing, but this is where the tag is
    /// verified.
    ///
    /// # Errors
    /// [`CipherError::Truncated`] when CBC input is not a whole, non-zero
    /// number of blocks or GCM input is shorter than its tag;
    /// [`CipherError::Padding`] for bad PKCS#7 padding;
    /// [`CipherError::Authentication`] when the GCM tag does not match.
    pub fn finalize(self, out: &mut Vec<u8>) -> Result<(), CipherError> {
        dispatch!(DecryptState, self.state, s => s.decrypt_finalize(out))
    }
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decryptor")
            .field("mode", &self.state.mode().as_str())
            .field("key_bits", &self.state.key_bits().bits())
            .finish_non_exhaustive()
    }
}
