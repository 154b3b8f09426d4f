//! TLS for outgoing HTTP requests: rustls with the ring crypto provider passed explicitly, so a
//! client never depends on a process-wide default provider having been installed (the `myelin`
//! binary installs one in `main`; library code and tests do not rely on it).

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls_platform_verifier::Verifier;

/// A client configuration on the ring provider that verifies servers against the platform's
/// trusted roots plus `extra_roots`, and offers HTTP/2 and HTTP/1.1 (as reqwest does when it
/// builds the configuration itself).
pub fn client_config(extra_roots: Vec<CertificateDer<'static>>) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier::new_with_extra_roots(extra_roots, provider.clone())?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A reqwest client builder whose TLS is [`client_config`] with the platform's roots.
pub fn http_client_builder() -> Result<reqwest::ClientBuilder, rustls::Error> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(client_config(Vec::new())?))
}

#[cfg(test)]
mod tests {
    use rustls::crypto::CryptoProvider;

    #[test]
    fn clients_build_without_a_process_wide_provider_and_install_none() {
        // Each test runs in its own process under nextest; nothing here installed a provider.
        assert!(CryptoProvider::get_default().is_none());
        let config = super::client_config(Vec::new()).unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        super::http_client_builder().unwrap().build().unwrap();
        assert!(CryptoProvider::get_default().is_none(), "library code leaves the global alone");
    }
}
