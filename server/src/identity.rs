//! Enrolled devices: with an authorized-keys file, the server admits only devices that sign
//! their join with a listed Ed25519 key over a fresh single-use nonce (`Challenge`), so an
//! unknown device, an unsigned join and a replayed join are all refused. The file is read
//! again when it changes (checked at most once a second) or on SIGHUP.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use fedtune_proto::identity::{self, NONCE_BYTES};
use fedtune_proto::v1;
use rand::RngCore;

use crate::ServerError;
use crate::coordinator::lock;

/// How long a challenge nonce may be used.
pub const NONCE_TTL: Duration = Duration::from_secs(60);
/// Most nonces outstanding; beyond it the oldest is forgotten (its device asks again).
const MAX_NONCES: usize = 100_000;

/// The keys of an authorized-keys file: each may join as any id, or only as the id its line
/// names.
#[derive(Debug)]
struct KeyList {
    path: PathBuf,
    modified: Option<SystemTime>,
    checked: Instant,
    keys: HashMap<[u8; 32], Option<String>>,
}

impl KeyList {
    fn load(path: &Path) -> Result<Self, ServerError> {
        let bad = |why: String| ServerError::Config {
            setting: "authorized_keys",
            why: format!("{}: {why}", path.display()),
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            match identity::parse_key_line(line) {
                Ok(Some((key, id))) => {
                    keys.insert(key.to_bytes(), id);
                }
                Ok(None) => {}
                Err(e) => return Err(bad(format!("line {}: {e}", n + 1))),
            }
        }
        Ok(KeyList {
            path: path.to_path_buf(),
            modified: std::fs::metadata(path).and_then(|m| m.modified()).ok(),
            checked: Instant::now(),
            keys,
        })
    }

    /// Reads the file again if it changed (or `force`); a file that no longer parses keeps
    /// the list in force, with a warning.
    fn refresh(&mut self, force: bool) {
        if !force && self.checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.checked = Instant::now();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if !force && modified == self.modified {
            return;
        }
        match KeyList::load(&self.path) {
            Ok(fresh) => {
                tracing::info!(keys = fresh.keys.len(), path = %self.path.display(), "authorized keys loaded");
                *self = fresh;
            }
            Err(e) => tracing::warn!(error = %e, "authorized keys unchanged"),
        }
    }
}

fn fresh_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

/// Nonces handed out and not yet used, each for one client id.
#[derive(Debug, Default)]
struct Nonces {
    issued: HashMap<[u8; NONCE_BYTES], (String, Instant)>,
    order: VecDeque<[u8; NONCE_BYTES]>,
}

impl Nonces {
    fn issue(&mut self, client_id: &str) -> [u8; NONCE_BYTES] {
        let now = Instant::now();
        while let Some(old) = self.order.front() {
            let stale = self
                .issued
                .get(old)
                .is_none_or(|(_, at)| now.duration_since(*at) > NONCE_TTL);
            if !stale && self.order.len() < MAX_NONCES {
                break;
            }
            let old = *old;
            self.order.pop_front();
            self.issued.remove(&old);
        }
        let nonce = fresh_nonce();
        self.issued.insert(nonce, (client_id.to_string(), now));
        self.order.push_back(nonce);
        nonce
    }

    /// Uses up `nonce`: true if it was issued to `client_id` and is still fresh.
    fn take(&mut self, nonce: &[u8], client_id: &str) -> bool {
        let Ok(nonce) = <[u8; NONCE_BYTES]>::try_from(nonce) else {
            return false;
        };
        match self.issued.remove(&nonce) {
            Some((id, at)) => id == client_id && at.elapsed() <= NONCE_TTL,
            None => false,
        }
    }
}

/// The server's check of device identity.
#[derive(Debug)]
pub struct DeviceGate {
    keys: Mutex<KeyList>,
    nonces: Mutex<Nonces>,
}

impl DeviceGate {
    /// Admits the keys listed in `path` (one base64 Ed25519 public key per line, optionally
    /// followed by the one client id it may join as; `#` comments).
    pub fn open(path: &Path) -> Result<Self, ServerError> {
        Ok(DeviceGate {
            keys: Mutex::new(KeyList::load(path)?),
            nonces: Mutex::default(),
        })
    }

    pub fn challenge(&self, client_id: &str) -> v1::ChallengeResponse {
        v1::ChallengeResponse {
            nonce: lock(&self.nonces).issue(client_id).to_vec().into(),
            expires_in_ms: NONCE_TTL.as_millis() as u64,
        }
    }

    /// A nonce from a server that checks no identity: random, remembered by nobody.
    pub fn unchecked_challenge() -> v1::ChallengeResponse {
        v1::ChallengeResponse {
            nonce: fresh_nonce().to_vec().into(),
            expires_in_ms: NONCE_TTL.as_millis() as u64,
        }
    }

    /// Reads the key file again now (SIGHUP).
    pub fn reload(&self) {
        lock(&self.keys).refresh(true);
    }

    /// Checks a join: its nonce (used up here, whatever the outcome), its signature, and its
    /// key's place in the list.
    pub fn admit(
        &self,
        client_id: &str,
        proof: Option<&v1::DeviceProof>,
    ) -> Result<(), ServerError> {
        let Some(p) = proof else {
            return Err(ServerError::Unauthenticated(
                "this server admits enrolled devices only: sign the join (fedtune client --key)",
            ));
        };
        if !lock(&self.nonces).take(&p.nonce, client_id) {
            return Err(ServerError::Unauthenticated(
                "the join's nonce is unknown, used or expired: ask for a new challenge",
            ));
        }
        let key = identity::verify_join(&p.public_key, &p.nonce, &p.signature, client_id)
            .map_err(|_| ServerError::Unauthenticated("the join's signature does not verify"))?;
        let mut keys = lock(&self.keys);
        keys.refresh(false);
        match keys.keys.get(key.as_bytes()) {
            Some(None) => Ok(()),
            Some(Some(id)) if id == client_id => Ok(()),
            Some(Some(_)) => Err(ServerError::Unauthenticated(
                "this device key is enrolled for another client id",
            )),
            None => Err(ServerError::Unauthenticated(
                "this device key is not in the server's authorized keys",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use fedtune_proto::identity::{public_key_line, sign_join};

    fn proof(key: &SigningKey, nonce: &[u8], id: &str) -> v1::DeviceProof {
        let n: [u8; NONCE_BYTES] = nonce.try_into().unwrap();
        v1::DeviceProof {
            public_key: key.verifying_key().to_bytes().to_vec().into(),
            nonce: nonce.to_vec().into(),
            signature: sign_join(key, &n, id).to_vec().into(),
        }
    }

    #[test]
    fn only_listed_keys_with_fresh_nonces_are_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        let (a, b, c) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
            SigningKey::from_bytes(&[3; 32]),
        );
        let text = format!(
            "# devices\n{}\n{}\n",
            public_key_line(&a.verifying_key(), None),
            public_key_line(&b.verifying_key(), Some("phone-b"))
        );
        std::fs::write(&file, text).unwrap();
        let gate = DeviceGate::open(&file).unwrap();
        let ok = |key: &SigningKey, id: &str| {
            let n = gate.challenge(id).nonce;
            gate.admit(id, Some(&proof(key, &n, id)))
        };
        ok(&a, "anything").unwrap();
        ok(&b, "phone-b").unwrap();
        assert!(
            ok(&b, "phone-x")
                .unwrap_err()
                .to_string()
                .contains("another client id")
        );
        assert!(
            ok(&c, "c")
                .unwrap_err()
                .to_string()
                .contains("not in the server's")
        );
        assert!(
            gate.admit("a", None)
                .unwrap_err()
                .to_string()
                .contains("enrolled devices only")
        );

        // A nonce works once, for the id it was issued to.
        let n = gate.challenge("a").nonce;
        let p = proof(&a, &n, "a");
        gate.admit("a", Some(&p)).unwrap();
        assert!(
            gate.admit("a", Some(&p))
                .unwrap_err()
                .to_string()
                .contains("used or expired")
        );
        let n = gate.challenge("a").nonce;
        assert!(gate.admit("z", Some(&proof(&a, &n, "z"))).is_err());
        // A forged signature.
        let n = gate.challenge("a").nonce;
        let mut p = proof(&a, &n, "a");
        let mut sig = p.signature.to_vec();
        sig[0] ^= 1;
        p.signature = sig.into();
        assert!(
            gate.admit("a", Some(&p))
                .unwrap_err()
                .to_string()
                .contains("does not verify")
        );

        // The file is read again on demand: c enrolled, a removed.
        std::fs::write(&file, public_key_line(&c.verifying_key(), None)).unwrap();
        gate.reload();
        ok(&c, "c").unwrap();
        assert!(ok(&a, "a").is_err());
        // A broken file keeps the list in force.
        std::fs::write(&file, "not a key\n").unwrap();
        gate.reload();
        ok(&c, "c").unwrap();
    }

    #[test]
    fn a_bad_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# ok\n\nAAAA\n").unwrap();
        let e = DeviceGate::open(&file).unwrap_err().to_string();
        assert!(e.contains("keys: line 3"), "{e}");
        let e = DeviceGate::open(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent"), "{e}");
    }
}
