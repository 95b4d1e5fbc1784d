//! The API's certificate: made on first start (self-signed, for the
//! host's name, localhost and loopback), kept in the state directory,
//! and pinned by clients through its SHA-256 fingerprint.

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

pub struct ServerCert {
    pub config: rustls::ServerConfig,
    pub fingerprint: String,
}

pub fn load_or_create(state_dir: &Path, hostname: &str) -> Result<ServerCert> {
    let dir = state_dir.join("tls");
    let cert_path = dir.join("api.crt");
    let key_path = dir.join("api.key");
    if !cert_path.exists() || !key_path.exists() {
        let names = vec![hostname.to_string(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
        let ck = rcgen::generate_simple_self_signed(names).context("generating the API certificate")?;
        lifeboat_state::write_atomic(&key_path, ck.key_pair.serialize_pem().as_bytes(), 0o600)?;
        lifeboat_state::write_atomic(&cert_path, ck.cert.pem().as_bytes(), 0o644)?;
        tracing::info!(path = %cert_path.display(), "created a self-signed API certificate");
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate: move it aside to have a new one made", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).with_context(|| format!("{} is not a PEM private key: move it and the certificate aside to have new ones made", key_path.display()))?;
    let first = certs.first().with_context(|| format!("{} holds no certificate", cert_path.display()))?;
    let fingerprint = lifeboat_client::cert_fingerprint(first);
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the API certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerCert { config, fingerprint })
}
