//! `aes-ctr`: the 16-byte IV is the initial counter block, with a full
//! 128-bit big-endian increment that wraps at 2^128, as `openssl enc
//! -aes-NNN-ctr` writes. Encryption and decryption are the same keystream
//! XOR, and nothing is held back. The keystream comes from AWS-LC (see
//! [`super::evp`]).

use super::evp::{Direction, EvpStream, Kind};
use super::format::{BLOCK_LEN, CipherError};

/// `aes-ctr` in either direction.
pub(super) struct CtrStream {
    stream: EvpStream,
}

impl CtrStream {
    pub(super) fn new(key: &[u8], iv: &[u8; BLOCK_LEN]) -> Result<Self, CipherError> {
        // CTR decryption is encryption: one direction serves both.
        Ok(CtrStream { stream: EvpStream::new(Kind::Ctr, Direction::Encrypt, key, iv)? })
    }

    pub(super) fn encrypt_update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.stream.update(input, out)
    }

    pub(super) fn encrypt_finalize(self, _out: &mut Vec<u8>) -> Result<(), CipherError> {
        Ok(())
    }

    pub(super) fn decrypt_update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.stream.update(input, out)
    }

    pub(super) fn decrypt_finalize(self, _out: &mut Vec<u8>) -> Result<(), CipherError> {
        Ok(())
    }
}
