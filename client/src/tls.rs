//! TLS for a device's connection to the server: the CA that signed the server's certificate,
//! and, for mutual TLS, the device's own certificate and key. Plaintext is for loopback only
//! unless the caller explicitly allows it.

use std::path::Path;

use fedtune_proto::tls::{self, TlsError};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A checked client TLS configuration.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: ClientTlsConfig,
}

impl ClientTls {
    /// Reads PEM files: `ca` (the server's certificate must chain to it) and, for mutual
    /// TLS, this device's `cert` and `key`.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(tls::certificates(ca)?));
        if let Some((cert, key)) = identity {
            config = config.identity(Identity::from_pem(
                tls::certificates(cert)?,
                tls::private_key(key)?,
            ));
        }
        Ok(ClientTls { config })
    }

    pub(crate) fn config(&self) -> ClientTlsConfig {
        self.config.clone()
    }
}

/// Whether `host` (a URL's host: a name or an IP literal, IPv6 in brackets) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1", "127.3.2.1", "localhost", "LOCALHOST", "[::1]"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "0.0.0.0",
            "example.com",
            "[2001:db8::1]",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
