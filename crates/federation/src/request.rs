//! Inbound request authentication: the `X-Matrix` authorization header checked against the
//! request as received.

use std::collections::BTreeMap;

use ruma::ServerName;
use ruma::api::federation::authentication::XMatrix;
use ruma::serde::Base64;

/// Parses the `Authorization` header value of a server request.
pub fn parse_authorization(value: &str) -> Result<XMatrix, String> {
    XMatrix::parse(value).map_err(|e| e.to_string())
}

/// Verifies `authorization`'s signature over the request (`method`, `uri` as sent: path and
/// query, `body` as received, empty for none) for `destination`, with the origin's key
/// `public_key` (unpadded base64). The destination in the header, when given, must be
/// `destination`.
pub fn verify_request(
    authorization: &XMatrix,
    method: &str,
    uri: &str,
    body: &[u8],
    destination: &ServerName,
    public_key: &str,
) -> Result<(), String> {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .map_err(|e| format!("bad request line: {e}"))?;
    let key = Base64::parse(public_key).map_err(|_| "bad stored key".to_owned())?;
    let keys = BTreeMap::from([(
        authorization.origin.as_str().to_owned(),
        BTreeMap::from([(authorization.key.as_str().to_owned(), key)]),
    )]);
    authorization.verify_http_request(&request, destination, &keys).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::api::federation::authentication::XMatrixSigningInput;
    use ruma::signatures::Ed25519KeyPair;

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, "k".to_owned()).unwrap();
        let public = Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec()).encode();
        let origin = ruma::OwnedServerName::try_from("a.test").unwrap();
        let destination = ruma::OwnedServerName::try_from("b.test:8448").unwrap();
        let request = http::Request::builder()
            .method("PUT")
            .uri("/_matrix/federation/v1/send/1?x=%20y")
            .body(br#"{"pdus":[]}"#.to_vec())
            .unwrap();
        let header = XMatrix::sign_http_request(
            &request,
            XMatrixSigningInput::new(origin, destination.clone(), &pair),
        )
        .unwrap();
        let parsed = parse_authorization(&header.to_string()).unwrap();
        let verify = |method: &str, uri: &str, body: &[u8], dest: &str| {
            verify_request(&parsed, method, uri, body, <&ServerName>::try_from(dest).unwrap(), &public)
        };
        verify("PUT", "/_matrix/federation/v1/send/1?x=%20y", br#"{"pdus":[]}"#, "b.test:8448").unwrap();
        // Whitespace in the body does not matter: the content is signed as canonical JSON.
        verify("PUT", "/_matrix/federation/v1/send/1?x=%20y", br#"{ "pdus": [] }"#, "b.test:8448").unwrap();
        assert!(
            verify("POST", "/_matrix/federation/v1/send/1?x=%20y", br#"{"pdus":[]}"#, "b.test:8448").is_err()
        );
        assert!(
            verify("PUT", "/_matrix/federation/v1/send/2?x=%20y", br#"{"pdus":[]}"#, "b.test:8448").is_err()
        );
        assert!(
            verify("PUT", "/_matrix/federation/v1/send/1?x=%20y", br#"{"pdus":[1]}"#, "b.test:8448").is_err()
        );
        assert!(verify("PUT", "/_matrix/federation/v1/send/1?x=%20y", br#"{"pdus":[]}"#, "c.test").is_err());
        assert!(parse_authorization("Bearer abc").is_err());
        assert!(parse_authorization("X-Matrix origin=a.test,key=\"ed25519:k\"").is_err());
    }
}
