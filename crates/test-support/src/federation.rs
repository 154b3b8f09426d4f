//! Federating test servers: Myelin servers on loopback that reach each other over TLS.
//!
//! Each server is named `<host>:<port>` (`a.test`, `b.test`, `c.test`, resolved to 127.0.0.1 by
//! `myelin_dns_overrides`), serves federation over TLS on that port with a certificate from a
//! test CA ([`TestCertificates`]) that every server trusts through `federation_custom_ca_list`,
//! and may reach loopback through `ip_range_whitelist`. Tests can also speak for a server
//! directly: [`signed_header`] signs a request with its key, [`federation_request`] sends one.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use ruma::OwnedServerName;
use ruma::api::federation::authentication::{XMatrix, XMatrixSigningInput};
use serde_json::{Value, json};

use crate::TestServer;

/// A test CA and one certificate it signed for `a.test`, `b.test`, `c.test`, `localhost` and
/// `127.0.0.1`.
pub struct TestCertificates {
    dir: tempfile::TempDir,
}

impl TestCertificates {
    pub fn new() -> TestCertificates {
        let dir = tempfile::tempdir().expect("temporary directory");
        write_certificates(dir.path());
        TestCertificates { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Default for TestCertificates {
    fn default() -> Self {
        TestCertificates::new()
    }
}

/// Writes a CA (`ca.pem`) and a certificate it signed for the test names (`cert.pem`,
/// `key.pem`) into `dir`.
pub fn write_certificates(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // OpenSSL (Synapse's TLS) takes a certificate whose issuer is its own subject for
    // self-signed: the CA and the server certificate need distinct names (rcgen gives both the
    // same default name), and the CA may sign certificates.
    ca_params.distinguished_name.push(DnType::CommonName, "Myelin test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    // `127.0.0.1` (an IP SAN) and `localhost` for servers named by IP literal (Synapse, which has
    // no DNS override, and the Myelins federating with it).
    let names = ["a.test", "b.test", "c.test", "localhost", "127.0.0.1"].map(str::to_owned).to_vec();
    let mut params = CertificateParams::new(names).expect("names");
    params.distinguished_name.push(DnType::CommonName, "Myelin test server");
    let certificate = params.signed_by(&key, &ca).expect("certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
    std::fs::write(dir.join("cert.pem"), certificate.pem()).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key.pem");
}

/// A port free right now (the server binds it a moment later: its name must carry it). Taken
/// from 10000-19999, below the kernel's ephemeral range, so that the servers other tests start
/// on port 0 meanwhile cannot take it.
pub fn free_port() -> u16 {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos()
            ^ std::process::id().rotate_left(16);
    (0..10_000u32)
        .map(|i| 10_000 + (seed.wrapping_add(i.wrapping_mul(7_919)) % 10_000) as u16)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port in 10000-19999")
}

/// A server named `<host>:<port>` serving federation over TLS on that port (and the client and
/// federation APIs over plain HTTP on `base_url`), with `overrides` merged into its config.
/// `host` is one of the test names, or `127.0.0.1` for a server other implementations reach
/// without name resolution (the interoperability tests with Synapse).
pub async fn federating_server(host: &str, certs: &Path, overrides: Value) -> TestServer {
    let port = free_port();
    let mut config = json!({
        "server_name": format!("{host}:{port}"),
        "tls_certificate_path": certs.join("cert.pem"),
        "tls_private_key_path": certs.join("key.pem"),
        "listeners": [
            {"port": 0, "bind_addresses": ["127.0.0.1"], "type": "http", "x_forwarded": false,
             "resources": [{"names": ["client", "federation"]}]},
            {"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": true,
             "resources": [{"names": ["federation"]}]},
        ],
        "federation_custom_ca_list": [certs.join("ca.pem")],
        "myelin_dns_overrides": {"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"], "c.test": ["127.0.0.1"]},
        "ip_range_whitelist": ["127.0.0.1"],
        "trusted_key_servers": [],
    });
    if let (Some(config), Value::Object(overrides)) = (config.as_object_mut(), overrides) {
        config.extend(overrides);
    }
    TestServer::start_with(config).await
}

/// A server's name as a ruma server name.
pub fn server_name(server: &TestServer) -> OwnedServerName {
    OwnedServerName::try_from(server.server_name.as_str()).expect("server name")
}

/// An `Authorization` header for `method path body` signed by `server` for `destination`.
pub fn signed_header(
    server: &TestServer,
    destination: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    let request = http::Request::builder().method(method).uri(path).body(body.to_vec()).expect("request");
    let input = XMatrixSigningInput::new(
        server_name(server),
        OwnedServerName::try_from(destination).expect("destination"),
        server.services().keys.key_pair(),
    );
    XMatrix::sign_http_request(&request, input).expect("signed request").to_string()
}

/// Sends `method path` with `body` to `to`'s plain listener, signed as `from`; returns the
/// status and the JSON answer (`Value::Null` when the body is not JSON).
pub async fn federation_request(
    from: &TestServer,
    to: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON body")).unwrap_or_default();
    let authorization = signed_header(from, &to.server_name, method, path, &bytes);
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = crate::http_client()
        .request(method, format!("{}{}", to.base_url, path))
        .header("Authorization", authorization);
    if body.is_some() {
        request = request.header("Content-Type", "application/json").body(bytes);
    }
    let response = request.send().await.expect("federation request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
