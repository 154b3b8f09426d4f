//! [`FederationPeer`]: a scripted remote homeserver for tests of outbound federation. It
//! serves `PUT /_matrix/federation/v1/send/{txnId}` over TLS with the test CA's certificate
//! (named `<host>:<port>`, like [`crate::federation::federating_server`]'s servers), checks
//! each request's `X-Matrix` signature with the sending server's real key, records every
//! transaction and answers as told ([`PeerAnswer`]). It can also serve media the way servers
//! older than Matrix 1.11 do: on the legacy `/_matrix/media/v3/download/...` only, the
//! federation media endpoint being unknown there (`404 M_UNRECOGNIZED`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::TestServer;

/// How the peer answers transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAnswer {
    /// 200 with an empty `pdus` result.
    Accept,
    /// 500 `M_UNKNOWN`: the destination is down.
    Fail,
    /// 400 `M_BAD_JSON`: the whole transaction is refused.
    Refuse,
}

/// One `/send/{txnId}` request the peer received with a valid signature.
#[derive(Clone, Debug)]
pub struct RecordedTransaction {
    pub origin: String,
    pub txn_id: String,
    pub body: Value,
    /// Whether the peer answered 200.
    pub accepted: bool,
}

impl RecordedTransaction {
    /// The PDUs' `type`s and bodies, in order.
    pub fn pdus(&self) -> Vec<Value> {
        self.body["pdus"].as_array().cloned().unwrap_or_default()
    }

    pub fn edus(&self) -> Vec<Value> {
        self.body["edus"].as_array().cloned().unwrap_or_default()
    }
}

#[derive(Default)]
struct PeerState {
    answer: Option<PeerAnswer>,
    /// Public keys of the servers trusted: `server name -> (key ID, base64 key)`.
    keys: HashMap<String, (String, String)>,
    transactions: Vec<RecordedTransaction>,
    /// Requests refused for their signature.
    bad_signatures: usize,
    /// Media served on the legacy download route: `media ID -> (content type, bytes)`.
    legacy_media: HashMap<String, (String, Vec<u8>)>,
    /// The legacy download requests received (path and query).
    legacy_media_requests: Vec<String>,
}

/// A scripted remote server; stops when dropped.
pub struct FederationPeer {
    pub server_name: String,
    state: Arc<Mutex<PeerState>>,
    changed: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FederationPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FederationPeer {
    /// A peer named `<host>:<port>` (`host` one of the test names), serving TLS with `certs`'
    /// certificate (see [`crate::federation::TestCertificates`]).
    pub async fn start(host: &str, certs: &Path) -> FederationPeer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let port = crate::federation::free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the peer");
        let certificates = CertificateDer::pem_file_iter(certs.join("cert.pem"))
            .expect("cert.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(certs.join("key.pem")).expect("key.pem");
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(certificates, key)
                .expect("TLS configuration");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let server_name = format!("{host}:{port}");
        let state =
            Arc::new(Mutex::new(PeerState { answer: Some(PeerAnswer::Accept), ..PeerState::default() }));
        let (notify, changed) = tokio::sync::watch::channel(0usize);
        let notify = Arc::new(notify);
        let task = {
            let (state, server_name) = (state.clone(), server_name.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let (acceptor, state, server_name, notify) =
                        (acceptor.clone(), state.clone(), server_name.clone(), notify.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let service = hyper::service::service_fn(move |request| {
                            let (state, server_name, notify) =
                                (state.clone(), server_name.clone(), notify.clone());
                            async move {
                                if let Some(response) = legacy_media(&state, &server_name, &request) {
                                    return Ok::<_, std::convert::Infallible>(response);
                                }
                                let (status, body) = handle(&state, &server_name, request).await;
                                notify.send_modify(|n| *n += 1);
                                let response = hyper::Response::builder()
                                    .status(status)
                                    .header("Content-Type", "application/json")
                                    .body(Full::new(Bytes::from(body.to_string())))
                                    .expect("response");
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        };
        FederationPeer { server_name, state, changed, task }
    }

    /// Trusts `server`'s signing key for the `X-Matrix` check.
    pub fn trust(&self, server: &TestServer) {
        let keys = &server.services().keys;
        self.state
            .lock()
            .expect("peer state")
            .keys
            .insert(server.server_name.clone(), (keys.key_id().to_owned(), keys.public_key().to_owned()));
    }

    /// Serves `bytes` as `content_type` at `/_matrix/media/v3/download/{peer}/{media_id}`.
    pub fn serve_legacy_media(&self, media_id: &str, content_type: &str, bytes: Vec<u8>) {
        self.state
            .lock()
            .expect("peer state")
            .legacy_media
            .insert(media_id.to_owned(), (content_type.to_owned(), bytes));
    }

    /// The legacy media download requests received so far (path and query).
    pub fn legacy_media_requests(&self) -> Vec<String> {
        self.state.lock().expect("peer state").legacy_media_requests.clone()
    }

    /// How the peer answers from now on.
    pub fn answer(&self, answer: PeerAnswer) {
        self.state.lock().expect("peer state").answer = Some(answer);
    }

    /// Every transaction received so far.
    pub fn transactions(&self) -> Vec<RecordedTransaction> {
        self.state.lock().expect("peer state").transactions.clone()
    }

    /// How many requests were refused for their signature.
    pub fn bad_signatures(&self) -> usize {
        self.state.lock().expect("peer state").bad_signatures
    }

    /// Waits (up to `timeout`) until `done` holds for the transactions received; panics
    /// otherwise, showing them.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[RecordedTransaction]) -> bool) {
        let mut changed = self.changed.clone();
        let wait = async {
            loop {
                if done(&self.transactions()) {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() || !done(&self.transactions()) {
            panic!("the peer did not get what was expected in {timeout:?}: {:#?}", self.transactions());
        }
    }

    /// Every PDU of the accepted transactions, in the order received.
    pub fn accepted_pdus(&self) -> Vec<Value> {
        self.transactions().iter().filter(|t| t.accepted).flat_map(|t| t.pdus()).collect()
    }
}

/// A legacy media download (`GET /_matrix/media/v3/download/{peer}/{mediaId}`), answered
/// with the media's bytes or `404 M_NOT_FOUND`; `None` for any other request.
fn legacy_media(
    state: &Mutex<PeerState>,
    server_name: &str,
    request: &hyper::Request<Incoming>,
) -> Option<hyper::Response<Full<Bytes>>> {
    let rest = request.uri().path().strip_prefix("/_matrix/media/v3/download/")?;
    let mut state = state.lock().expect("peer state");
    let path = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    state.legacy_media_requests.push(path);
    let media = rest
        .strip_prefix(server_name)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|media_id| state.legacy_media.get(media_id));
    let response = match media {
        Some((content_type, bytes)) => hyper::Response::builder()
            .status(200)
            .header("Content-Type", content_type.as_str())
            .header("Content-Disposition", "inline; filename=legacy.bin")
            .body(Full::new(Bytes::from(bytes.clone()))),
        None => hyper::Response::builder()
            .status(404)
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(r#"{"errcode":"M_NOT_FOUND","error":"no such media"}"#))),
    };
    Some(response.expect("response"))
}

async fn handle(
    state: &Mutex<PeerState>,
    server_name: &str,
    request: hyper::Request<Incoming>,
) -> (u16, Value) {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return (400, json!({"errcode": "M_BAD_JSON", "error": "unreadable body"}));
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let Some(txn_id) = parts.uri.path().strip_prefix("/_matrix/federation/v1/send/") else {
        return (404, json!({"errcode": "M_UNRECOGNIZED", "error": "not served by the test peer"}));
    };
    let authorization = parts
        .headers
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| ruma::api::federation::authentication::XMatrix::parse(v).ok());
    let verified = authorization.as_ref().is_some_and(|authorization| {
        let key = state.lock().expect("peer state").keys.get(authorization.origin.as_str()).cloned();
        let Some((key_id, public_key)) = key else { return false };
        let Ok(destination) = <&ruma::ServerName>::try_from(server_name) else { return false };
        authorization.key.as_str() == key_id
            && myelin_federation::request::verify_request(
                authorization,
                parts.method.as_str(),
                &path,
                &body,
                destination,
                &public_key,
            )
            .is_ok()
    });
    let Some(authorization) = authorization.filter(|_| verified) else {
        state.lock().expect("peer state").bad_signatures += 1;
        return (401, json!({"errcode": "M_UNAUTHORIZED", "error": "bad signature"}));
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (400, json!({"errcode": "M_NOT_JSON", "error": "not JSON"}));
    };
    let mut state = state.lock().expect("peer state");
    let answer = state.answer.unwrap_or(PeerAnswer::Accept);
    state.transactions.push(RecordedTransaction {
        origin: authorization.origin.to_string(),
        txn_id: txn_id.to_owned(),
        body,
        accepted: answer == PeerAnswer::Accept,
    });
    match answer {
        PeerAnswer::Accept => (200, json!({"pdus": {}})),
        PeerAnswer::Fail => (500, json!({"errcode": "M_UNKNOWN", "error": "down for the test"})),
        PeerAnswer::Refuse => (400, json!({"errcode": "M_BAD_JSON", "error": "refused for the test"})),
    }
}
