//! Masks: a 32-byte seed expanded by ChaCha20 (RFC 8439: the seed as key, a zero nonce,
//! block counter from 0) into little-endian u32 words, added to or subtracted from a vector
//! in Z_(2^32). The expansion is a wire format: both sides must draw the same words.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};

/// Words expanded at a time (a 64 KiB keystream buffer).
const CHUNK_WORDS: usize = 16 * 1024;

/// `acc[i] ± mask(seed)[i]` (wrapping), `add` choosing the sign.
pub fn apply_mask(acc: &mut [u32], seed: &[u8; 32], add: bool) {
    let mut cipher = ChaCha20::new(seed.into(), &[0u8; 12].into());
    let mut bytes = vec![0u8; CHUNK_WORDS * 4];
    for piece in acc.chunks_mut(CHUNK_WORDS) {
        let buf = &mut bytes[..piece.len() * 4];
        buf.fill(0);
        cipher.apply_keystream(buf);
        let words = buf
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        if add {
            piece
                .iter_mut()
                .zip(words)
                .for_each(|(a, m)| *a = a.wrapping_add(m));
        } else {
            piece
                .iter_mut()
                .zip(words)
                .for_each(|(a, m)| *a = a.wrapping_sub(m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439 appendix A.1, test vector #1: the keystream of the all-zero key and nonce,
    /// block 0, begins 76 b8 e0 ad a0 f1 3d 90 40 5d 6a e5 53 86 bd 28; block 1 (vector #2)
    /// begins 9f 07 e7 be.
    #[test]
    fn rfc_8439_keystream() {
        let mut v = vec![0u32; 20];
        apply_mask(&mut v, &[0; 32], true);
        assert_eq!(
            &v[..4],
            &[0xade0_b876, 0x903d_f1a0, 0xe56a_5d40, 0x28bd_8653]
        );
        assert_eq!(v[16], 0xbee7_079f);
    }

    #[test]
    fn a_mask_and_its_negation_cancel_across_chunks() {
        let mut v: Vec<u32> = (0..40_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let orig = v.clone();
        let seed = [9u8; 32];
        apply_mask(&mut v, &seed, true);
        assert_ne!(v, orig);
        apply_mask(&mut v, &seed, false);
        assert_eq!(v, orig);
    }
}
