//! Optional TLS (NBD_OPT_STARTTLS) with rustls.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// TLS settings of a server.
#[derive(Clone)]
pub struct TlsConfig {
    /// rustls server side (no client certificates) that NBD_OPT_STARTTLS
    /// hands the connection to.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Refuse every option but STARTTLS (and ABORT) until TLS is up.
    pub required: bool,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl TlsConfig {
    /// From a PEM certificate chain (server first) and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path, required: bool) -> io::Result<Self> {
        let certs = CertificateDer::pem_file_iter(cert).map_err(|e| bad(format!("{}: {e}", cert.display())))?.collect::<Result<Vec<_>, _>>().map_err(|e| bad(format!("{}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(bad(format!("{}: no certificate found", cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(format!("{}: {e}", key.display())))?;
        Self::from_der(certs, key, required)
    }

    /// From DER certificates (server first) and key, with rustls' safe
    /// default protocol versions and the ring crypto provider. Errors are
    /// `InvalidInput` naming what rustls rejected.
    pub fn from_der(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, required: bool) -> io::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad(format!("TLS certificate/key: {e}")))?;
        Ok(TlsConfig { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), required })
    }
}
