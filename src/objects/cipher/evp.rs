//! AES-CTR and AES-GCM through AWS-LC's EVP cipher interface (the
//! `aws-lc-sys` bindings that `aws-lc-rs`, and so rustls, already link).
//!
//! Why not a safe crate: `aws-lc-rs` offers GCM only with 96-bit nonces and
//! one-shot, and ET's `aes-gcm` format needs a 16-byte nonce, streamed.
//! AWS-LC's EVP interface streams GCM with any nonce length
//! (`EVP_CTRL_GCM_SET_IVLEN`) and runs its stitched AES-NI/VAES +
//! (V)PCLMULQDQ code, as `openssl speed` does; the RustCrypto composition ran
//! at about 0.6 of that. CTR comes from the same interface for the same
//! reason (AWS-LC's `ctr32` loop carries into the upper 96 bits, so the
//! counter is the full 128-bit big-endian increment of `openssl enc`).
//!
//! This is the crate's only `unsafe` code. Each block states why it is
//! sound; every length crossing the boundary is checked to fit a C `int`,
//! and output is written only into capacity reserved beforehand.
//! `EVP_CIPHER_CTX_free` cleanses the key schedule and GCM state.

#![allow(unsafe_code)]

use std::ffi::c_int;
use std::ptr::NonNull;

use aws_lc_sys as ffi;

use super::format::{BLOCK_LEN, CipherError, GCM_TAG_LEN};

/// Input handed to one EVP update call: well inside a C `int`.
const MAX_UPDATE: usize = 1 << 30;

/// Which EVP cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// AES-CTR, 128-bit counter.
    Ctr,
    /// AES-GCM with a 16-byte nonce.
    Gcm,
}

/// Which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Encrypt,
    Decrypt,
}

/// One EVP cipher context, keyed: a stream cipher that appends exactly as
/// many bytes as it is given.
pub(super) struct EvpStream {
    ctx: NonNull<ffi::EVP_CIPHER_CTX>,
    direction: Direction,
    kind: Kind,
    /// A call failed: the context's state is unknown, so every later call
    /// fails too instead of producing bytes from it.
    failed: bool,
}

// SAFETY: an EVP_CIPHER_CTX has no thread affinity; `EvpStream` owns its
// context exclusively (no Clone, `&mut self` for every use), so moving it
// to another thread is sound. It is not `Sync`.
unsafe impl Send for EvpStream {}

impl Drop for EvpStream {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from EVP_CIPHER_CTX_new and is freed once, here.
        // The free cleanses the key schedule and mode state.
        unsafe { ffi::EVP_CIPHER_CTX_free(self.ctx.as_ptr()) }
    }
}

fn evp_cipher(kind: Kind, key_len: usize) -> Result<*const ffi::EVP_CIPHER, CipherError> {
    // SAFETY: these return pointers to static cipher tables; no arguments.
    Ok(unsafe {
        match (kind, key_len) {
            (Kind::Ctr, 16) => ffi::EVP_aes_128_ctr(),
            (Kind::Ctr, 24) => ffi::EVP_aes_192_ctr(),
            (Kind::Ctr, 32) => ffi::EVP_aes_256_ctr(),
            (Kind::Gcm, 16) => ffi::EVP_aes_128_gcm(),
            (Kind::Gcm, 24) => ffi::EVP_aes_192_gcm(),
            (Kind::Gcm, 32) => ffi::EVP_aes_256_gcm(),
            (_, len) => return Err(CipherError::KeyLength { len }),
        }
    })
}

/// An EVP call's return value: 1 is success.
fn check(ret: c_int, what: &'static str) -> Result<(), CipherError> {
    if ret == 1 { Ok(()) } else { Err(CipherError::Backend(what)) }
}

impl EvpStream {
    /// Keys a context for `kind` in `direction` with `iv` (the CTR counter
    /// block, or the GCM nonce).
    pub(super) fn new(kind: Kind, direction: Direction, key: &[u8], iv: &[u8; BLOCK_LEN]) -> Result<Self, CipherError> {
        let cipher = evp_cipher(kind, key.len())?;
        // SAFETY: no arguments; a null return is handled.
        let ctx =
            NonNull::new(unsafe { ffi::EVP_CIPHER_CTX_new() }).ok_or(CipherError::Backend("EVP_CIPHER_CTX_new"))?;
        let stream = EvpStream { ctx, direction, kind, failed: false };
        let init = match direction {
            Direction::Encrypt => ffi::EVP_EncryptInit_ex,
            Direction::Decrypt => ffi::EVP_DecryptInit_ex,
        };
        let ctx = stream.ctx.as_ptr();
        // SAFETY: `ctx` is a live context; `cipher` a static table. The first
        // call selects the cipher only (null key and IV); the IV length is set
        // before the second, which reads `key.len()` bytes (the length the
        // cipher was chosen for) and 16 IV bytes from live slices.
        unsafe {
            check(init(ctx, cipher, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()), "cipher init")?;
            if kind == Kind::Gcm {
                check(
                    ffi::EVP_CIPHER_CTX_ctrl(
                        ctx,
                        ffi::EVP_CTRL_GCM_SET_IVLEN,
                        BLOCK_LEN as c_int,
                        std::ptr::null_mut(),
                    ),
                    "GCM nonce length",
                )?;
            }
            check(init(ctx, std::ptr::null(), std::ptr::null_mut(), key.as_ptr(), iv.as_ptr()), "key init")?;
        }
        Ok(stream)
    }

    /// Refuses to go on from a context whose state a failure left unknown.
    fn usable(&self) -> Result<(), CipherError> {
        if self.failed { Err(CipherError::Backend("an earlier cipher call failed")) } else { Ok(()) }
    }

    /// Transforms `input` and appends exactly `input.len()` bytes to `out`.
    pub(super) fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.usable()?;
        let result = self.update_inner(input, out);
        self.failed = result.is_err();
        result
    }

    fn update_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        let update = match self.direction {
            Direction::Encrypt => ffi::EVP_EncryptUpdate,
            Direction::Decrypt => ffi::EVP_DecryptUpdate,
        };
        out.reserve(input.len());
        for piece in input.chunks(MAX_UPDATE) {
            let start = out.len();
            let spare = out.spare_capacity_mut();
            if spare.len() < piece.len() {
                return Err(CipherError::Backend("output capacity"));
            }
            let mut written: c_int = 0;
            // SAFETY: `piece.len()` <= 2^30 fits a c_int. A stream mode
            // (CTR, GCM) writes exactly as many bytes as it reads, and `spare`
            // has at least `piece.len()` writable bytes; input and output do
            // not overlap (one is borrowed shared, the other from `out`).
            let ret = unsafe {
                update(
                    self.ctx.as_ptr(),
                    spare.as_mut_ptr().cast::<u8>(),
                    &mut written,
                    piece.as_ptr(),
                    piece.len() as c_int,
                )
            };
            check(ret, "cipher update")?;
            if usize::try_from(written).ok() != Some(piece.len()) {
                return Err(CipherError::Backend("cipher update length"));
            }
            // SAFETY: the update initialised exactly `piece.len()` bytes
            // after `start`, within the capacity checked above.
            unsafe { out.set_len(start + piece.len()) };
        }
        Ok(())
    }

    /// Gets (`EVP_CTRL_GCM_GET_TAG`) or sets (`EVP_CTRL_GCM_SET_TAG`) the
    /// 16-byte GCM tag.
    fn tag_ctrl(&mut self, command: c_int, tag: &mut [u8; GCM_TAG_LEN]) -> Result<(), CipherError> {
        // SAFETY: both commands copy exactly `GCM_TAG_LEN` bytes to or from
        // `tag`, which has that many.
        let ret = unsafe {
            ffi::EVP_CIPHER_CTX_ctrl(self.ctx.as_ptr(), command, GCM_TAG_LEN as c_int, tag.as_mut_ptr().cast())
        };
        check(ret, "GCM tag")
    }

    /// `EVP_EncryptFinal_ex` or `EVP_DecryptFinal_ex`: true on success (for
    /// GCM decryption, only when the computed tag equals the one set).
    fn finish(&mut self) -> bool {
        let finale = match self.direction {
            Direction::Encrypt => ffi::EVP_EncryptFinal_ex,
            Direction::Decrypt => ffi::EVP_DecryptFinal_ex,
        };
        let mut tail = [0u8; BLOCK_LEN];
        let mut written: c_int = 0;
        // SAFETY: the stream modes' final writes no bytes; `tail` has room
        // for a block regardless.
        unsafe { finale(self.ctx.as_ptr(), tail.as_mut_ptr(), &mut written) == 1 }
    }

    /// Ends a GCM encryption: the 16-byte tag.
    pub(super) fn gcm_tag(mut self) -> Result<[u8; GCM_TAG_LEN], CipherError> {
        debug_assert!(self.kind == Kind::Gcm && self.direction == Direction::Encrypt);
        self.usable()?;
        if !self.finish() {
            return Err(CipherError::Backend("GCM final"));
        }
        let mut tag = [0u8; GCM_TAG_LEN];
        self.tag_ctrl(ffi::EVP_CTRL_GCM_GET_TAG, &mut tag)?;
        Ok(tag)
    }

    /// Ends a GCM decryption: checks `tag` (in constant time, inside AWS-LC).
    pub(super) fn gcm_verify(mut self, tag: &[u8; GCM_TAG_LEN]) -> Result<(), CipherError> {
        debug_assert!(self.kind == Kind::Gcm && self.direction == Direction::Decrypt);
        self.usable()?;
        let mut expected = *tag;
        self.tag_ctrl(ffi::EVP_CTRL_GCM_SET_TAG, &mut expected)?;
        if self.finish() { Ok(()) } else { Err(CipherError::Authentication) }
    }
}
