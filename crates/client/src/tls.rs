//! Certificate pinning for a self-signed appliance certificate.

use crate::{ClientError, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use std::sync::Arc;

/// How the client decides to trust the appliance's certificate.
#[derive(Debug, Clone)]
pub enum TlsTrust {
    /// The certificate's SHA-256, hex, with or without colons.
    Fingerprint(String),
    /// Accept any certificate (tests, first contact).
    Insecure,
    /// Neither given: refuse with an explanation.
    Unset,
}

/// SHA-256 of a DER certificate as lower-case hex pairs joined by ':'.
pub fn cert_fingerprint(der: &[u8]) -> String {
    let d = sha2::Sha256::digest(der);
    d.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn normalize(fp: &str) -> String {
    fp.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase()
}

#[derive(Debug)]
struct Pinned {
    want: Option<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = cert_fingerprint(end_entity);
        match &self.want {
            None => Ok(ServerCertVerified::assertion()),
            Some(w) if normalize(&got) == *w => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(rustls::Error::General(format!("the server's certificate fingerprint is {got}, not the one given with --fingerprint: check you reached the right appliance"))),
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

pub(crate) fn client_config(trust: TlsTrust) -> Result<rustls::ClientConfig> {
    let want = match trust {
        TlsTrust::Fingerprint(f) => {
            let n = normalize(&f);
            if n.len() != 64 {
                return Err(ClientError::Usage(format!("--fingerprint {f:?} is not a SHA-256 fingerprint (64 hex digits)")));
            }
            Some(n)
        }
        TlsTrust::Insecure => None,
        TlsTrust::Unset => {
            return Err(ClientError::Usage(
                "the appliance uses a self-signed certificate: pass --fingerprint with the SHA-256 fingerprint that `lifeboat serve` and the console show (or --insecure to skip the check)".into(),
            ))
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Usage(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { want, provider }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
