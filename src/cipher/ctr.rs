//! Counter-mode keystreams: `aes-ctr` itself, and the keystream under GCM.
//!
//! `aes-ctr` uses the 16-byte IV as the initial counter block with a full
//! 128-bit big-endian increment that wraps at 2^128, as OpenSSL's CTR does;
//! GCM uses a 32-bit increment ([`::ctr::flavors::Ctr32BE`]). The unused rest
//! of a keystream block is kept in zeroizing storage between calls.

use ::cipher::array::Array;
use ::cipher::consts::U16;
use ::cipher::{BlockCipherEncrypt, InnerIvInit, StreamCipherCore};
use ::ctr::flavors::Ctr128BE;
use ::ctr::{CtrCore, CtrFlavor};
use zeroize::Zeroizing;

use super::{BLOCK_LEN, CipherError, PIECE};

type Block = Array<u8, U16>;

/// A counter-mode keystream that can be applied in pieces of any length.
pub(super) struct Keystream<C, F>
where
    C: BlockCipherEncrypt<BlockSize = U16>,
    F: CtrFlavor<U16>,
{
    core: CtrCore<C, F>,
    /// The current keystream block; bytes before `used` are spent.
    cached: Zeroizing<[u8; BLOCK_LEN]>,
    used: usize,
}

impl<C, F> Keystream<C, F>
where
    C: BlockCipherEncrypt<BlockSize = U16>,
    F: CtrFlavor<U16>,
{
    /// Starts the keystream at counter block `first`.
    pub(super) fn new(cipher: C, first: &[u8; BLOCK_LEN]) -> Self {
        Keystream {
            core: CtrCore::inner_iv_init(cipher, first.into()),
            cached: Zeroizing::new([0; BLOCK_LEN]),
            used: BLOCK_LEN,
        }
    }

    /// XORs the next `data.len()` keystream bytes into `data`.
    pub(super) fn apply(&mut self, data: &mut [u8]) {
        let from_cache = (BLOCK_LEN - self.used).min(data.len());
        let (head, rest) = data.split_at_mut(from_cache);
        for (byte, key) in head.iter_mut().zip(&self.cached[self.used..]) {
            *byte ^= key;
        }
        self.used += from_cache;
        let (blocks, tail) = Block::slice_as_chunks_mut(rest);
        self.core.apply_keystream_blocks(blocks);
        if !tail.is_empty() {
            let block: &mut Block = (&mut *self.cached).into();
            self.core.write_keystream_block(block);
            for (byte, key) in tail.iter_mut().zip(self.cached.iter()) {
                *byte ^= key;
            }
            self.used = tail.len();
        }
    }
}

/// `aes-ctr` in either direction: encryption and decryption are the same
/// XOR with the keystream, and nothing is held back.
pub(super) struct CtrStream<C: BlockCipherEncrypt<BlockSize = U16>> {
    keystream: Keystream<C, Ctr128BE>,
}

impl<C: BlockCipherEncrypt<BlockSize = U16>> CtrStream<C> {
    pub(super) fn new(cipher: C, iv: &[u8; BLOCK_LEN]) -> Self {
        CtrStream { keystream: Keystream::new(cipher, iv) }
    }

    fn apply(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len());
        for piece in input.chunks(PIECE) {
            let start = out.len();
            out.extend_from_slice(piece);
            self.keystream.apply(&mut out[start..]);
        }
    }

    pub(super) fn encrypt_update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.apply(input, out);
        Ok(())
    }

    pub(super) fn encrypt_finalize(self, _out: &mut Vec<u8>) {}

    pub(super) fn decrypt_update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.apply(input, out);
        Ok(())
    }

    pub(super) fn decrypt_finalize(self, _out: &mut Vec<u8>) -> Result<(), CipherError> {
        Ok(())
    }
}
