//! [`TestClient`]: JSON over HTTP, with an optional access token.

use reqwest::Method;
use serde_json::Value;

#[derive(Clone)]
pub struct TestClient {
    http: reqwest::Client,
    pub base_url: String,
    pub access_token: Option<String>,
}

/// A response: status, headers and body (parsed as JSON when it is JSON).
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    pub json: Value,
}

impl TestResponse {
    pub fn errcode(&self) -> Option<&str> {
        self.json.get("errcode").and_then(Value::as_str)
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", String::from_utf8_lossy(&self.body));
        &self.json
    }

    /// Asserts a Matrix error response.
    #[track_caller]
    pub fn expect_error(&self, status: u16, errcode: &str) {
        assert_eq!(self.status, status, "unexpected status; body: {}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.errcode(), Some(errcode), "unexpected errcode; body: {}", self.json);
        assert!(self.json.get("error").is_some_and(Value::is_string), "errors carry an `error` string");
    }
}

/// A plain HTTP client (TLS on rustls' ring provider, given explicitly: see `myelin_service::tls`).
pub fn http_client() -> reqwest::Client {
    myelin_service::tls::http_client_builder().expect("TLS configuration").build().expect("HTTP client")
}

/// An HTTP client that also trusts the CA certificates in `ca_pem` (for servers with test
/// certificates).
pub fn http_client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let roots =
        CertificateDer::pem_slice_iter(ca_pem).collect::<Result<Vec<_>, _>>().expect("PEM certificates");
    let tls = myelin_service::tls::client_config(roots).expect("TLS configuration");
    reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("HTTP client")
}

impl TestClient {
    pub fn new(base_url: &str) -> TestClient {
        TestClient { http: http_client(), base_url: base_url.to_owned(), access_token: None }
    }

    pub fn with_token(&self, token: &str) -> TestClient {
        TestClient { access_token: Some(token.to_owned()), ..self.clone() }
    }

    /// Sends a request with a raw body and optional headers.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut request = self.http.request(method, format!("{}{path}", self.base_url));
        if let Some(token) = &self.access_token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("response body").to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        TestResponse { status, headers, body, json }
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> TestResponse {
        self.request_raw(method, path, body.map(|b| serde_json::to_vec(b).unwrap()), &[]).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> TestResponse {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> TestResponse {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.request(Method::DELETE, path, None).await
    }
}
