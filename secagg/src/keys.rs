//! Keys of one round: each device holds two X25519 key pairs, `c` (to encrypt the shares it
//! sends its neighbours) and `s` (to agree pairwise mask seeds). Agreed secrets go through
//! HKDF-SHA256 with the round as salt and the purpose as info, so no key serves twice.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::SecAggError;

/// Purpose of a derived key.
pub const LABEL_MASK: &[u8] = b"fedtune.v1/secagg/mask";
pub const LABEL_SHARE: &[u8] = b"fedtune.v1/secagg/share";

/// The salt of a round's derivations: its number and attempt.
pub fn round_context(round: u64, attempt: u32) -> Vec<u8> {
    let mut c = b"fedtune.v1/secagg/round".to_vec();
    c.extend_from_slice(&round.to_le_bytes());
    c.extend_from_slice(&attempt.to_le_bytes());
    c
}

/// An X25519 key pair.
#[derive(Clone)]
pub struct KeyPair {
    secret: StaticSecret,
    pub public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    pub fn generate(rng: &mut impl RngCore) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self::from_secret(bytes)
    }

    pub fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret).to_bytes();
        KeyPair { secret, public }
    }

    /// The secret's bytes (what is Shamir-shared for dropout recovery).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// HKDF-SHA256 of the X25519 agreement with `their_public`.
    pub fn derive(&self, their_public: &[u8; 32], context: &[u8], label: &[u8]) -> [u8; 32] {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*their_public));
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(Some(context), shared.as_bytes())
            .expand(label, &mut out)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
        out
    }
}

/// The sender and recipient, authenticated with each message.
fn ids(from: u32, to: u32) -> [u8; 8] {
    let mut ids = [0u8; 8];
    ids[..4].copy_from_slice(&from.to_le_bytes());
    ids[4..].copy_from_slice(&to.to_le_bytes());
    ids
}

/// The AEAD nonce of the message from `from` to `to` (each share key carries one message a
/// direction per round).
fn nonce(from: u32, to: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&ids(from, to));
    n.into()
}

/// Encrypts `plaintext` from device `from` to device `to` under `key`, authenticating both
/// ids.
pub fn seal(key: &[u8; 32], from: u32, to: u32, plaintext: &[u8]) -> Vec<u8> {
    ChaCha20Poly1305::new(key.into())
        .encrypt(
            &nonce(from, to),
            Payload {
                msg: plaintext,
                aad: &ids(from, to),
            },
        )
        .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 encrypts any length that fits"))
}

/// Decrypts what [`seal`] made; an altered message, or one for other ids, is refused.
pub fn open(key: &[u8; 32], from: u32, to: u32, sealed: &[u8]) -> Result<Vec<u8>, SecAggError> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(
            &nonce(from, to),
            Payload {
                msg: sealed,
                aad: &ids(from, to),
            },
        )
        .map_err(|_| SecAggError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> [u8; 32] {
        let v: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    /// RFC 7748 §6.1: Alice's and Bob's keys and their shared secret.
    #[test]
    fn rfc_7748_agreement() {
        let alice = KeyPair::from_secret(unhex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let bob = KeyPair::from_secret(unhex(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        assert_eq!(
            alice.public,
            unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let shared = alice
            .secret
            .diffie_hellman(&PublicKey::from(bob.public))
            .to_bytes();
        assert_eq!(
            shared,
            unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
        // Both sides derive the same keys, distinct per purpose and round.
        let ctx = round_context(3, 0);
        let ab = alice.derive(&bob.public, &ctx, LABEL_MASK);
        assert_eq!(ab, bob.derive(&alice.public, &ctx, LABEL_MASK));
        assert_ne!(ab, alice.derive(&bob.public, &ctx, LABEL_SHARE));
        assert_ne!(
            ab,
            alice.derive(&bob.public, &round_context(3, 1), LABEL_MASK)
        );
    }

    /// RFC 5869 test case 1 through the same HKDF the derivations use.
    #[test]
    fn rfc_5869_hkdf() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        let want =
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";
        let got: String = okm.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn sealed_shares_open_only_for_their_ids_and_key() {
        let key = [5u8; 32];
        let sealed = seal(&key, 1, 2, b"share");
        assert_eq!(open(&key, 1, 2, &sealed).unwrap(), b"share");
        assert_eq!(open(&key, 2, 1, &sealed), Err(SecAggError::Decrypt));
        assert_eq!(open(&[6; 32], 1, 2, &sealed), Err(SecAggError::Decrypt));
        let mut altered = sealed.clone();
        altered[0] ^= 1;
        assert_eq!(open(&key, 1, 2, &altered), Err(SecAggError::Decrypt));
    }
}
