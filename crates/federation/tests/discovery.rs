//! Server discovery against a test origin: `.well-known/matrix/server` served over TLS by a
//! test CA's certificate on loopback, names pointed at it by `myelin_dns_overrides`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use myelin_config::{CustomCa, FederationConfig, IpRange, OutboundConfig};
use myelin_federation::{ClientOptions, Destination, DiscoveryError, FederationClient, Signer};
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use ruma::signatures::Ed25519KeyPair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and a server certificate it signed for `names`: (CA PEM, certificate PEM, key PEM).
fn certificates(names: &[&str]) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certificate = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
    (ca.pem(), certificate.pem(), key.serialize_pem())
}

/// An HTTPS origin answering `/.well-known/matrix/server` per Host with a canned response;
/// counts the requests per host.
struct Origin {
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Origin {
    async fn start(cert_pem: &str, key_pem: &str, answers: HashMap<String, String>) -> Origin {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let answers = answers.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let host = head
                        .lines()
                        .find_map(|l| l.strip_prefix("host: ").or_else(|| l.strip_prefix("Host: ")))
                        .unwrap_or_default()
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    *counter.lock().entry(host.clone()).or_default() += 1;
                    let response = answers.get(&host).cloned().unwrap_or_else(|| {
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
                    });
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Origin { port, hits }
    }

    fn hits(&self, host: &str) -> usize {
        self.hits.lock().get(host).copied().unwrap_or_default()
    }
}

fn json_answer(body: &str, extra_headers: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn client(ca_pem: &str, whitelist: bool, well_known_port: u16, hosts: &[&str]) -> FederationClient {
    let mut outbound = OutboundConfig::default();
    for host in hosts {
        outbound.dns_overrides.insert(host.to_string(), vec!["127.0.0.1".parse().unwrap()]);
    }
    if whitelist {
        outbound.ip_range_whitelist =
            vec![IpRange::parse("127.0.0.1").unwrap(), IpRange::parse("::1").unwrap()];
    }
    let federation = FederationConfig {
        custom_ca_list: Some(vec![CustomCa { path: "test-ca.pem".into(), pem: ca_pem.as_bytes().to_vec() }]),
        ..FederationConfig::default()
    };
    let der = Ed25519KeyPair::generate();
    let signer = Signer {
        server_name: "me.test".try_into().unwrap(),
        key_pair: Arc::new(Ed25519KeyPair::from_der(&der, "k".to_owned()).unwrap()),
    };
    let options = ClientOptions { well_known_port, ..ClientOptions::default() };
    FederationClient::new(&federation, &outbound, signer, options).unwrap()
}

fn destination(addresses: &[&str], host_header: &str, tls_name: &str) -> Destination {
    Destination {
        addresses: addresses.iter().map(|a| a.parse::<SocketAddr>().unwrap()).collect(),
        host_header: host_header.to_owned(),
        tls_name: tls_name.to_owned(),
    }
}

#[tokio::test]
async fn well_known_delegation_is_followed_and_cached() {
    let names = ["origin.test", "iplit.test", "missing.test", "bad.test"];
    let (ca, cert, key) = certificates(&names);
    let answers = HashMap::from([
        (
            "origin.test".to_owned(),
            json_answer(r#"{"m.server": "delegated.test:4444"}"#, "cache-control: max-age=600\r\n"),
        ),
        ("iplit.test".to_owned(), json_answer(r#"{"m.server": "[::1]:5555"}"#, "")),
        ("bad.test".to_owned(), json_answer(r#"{"m.server": 12}"#, "")),
    ]);
    let origin = Origin::start(&cert, &key, answers).await;
    let client = client(
        &ca,
        true,
        origin.port,
        &["origin.test", "delegated.test", "iplit.test", "missing.test", "bad.test"],
    );
    let discovery = client.discovery();

    // Delegated with a port: its addresses at that port, its name as Host and TLS name.
    let expected = destination(&["127.0.0.1:4444"], "delegated.test:4444", "delegated.test");
    assert_eq!(discovery.resolve("origin.test").await.unwrap(), expected);
    assert_eq!(discovery.resolve("origin.test").await.unwrap(), expected);
    assert_eq!(origin.hits("origin.test"), 1, "the second resolution is answered from the cache");

    // Delegated to an IP literal.
    assert_eq!(
        discovery.resolve("iplit.test").await.unwrap(),
        destination(&["[::1]:5555"], "[::1]:5555", "::1")
    );

    // No .well-known (404) or a bad one: the name itself at 8448; the failure is cached too.
    for host in ["missing.test", "bad.test"] {
        let fallback = destination(&["127.0.0.1:8448"], host, host);
        assert_eq!(discovery.resolve(host).await.unwrap(), fallback);
        assert_eq!(discovery.resolve(host).await.unwrap(), fallback);
        assert_eq!(origin.hits(host), 1, "{host}");
    }
}

#[tokio::test]
async fn names_with_ports_and_ip_literals_skip_well_known() {
    let (ca, cert, key) = certificates(&["origin.test"]);
    let answers =
        HashMap::from([("origin.test".to_owned(), json_answer(r#"{"m.server": "elsewhere.test:1"}"#, ""))]);
    let origin = Origin::start(&cert, &key, answers).await;
    let client = client(&ca, true, origin.port, &["origin.test"]);
    let discovery = client.discovery();
    assert_eq!(
        discovery.resolve("origin.test:9000").await.unwrap(),
        destination(&["127.0.0.1:9000"], "origin.test:9000", "origin.test")
    );
    assert_eq!(
        discovery.resolve("127.0.0.1").await.unwrap(),
        destination(&["127.0.0.1:8448"], "127.0.0.1", "127.0.0.1")
    );
    assert_eq!(
        discovery.resolve("127.0.0.1:8008").await.unwrap(),
        destination(&["127.0.0.1:8008"], "127.0.0.1:8008", "127.0.0.1")
    );
    assert_eq!(
        discovery.resolve("[::1]:8448").await.unwrap(),
        destination(&["[::1]:8448"], "[::1]:8448", "::1")
    );
    assert_eq!(origin.hits("origin.test"), 0);
    assert!(matches!(discovery.resolve("bad name").await, Err(DiscoveryError::InvalidServerName(_))));
}

#[tokio::test]
async fn blocked_addresses_and_unknown_certificates_are_refused() {
    let (ca, cert, key) = certificates(&["origin.test"]);
    let answers = HashMap::from([(
        "origin.test".to_owned(),
        json_answer(r#"{"m.server": "delegated.test:4444"}"#, ""),
    )]);
    let origin = Origin::start(&cert, &key, answers).await;

    // Without the whitelist, loopback is blocked: nothing is fetched, nothing resolves.
    let blocked = client(&ca, false, origin.port, &["origin.test", "delegated.test"]);
    for name in ["origin.test", "origin.test:8448", "127.0.0.1:8448", "[::1]:8448", "[::ffff:127.0.0.1]:8448"]
    {
        assert!(matches!(blocked.discovery().resolve(name).await, Err(DiscoveryError::Blocked(_))), "{name}");
    }
    assert_eq!(origin.hits("origin.test"), 0);

    // A certificate from a CA the client does not trust: the handshake fails, so there is no
    // delegation (the origin never sees a request).
    let (other_ca, _, _) = certificates(&["origin.test"]);
    let untrusting = client(&other_ca, true, origin.port, &["origin.test", "delegated.test"]);
    assert_eq!(
        untrusting.discovery().resolve("origin.test").await.unwrap(),
        destination(&["127.0.0.1:8448"], "origin.test", "origin.test")
    );
    assert_eq!(origin.hits("origin.test"), 0);
}
