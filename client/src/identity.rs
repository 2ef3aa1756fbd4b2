//! A device's Ed25519 key file: created on first use (readable by its owner only), read on
//! every later start, so the device keeps one identity across restarts.

use std::io::Write;
use std::path::Path;

use ed25519_dalek::SigningKey;
use fedtune_proto::identity;
use rand::RngCore;

use crate::ClientError;

/// The key in `path`, or a new one written there if there is no file.
pub fn load_or_create(path: &Path) -> Result<SigningKey, ClientError> {
    let err = |why: String| ClientError::Key {
        path: path.to_path_buf(),
        why,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => identity::secret_from_text(&text).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            let key = SigningKey::from_bytes(&seed);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(path).map_err(|e| err(e.to_string()))?;
            f.write_all(identity::secret_to_text(&key).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "new device key written");
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.key");
        let first = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.to_bytes(), again.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "garbage").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains("device.key") && e.contains("not a device key file"),
            "{e}"
        );
        let e = load_or_create(&dir.path().join("no/such/dir/k")).unwrap_err();
        assert!(e.to_string().contains("no/such/dir/k"), "{e}");
    }
}
