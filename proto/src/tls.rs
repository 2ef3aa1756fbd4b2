//! PEM files for TLS, read and checked before a server or device starts, so that a missing
//! file, a file without the expected block or an unparsable block is named at once rather
//! than surfacing as a failed handshake later.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file that cannot be read or holds no usable block.
    #[error("{}: {why}", path.display())]
    File { path: PathBuf, why: String },
    /// Certificates and key that do not make a TLS configuration (a key that does not match
    /// its certificate, say).
    #[error("TLS settings refused: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        why: format!("cannot read it: {e}"),
    })
}

/// The PEM text of `path`, which must hold at least one certificate and nothing unparsable.
pub fn certificates(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(path)?;
    let bad = |why: String| TlsError::File {
        path: path.to_path_buf(),
        why,
    };
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(bad("holds no PEM certificate (BEGIN CERTIFICATE)".into()));
    }
    Ok(pem)
}

/// The PEM text of `path`, which must hold a private key (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        why: format!("holds no PEM private key: {e}"),
    })?;
    Ok(pem)
}

/// An error and its causes on one line (tonic's TLS errors keep the reason in the sources).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_empty_and_wrong_files_are_named() {
        let dir = std::env::temp_dir().join(format!("fedtune-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let absent = dir.join("absent.pem");
        let e = certificates(&absent).unwrap_err().to_string();
        assert!(e.contains("absent.pem") && e.contains("cannot read"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "hello\n").unwrap();
        let e = certificates(&empty).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = private_key(&empty).unwrap_err().to_string();
        assert!(e.contains("no PEM private key"), "{e}");
        let garbled = dir.join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = certificates(&garbled).unwrap_err().to_string();
        assert!(e.contains("not a PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
