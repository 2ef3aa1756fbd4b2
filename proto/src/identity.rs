//! Device identity: an Ed25519 key per device, and the bytes a device signs to join a server
//! that admits only enrolled keys. Both sides build the signed message here, so it is one
//! wire format (with committed test vectors below).
//!
//! The signed message is `"fedtune.v1/join" ‖ 0 ‖ nonce (32) ‖ public key (32) ‖ client id
//! (UTF-8)`: the domain prefix keeps the signature from meaning anything elsewhere, the
//! server's single-use nonce keeps a captured join from being replayed, and the id binds the
//! signature to the identity it claims.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Prefix of every signed join message.
pub const JOIN_DOMAIN: &[u8] = b"fedtune.v1/join\0";
/// Bytes of a challenge nonce.
pub const NONCE_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("not a public key line (`<base64 Ed25519 key> [client id]`): {0}")]
    BadKeyLine(String),
    #[error("a public key is 32 bytes, got {0}")]
    KeyLength(usize),
    #[error("a signature is 64 bytes, got {0}")]
    SignatureLength(usize),
    #[error("a nonce is {NONCE_BYTES} bytes, got {0}")]
    NonceLength(usize),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("not a device key file (one line of base64: the 32-byte Ed25519 secret)")]
    BadSecret,
}

/// The message a device signs to join as `client_id` with `nonce`.
pub fn join_message(nonce: &[u8; NONCE_BYTES], public_key: &[u8; 32], client_id: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(JOIN_DOMAIN.len() + 64 + client_id.len());
    m.extend_from_slice(JOIN_DOMAIN);
    m.extend_from_slice(nonce);
    m.extend_from_slice(public_key);
    m.extend_from_slice(client_id.as_bytes());
    m
}

/// A device's signature of its join.
pub fn sign_join(key: &SigningKey, nonce: &[u8; NONCE_BYTES], client_id: &str) -> [u8; 64] {
    let public = key.verifying_key().to_bytes();
    key.sign(&join_message(nonce, &public, client_id))
        .to_bytes()
}

/// Checks a join's signature (lengths included: the fields come from the wire).
pub fn verify_join(
    public_key: &[u8],
    nonce: &[u8],
    signature: &[u8],
    client_id: &str,
) -> Result<VerifyingKey, IdentityError> {
    let key = verifying_key(public_key)?;
    let nonce: &[u8; NONCE_BYTES] = nonce
        .try_into()
        .map_err(|_| IdentityError::NonceLength(nonce.len()))?;
    let signature: &[u8; 64] = signature
        .try_into()
        .map_err(|_| IdentityError::SignatureLength(signature.len()))?;
    key.verify_strict(
        &join_message(nonce, key.as_bytes(), client_id),
        &Signature::from_bytes(signature),
    )
    .map_err(|_| IdentityError::BadSignature)?;
    Ok(key)
}

/// Prefix of a device's signature over its secure-aggregation keys.
pub const SECAGG_KEYS_DOMAIN: &[u8] = b"fedtune.v1/secagg-keys\0";

/// The message a device signs to vouch for the keys it advertises as `index` in the round
/// attempt salted with `context`.
pub fn secagg_keys_message(
    context: &[u8],
    index: u32,
    c_public: &[u8],
    s_public: &[u8],
) -> Vec<u8> {
    let mut m = SECAGG_KEYS_DOMAIN.to_vec();
    m.extend_from_slice(context);
    m.extend_from_slice(&index.to_le_bytes());
    m.extend_from_slice(c_public);
    m.extend_from_slice(s_public);
    m
}

/// A device's signature over its advertised keys.
pub fn sign_secagg_keys(
    key: &SigningKey,
    context: &[u8],
    index: u32,
    c_public: &[u8],
    s_public: &[u8],
) -> [u8; 64] {
    key.sign(&secagg_keys_message(context, index, c_public, s_public))
        .to_bytes()
}

/// Checks a neighbour's signature over its advertised keys.
pub fn verify_secagg_keys(
    identity_key: &[u8],
    signature: &[u8],
    context: &[u8],
    index: u32,
    c_public: &[u8],
    s_public: &[u8],
) -> Result<(), IdentityError> {
    let key = verifying_key(identity_key)?;
    let signature: &[u8; 64] = signature
        .try_into()
        .map_err(|_| IdentityError::SignatureLength(signature.len()))?;
    key.verify_strict(
        &secagg_keys_message(context, index, c_public, s_public),
        &Signature::from_bytes(signature),
    )
    .map_err(|_| IdentityError::BadSignature)
}

fn verifying_key(bytes: &[u8]) -> Result<VerifyingKey, IdentityError> {
    let bytes: &[u8; 32] = bytes
        .try_into()
        .map_err(|_| IdentityError::KeyLength(bytes.len()))?;
    VerifyingKey::from_bytes(bytes).map_err(|_| IdentityError::BadKeyLine("not a point".into()))
}

/// A public key as one line of an authorized-keys file: base64, then optionally the one
/// client id it may join as.
pub fn public_key_line(key: &VerifyingKey, client_id: Option<&str>) -> String {
    let b64 = STANDARD.encode(key.as_bytes());
    match client_id {
        Some(id) => format!("{b64} {id}"),
        None => b64,
    }
}

/// Parses a line of an authorized-keys file: the key and the client id it is bound to, if
/// any. Blank lines and `#` comments are `None`.
pub fn parse_key_line(line: &str) -> Result<Option<(VerifyingKey, Option<String>)>, IdentityError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let b64 = parts.next().unwrap_or_default();
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| IdentityError::BadKeyLine(e.to_string()))?;
    let key = verifying_key(&bytes)?;
    let id = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return Err(IdentityError::BadKeyLine(
            "more than a key and a client id".into(),
        ));
    }
    Ok(Some((key, id)))
}

/// A device key file's text: the 32-byte secret in base64, one line.
pub fn secret_to_text(key: &SigningKey) -> String {
    format!("{}\n", STANDARD.encode(key.to_bytes()))
}

/// The signing key of a device key file's text.
pub fn secret_from_text(text: &str) -> Result<SigningKey, IdentityError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| IdentityError::BadSecret)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| IdentityError::BadSecret)?;
    Ok(SigningKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 8032's first Ed25519 test vector, then the join signature of that key as
    /// Python's `cryptography` (OpenSSL) computes it over the same bytes: the signed message
    /// is a wire format, pinned by an independent implementation.
    #[test]
    fn join_message_and_signature_test_vectors() {
        let secret = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&secret[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let k = SigningKey::from_bytes(&bytes.try_into().unwrap());
        let public = k.verifying_key().to_bytes();
        assert_eq!(
            hex(&public),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex(&k.sign(b"").to_bytes()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc\
             61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        let nonce = [0xAB; NONCE_BYTES];
        let m = join_message(&nonce, &public, "dev-1");
        assert_eq!(m.len(), 16 + 32 + 32 + 5);
        assert_eq!(&m[..16], b"fedtune.v1/join\0");
        assert_eq!(&m[16..48], &nonce);
        assert_eq!(&m[48..80], &public);
        assert_eq!(&m[80..], b"dev-1");
        assert_eq!(
            hex(&sign_join(&k, &nonce, "dev-1")),
            "dc902355f9451bfa6ffe50bc628001a839ccee77ce6950d9a72d2534dbc4a04b83a3e73a9f9bb4888\
             084d6db49cd141eba74db276b58e5be0e22b27ca2113d05"
        );
        assert_eq!(
            public_key_line(&k.verifying_key(), None),
            "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        );
    }

    /// The signature over advertised secure-aggregation keys, pinned by Python's
    /// `cryptography` over the same bytes (RFC 8032's first key).
    #[test]
    fn secagg_keys_signature_test_vector() {
        let k = SigningKey::from_bytes(&[
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ]);
        let (ctx, c, s) = ([7u8; 16], [1u8; 32], [2u8; 32]);
        let sig = sign_secagg_keys(&k, &ctx, 5, &c, &s);
        assert_eq!(
            hex(&sig),
            "91e6301d01aea83c329663081eb73cd2188a385fb46ab390f375cc28af573f2f5c61eea0ba62f264c\
             5da123cc3eb8efc94068372a88b4928b9fd2ce22a183b06"
        );
        let pk = k.verifying_key().to_bytes();
        assert!(verify_secagg_keys(&pk, &sig, &ctx, 5, &c, &s).is_ok());
        for (i, c2, s2) in [(6, c, s), (5, s, c), (5, c, c)] {
            assert_eq!(
                verify_secagg_keys(&pk, &sig, &ctx, i, &c2, &s2).unwrap_err(),
                IdentityError::BadSignature
            );
        }
        assert_eq!(
            verify_secagg_keys(&pk, &sig, &[8u8; 16], 5, &c, &s).unwrap_err(),
            IdentityError::BadSignature
        );
    }

    #[test]
    fn verification_refuses_every_altered_field() {
        let k = key(1);
        let pk = k.verifying_key().to_bytes();
        let nonce = [3; NONCE_BYTES];
        let sig = sign_join(&k, &nonce, "a");
        assert!(verify_join(&pk, &nonce, &sig, "a").is_ok());
        assert_eq!(
            verify_join(&pk, &nonce, &sig, "b").unwrap_err(),
            IdentityError::BadSignature
        );
        assert_eq!(
            verify_join(&pk, &[4; NONCE_BYTES], &sig, "a").unwrap_err(),
            IdentityError::BadSignature
        );
        let other = key(2).verifying_key().to_bytes();
        assert_eq!(
            verify_join(&other, &nonce, &sig, "a").unwrap_err(),
            IdentityError::BadSignature
        );
        assert_eq!(
            verify_join(&pk, &nonce, &sig[..63], "a").unwrap_err(),
            IdentityError::SignatureLength(63)
        );
        assert_eq!(
            verify_join(&pk[..31], &nonce, &sig, "a").unwrap_err(),
            IdentityError::KeyLength(31)
        );
        assert_eq!(
            verify_join(&pk, &nonce[..5], &sig, "a").unwrap_err(),
            IdentityError::NonceLength(5)
        );
    }

    #[test]
    fn key_lines_and_secrets_round_trip() {
        let k = key(9);
        let v = k.verifying_key();
        assert_eq!(
            parse_key_line(&public_key_line(&v, None)).unwrap(),
            Some((v, None))
        );
        assert_eq!(
            parse_key_line(&public_key_line(&v, Some("phone-1"))).unwrap(),
            Some((v, Some("phone-1".into())))
        );
        assert_eq!(parse_key_line("  # a comment").unwrap(), None);
        assert_eq!(parse_key_line("").unwrap(), None);
        assert!(parse_key_line("!!!").is_err());
        assert!(parse_key_line(&format!("{} a b", public_key_line(&v, None))).is_err());
        assert_eq!(
            parse_key_line("AAAA").unwrap_err(),
            IdentityError::KeyLength(3)
        );
        assert_eq!(
            secret_from_text(&secret_to_text(&k)).unwrap().to_bytes(),
            k.to_bytes()
        );
        assert_eq!(
            secret_from_text("zz").unwrap_err(),
            IdentityError::BadSecret
        );
    }
}
