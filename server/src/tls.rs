//! TLS for the gRPC service (rustls, through tonic): the server's certificate chain and key,
//! and for mutual TLS the CA whose certificates every device must present.

use std::path::Path;

use fedtune_proto::tls::{self, TlsError};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// A checked server TLS configuration.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
    mutual: bool,
}

impl ServerTls {
    /// Reads PEM files: `cert` (the chain, leaf first) and `key`; with `client_ca`, devices
    /// must present a certificate that CA signed (mutual TLS). Every file is checked here, and
    /// the whole (a key that does not match its certificate, say) by building the acceptor.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let identity = Identity::from_pem(tls::certificates(cert)?, tls::private_key(key)?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = client_ca {
            config = config.client_ca_root(Certificate::from_pem(tls::certificates(ca)?));
        }
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|e| TlsError::Config(tls::chain(&e)))?;
        Ok(ServerTls {
            config,
            mutual: client_ca.is_some(),
        })
    }

    /// Whether devices must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    pub(crate) fn config(&self) -> ServerTlsConfig {
        self.config.clone()
    }
}
