//! `aes-cbc-pkcs7`: CBC with PKCS#7 padding and no header, byte for byte what
//! `openssl enc -nosalt -aes-NNN-cbc -K .. -iv ..` writes.
//!
//! Encryption holds back fewer than 16 plaintext bytes (in zeroizing storage);
//! decryption holds back the last ciphertext block, whose padding can only be
//! checked once the input has ended.

use ::cipher::array::Array;
use ::cipher::consts::U16;
use ::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit};
use zeroize::Zeroizing;

use super::format::{BLOCK_LEN, CipherError, PIECE};
use crate::custody::keys::EncryptionMode;

type Block = Array<u8, U16>;

/// Streaming CBC encryption with PKCS#7 padding at the end.
pub(super) struct CbcEncrypt<C: BlockCipherEncrypt<BlockSize = U16>> {
    mode: ::cbc::Encryptor<C>,
    /// Plaintext not yet a whole block.
    pending: Zeroizing<[u8; BLOCK_LEN]>,
    pending_len: usize,
}

impl<C: BlockCipherEncrypt<BlockSize = U16>> CbcEncrypt<C> {
    pub(super) fn new(cipher: C, iv: &[u8; BLOCK_LEN]) -> Self {
        CbcEncrypt {
            mode: ::cbc::Encryptor::inner_iv_init(cipher, iv.into()),
            pending: Zeroizing::new([0; BLOCK_LEN]),
            pending_len: 0,
        }
    }

    pub(super) fn encrypt_update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        out.reserve(input.len() + BLOCK_LEN);
        if self.pending_len > 0 {
            let take = (BLOCK_LEN - self.pending_len).min(input.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&input[..take]);
            self.pending_len += take;
            input = &input[take..];
            if self.pending_len < BLOCK_LEN {
                return Ok(());
            }
            let start = out.len();
            out.extend_from_slice(&self.pending[..]);
            self.pending_len = 0;
            encrypt_in_place(&mut self.mode, &mut out[start..]);
        }
        let (whole, rest) = input.split_at(input.len() - input.len() % BLOCK_LEN);
        for piece in whole.chunks(PIECE) {
            let start = out.len();
            out.extend_from_slice(piece);
            encrypt_in_place(&mut self.mode, &mut out[start..]);
        }
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
        Ok(())
    }

    pub(super) fn encrypt_finalize(mut self, out: &mut Vec<u8>) -> Result<(), CipherError> {
        // PKCS#7: 1 to 16 bytes, each holding the pad length; a whole block
        // of 16s when the plaintext was already aligned.
        let pad = BLOCK_LEN - self.pending_len;
        self.pending[self.pending_len..].fill(pad as u8);
        let block: &mut Block = (&mut *self.pending).into();
        self.mode.encrypt_block(block);
        out.extend_from_slice(&self.pending[..]);
        Ok(())
    }
}

/// Encrypts whole blocks in place; `data.len()` is a multiple of 16.
fn encrypt_in_place<C: BlockCipherEncrypt<BlockSize = U16>>(mode: &mut ::cbc::Encryptor<C>, data: &mut [u8]) {
    let (blocks, _) = Block::slice_as_chunks_mut(data);
    mode.encrypt_blocks(blocks);
}

/// Streaming CBC decryption that strips and checks PKCS#7 padding at the end.
pub(super) struct CbcDecrypt<C: BlockCipherDecrypt<BlockSize = U16>> {
    mode: ::cbc::Decryptor<C>,
    /// Ciphertext held back: the last whole block seen (it may be the padded
    /// one), or a partial block still filling. Never more than 16 bytes.
    held: [u8; BLOCK_LEN],
    held_len: usize,
    /// Ciphertext bytes seen, for the truncation message.
    seen: u64,
}

impl<C: BlockCipherDecrypt<BlockSize = U16>> CbcDecrypt<C> {
    pub(super) fn new(cipher: C, iv: &[u8; BLOCK_LEN]) -> Self {
        CbcDecrypt {
            mode: ::cbc::Decryptor::inner_iv_init(cipher, iv.into()),
            held: [0; BLOCK_LEN],
            held_len: 0,
            seen: 0,
        }
    }

    pub(super) fn decrypt_update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.seen += input.len() as u64;
        let total = self.held_len + input.len();
        // Keep the partial tail, or the last whole block when aligned.
        let keep = match total % BLOCK_LEN {
            0 => total.min(BLOCK_LEN),
            partial => partial,
        };
        let release = total - keep;
        if release == 0 {
            self.held[self.held_len..total].copy_from_slice(input);
            self.held_len = total;
            return Ok(());
        }
        out.reserve(release);
        let mut input = input;
        if self.held_len > 0 {
            // `release` counts the held bytes first and is at least one block,
            // so input can complete the held block.
            let take = BLOCK_LEN - self.held_len;
            self.held[self.held_len..].copy_from_slice(&input[..take]);
            input = &input[take..];
            let start = out.len();
            out.extend_from_slice(&self.held);
            decrypt_in_place(&mut self.mode, &mut out[start..]);
        }
        let (now, later) = input.split_at(input.len() - keep);
        for piece in now.chunks(PIECE) {
            let start = out.len();
            out.extend_from_slice(piece);
            decrypt_in_place(&mut self.mode, &mut out[start..]);
        }
        self.held[..keep].copy_from_slice(later);
        self.held_len = keep;
        Ok(())
    }

    pub(super) fn decrypt_finalize(mut self, out: &mut Vec<u8>) -> Result<(), CipherError> {
        if self.held_len != BLOCK_LEN {
            return Err(CipherError::Truncated {
                mode: EncryptionMode::AesCbcPkcs7,
                len: self.seen,
                rule: "not a whole, non-zero number of 16-byte blocks",
            });
        }
        let mut last = Zeroizing::new(self.held);
        let block: &mut Block = (&mut *last).into();
        self.mode.decrypt_block(block);
        let unpadded = pkcs7_unpadded_len(&last).ok_or(CipherError::Padding)?;
        out.extend_from_slice(&last[..unpadded]);
        Ok(())
    }
}

/// Decrypts whole blocks in place; `data.len()` is a multiple of 16.
fn decrypt_in_place<C: BlockCipherDecrypt<BlockSize = U16>>(mode: &mut ::cbc::Decryptor<C>, data: &mut [u8]) {
    let (blocks, _) = Block::slice_as_chunks_mut(data);
    mode.decrypt_blocks(blocks);
}

/// The data length of a decrypted last block, or `None` for bad padding.
///
/// Reads all 16 bytes whatever the pad length and branches only on the final
/// verdict, so timing does not say which byte was wrong. (Unauthenticated CBC
/// stays malleable; this only avoids making a padding oracle worse.)
fn pkcs7_unpadded_len(block: &[u8; BLOCK_LEN]) -> Option<usize> {
    let pad = block[BLOCK_LEN - 1];
    // bad != 0 when pad is 0 or above 16.
    let mut bad = u8::from(pad == 0) | u8::from(usize::from(pad) > BLOCK_LEN);
    for (i, &byte) in block.iter().enumerate() {
        let in_pad = u8::from(BLOCK_LEN - i <= usize::from(pad));
        bad |= in_pad & u8::from(byte != pad);
    }
    (bad == 0).then(|| BLOCK_LEN - usize::from(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs7_accepts_only_well_formed_padding() {
        let mut block = [0xAA; BLOCK_LEN];
        block[15] = 1;
        assert_eq!(pkcs7_unpadded_len(&block), Some(15));
        let full = [16u8; BLOCK_LEN];
        assert_eq!(pkcs7_unpadded_len(&full), Some(0));
        let mut three = [0xAA; BLOCK_LEN];
        three[13..].fill(3);
        assert_eq!(pkcs7_unpadded_len(&three), Some(13));
        three[13] = 2;
        assert_eq!(pkcs7_unpadded_len(&three), None);
        block[15] = 0;
        assert_eq!(pkcs7_unpadded_len(&block), None);
        block[15] = 17;
        assert_eq!(pkcs7_unpadded_len(&block), None);
        let mut almost_full = [16u8; BLOCK_LEN];
        almost_full[0] = 15;
        assert_eq!(pkcs7_unpadded_len(&almost_full), None);
    }
}
