//! The formats' shared facts: block and tag lengths, the GCM limit, the
//! length a plaintext becomes, and why a file could not be encrypted or
//! decrypted. Shared by every mode's file; holds no key material.

use crate::custody::keys::EncryptionMode;

/// The AES block in bytes: the unit CBC pads to, and the size of an IV.
pub const BLOCK_LEN: usize = 16;

/// The GCM tag the `aes-gcm` format appends, and the bytes a GCM
/// [`Decryptor`](super::Decryptor) must hold back because they may be that tag.
pub const GCM_TAG_LEN: usize = 16;

/// Bytes copied and then transformed in place in one go, so the cipher pass
/// (and GCM's hash pass) read from the L1 cache what the copy just wrote.
pub(super) const PIECE: usize = 8 * 1024;

/// The most plaintext one GCM key and IV may protect: 2^36 - 32 bytes
/// (NIST SP 800-38D, section 5.2.1.1); beyond it the 32-bit counter would
/// wrap and reuse keystream.
pub const GCM_MAX_PLAINTEXT_LEN: u64 = (1 << 36) - 32;

/// Why a file could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    /// `s3` and `s3-aws-kms` are server-side encryption: there is no
    /// client-side file format to apply.
    #[error("{}: server-side encryption has no client-side file format", .mode.as_str())]
    UnsupportedMode {
        /// The mode asked for.
        mode: EncryptionMode,
    },
    /// The data key is not an AES key length (a `DataKey` should make this
    /// impossible; kept so a bad key is an error, not a panic).
    #[error("the data key is {len} bytes; AES needs 16, 24 or 32")]
    KeyLength {
        /// The length seen.
        len: usize,
    },
    /// The ciphertext ended early: a CBC file that is not a whole, non-zero
    /// number of 16-byte blocks, or a GCM file shorter than its tag.
    #[error("{}: ciphertext truncated: {len} bytes, {rule}", .mode.as_str())]
    Truncated {
        /// The mode.
        mode: EncryptionMode,
        /// How many ciphertext bytes arrived.
        len: u64,
        /// The rule they break.
        rule: &'static str,
    },
    /// The last CBC block does not end in valid PKCS#7 padding: a wrong key or
    /// IV, or a damaged file.
    #[error("aes-cbc-pkcs7: invalid PKCS#7 padding (wrong key or IV, or a damaged file)")]
    Padding,
    /// The GCM tag does not match: a wrong key or IV, or a damaged or forged
    /// file. Everything already decrypted must be discarded.
    #[error("aes-gcm: authentication failed (wrong key or IV, or a damaged or forged file); discard all output")]
    Authentication,
    /// The AES library refused an operation (it should not: lengths and
    /// parameters are checked first). Names the step, never key material.
    #[error("AES backend failure: {0}")]
    Backend(&'static str),
    /// More than [`GCM_MAX_PLAINTEXT_LEN`] bytes under one GCM key and IV.
    #[error("aes-gcm: more than {GCM_MAX_PLAINTEXT_LEN} bytes under one key and IV (NIST SP 800-38D limit)")]
    TooLong,
}

/// The length of the file a plaintext of `plaintext_len` bytes becomes, so
/// callers can set `Content-Length` or preallocate before streaming.
///
/// `aes-cbc-pkcs7` pads to the next multiple of 16, adding a full block when
/// already aligned; `aes-ctr` keeps the length; `aes-gcm` adds the 16-byte
/// tag. `s3` and `s3-aws-kms` store the bytes as given. Saturates at
/// `u64::MAX` rather than wrapping.
pub fn ciphertext_len(mode: EncryptionMode, plaintext_len: u64) -> u64 {
    let block = BLOCK_LEN as u64;
    match mode {
        EncryptionMode::AesCbcPkcs7 => (plaintext_len / block).saturating_add(1).saturating_mul(block),
        EncryptionMode::AesGcm => plaintext_len.saturating_add(GCM_TAG_LEN as u64),
        EncryptionMode::AesCtr | EncryptionMode::S3 | EncryptionMode::S3AwsKms => plaintext_len,
    }
}
