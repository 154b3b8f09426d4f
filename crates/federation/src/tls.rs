//! TLS for federation: rustls on the ring provider (passed explicitly, never the process
//! default), trusting the platform's roots or, when `federation_custom_ca_list` is given, only
//! those CAs; a server whose name matches `federation_certificate_verification_whitelist`, or
//! every server when `federation_verify_certificates` is false, is not checked (its handshake
//! signatures still are).

use std::sync::Arc;

use myelin_config::FederationConfig;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A client TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("{path}: {message}")]
    CustomCa { path: String, message: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(String),
}

/// The client configuration federation connections use (HTTP/1.1 only).
pub fn client_config(config: &FederationConfig) -> Result<ClientConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner: Arc<dyn ServerCertVerifier> = match &config.custom_ca_list {
        Some(list) => {
            let mut roots = RootCertStore::empty();
            for ca in list {
                let path = ca.path.display().to_string();
                let certificates = CertificateDer::pem_slice_iter(&ca.pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsConfigError::CustomCa { path: path.clone(), message: e.to_string() })?;
                if certificates.is_empty() {
                    return Err(TlsConfigError::CustomCa { path, message: "no PEM certificate".to_owned() });
                }
                for certificate in certificates {
                    roots.add(certificate).map_err(|e| TlsConfigError::CustomCa {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                }
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsConfigError::Verifier(e.to_string()))?
        }
        None => Arc::new(rustls_platform_verifier::Verifier::new(provider.clone())?),
    };
    let verifier = FederationVerifier { inner, config: config.clone(), provider: provider.clone() };
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(client)
}

/// The configured verifier, skipping the certificate check where the configuration says.
#[derive(Debug)]
struct FederationVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    config: FederationConfig,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FederationVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let host = match server_name {
            ServerName::DnsName(name) => name.as_ref().to_owned(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            _ => String::new(),
        };
        if !self.config.verifies_certificate_of(&host) {
            return Ok(ServerCertVerified::assertion());
        }
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
