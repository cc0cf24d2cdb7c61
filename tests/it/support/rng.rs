//! Deterministic, incompressible test data: xorshift64*, fast enough for
//! 100 MiB in a debug build. For what tests feed the broker and its peers,
//! never for keys the broker makes. And [`random_bytes`], for bytes no two
//! calls share.

/// xorshift64* over a non-zero seed.
pub struct Rng(pub u64);

impl Rng {
    fn next_word(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf`, eight bytes per step.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_word().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// `len` fresh bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.fill(&mut buf);
        buf
    }
}

/// `len` bytes no other call answers (random v4 UUIDs): key material and
/// IVs a test wraps or sends as a caller would, unlike [`Rng`]'s
/// reproducible streams.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(len);
    out
}
