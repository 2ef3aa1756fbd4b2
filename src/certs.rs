//! `fedtune certs`: a development public-key infrastructure for TLS in one command: a CA,
//! a server certificate for the names devices will dial, and device certificates for mutual
//! TLS, all signed by that CA (ECDSA P-256, generated with rcgen). For production, use your
//! own CA: the server and devices read any PEM files.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} exists already: certs never overwrites keys (choose another --out)", .0.display())]
    Exists(PathBuf),
    #[error("--server-name must name at least one host or IP address")]
    NoServerName,
}

/// Writes `ca.pem`, `server.pem` + `server.key` (valid for `server_names`) and
/// `client-N.pem` + `client-N.key` for N in 0..`clients` into `out`; returns the paths
/// written. Refuses before writing anything if a file is there already.
pub fn write_dev_pki(
    out: &Path,
    server_names: &[String],
    clients: usize,
) -> Result<Vec<PathBuf>, CertsError> {
    if server_names.is_empty() {
        return Err(CertsError::NoServerName);
    }
    let mut names = vec![
        "ca.pem".to_string(),
        "server.pem".into(),
        "server.key".into(),
    ];
    for i in 0..clients {
        names.push(format!("client-{i}.pem"));
        names.push(format!("client-{i}.key"));
    }
    let paths: Vec<PathBuf> = names.iter().map(|n| out.join(n)).collect();
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        return Err(CertsError::Exists(p.clone()));
    }
    std::fs::create_dir_all(out).map_err(|source| CertsError::Write {
        path: out.to_path_buf(),
        source,
    })?;

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fedtune development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    write(&paths[0], ca.pem().as_bytes(), false)?;

    let leaf = |sans: Vec<String>, cn: &str, usage| -> Result<(String, String), CertsError> {
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (cert, key) = leaf(
        server_names.to_vec(),
        &server_names[0],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    write(&paths[1], cert.as_bytes(), false)?;
    write(&paths[2], key.as_bytes(), true)?;
    for i in 0..clients {
        let name = format!("client-{i}");
        let (cert, key) = leaf(
            vec![name.clone()],
            &name,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        write(&paths[3 + 2 * i], cert.as_bytes(), false)?;
        write(&paths[4 + 2 * i], key.as_bytes(), true)?;
    }
    Ok(paths)
}

/// Creates `path` (never replacing a file); private keys are readable by their owner only.
fn write(path: &Path, bytes: &[u8], private: bool) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = options.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_server_and_clients_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pki");
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let paths = write_dev_pki(&out, &names, 2).unwrap();
        assert_eq!(paths.len(), 7);
        for p in &paths {
            let pem = std::fs::read(p).unwrap();
            if p.extension().is_some_and(|e| e == "key") {
                fedtune_proto::tls::private_key(p).unwrap();
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(p).unwrap().permissions().mode();
                    assert_eq!(mode & 0o777, 0o600, "{}", p.display());
                }
            } else {
                fedtune_proto::tls::certificates(p).unwrap();
            }
            assert!(!pem.is_empty());
        }
        let e = write_dev_pki(&out, &names, 1).unwrap_err();
        assert!(e.to_string().contains("ca.pem exists already"), "{e}");
        assert!(matches!(
            write_dev_pki(&dir.path().join("x"), &[], 1),
            Err(CertsError::NoServerName)
        ));
    }
}
