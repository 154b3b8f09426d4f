//! Federation on top of the transport crate (`myelin-federation`): the shared client and key
//! ring, inbound request authentication, the notary key API and the queries other servers make.

pub mod access;
mod backfill;
pub mod complexity;
pub mod device_lists;
pub mod edu;
mod gaps;
pub mod hierarchy;
pub mod invite;
mod join;
pub mod knock;
pub mod membership;
pub mod pdu;
pub mod reads;
pub mod remote_keys;
mod restricted;
pub mod sender;
pub mod transaction;

use std::sync::Arc;

use myelin_core::{ErrCode, MatrixError};
use myelin_federation::{ClientOptions, FederationClient, KeyRing, Signer, XMatrix};
use ruma::{CanonicalJsonObject, OwnedServerName, ServerName, UserId};
use serde_json::{Map, Value};

use crate::util::now_ms;
use crate::{Error, Result, Services};

/// The federation client and the remote keys it fetched.
pub struct Federation {
    pub client: Arc<FederationClient>,
    pub keys: KeyRing,
    pub(crate) inbound: transaction::InboundTransactions,
    /// The outbound queue's sender in this process.
    pub sender: sender::SenderState,
}

impl Federation {
    pub(crate) fn new(
        config: &myelin_config::Config,
        keys: &crate::keys::ServerKeys,
        store: myelin_store::Store,
    ) -> Result<Federation> {
        let server_name = OwnedServerName::try_from(config.server.server_name.as_str())
            .map_err(|e| Error::internal(format!("server_name: {e}")))?;
        let signer = Signer { server_name, key_pair: keys.shared_key_pair() };
        let client =
            FederationClient::new(&config.federation, &config.outbound, signer, ClientOptions::default())
                .map_err(|e| Error::internal(format!("federation TLS: {e}")))?;
        let client = Arc::new(client);
        let keys = KeyRing::new(client.clone(), store, config.keys.trusted_key_servers.clone());
        let sender = sender::SenderState::new(&config.federation.instance_name);
        Ok(Federation { client, keys, inbound: Default::default(), sender })
    }
}

fn unauthorized(message: impl Into<String>) -> Error {
    MatrixError::new(ErrCode::Unauthorized, message).into()
}

impl Services {
    /// Checks a server request's `X-Matrix` authorization against the request as received
    /// (`uri`: path and query as sent; `body`: empty for none) and returns its origin. The
    /// destination must be this server; the origin's key is fetched when unknown.
    pub async fn authenticate_server_request(
        &self,
        authorization: &XMatrix,
        method: &str,
        uri: &str,
        body: &[u8],
    ) -> Result<OwnedServerName> {
        if authorization.destination.as_ref().is_some_and(|d| d.as_str() != self.server_name()) {
            return Err(unauthorized("Destination mismatch in auth header"));
        }
        let origin = &authorization.origin;
        // `federation_domain_whitelist`: other servers are refused before any key is fetched.
        if !self.config.federation.allows_destination(origin.as_str()) {
            return Err(MatrixError::forbidden(format!("Federation denied with {origin}.")).into());
        }
        let key_id = authorization.key.as_str();
        let public_key = if origin.as_str() == self.server_name() {
            (key_id == self.keys.key_id()).then(|| self.keys.public_key().to_owned())
        } else {
            self.federation.keys.verify_key(origin, key_id, now_ms() as i64).await.map_err(Error::internal)?
        };
        let Some(public_key) = public_key else {
            return Err(unauthorized(format!("Failed to find any key to satisfy {origin} {key_id}")));
        };
        let destination = <&ServerName>::try_from(self.server_name()).map_err(Error::internal)?;
        myelin_federation::request::verify_request(
            authorization,
            method,
            uri,
            body,
            destination,
            &public_key,
        )
        .map_err(|e| unauthorized(format!("Invalid signature for server {origin} with key {key_id}: {e}")))?;
        Ok(origin.clone())
    }

    /// The notary API (`/_matrix/key/v2/query`): for each server, its key document valid until
    /// at least the given time when one can be had (else the latest known), signed by this
    /// server too; this server's own document for itself. Servers whose keys cannot be had are
    /// left out.
    pub async fn notary_key_documents(&self, queries: &[(OwnedServerName, i64)]) -> Result<Vec<Value>> {
        let mut documents = Vec::new();
        for (server, minimum_valid_until_ts) in queries {
            if server.as_str() == self.server_name() {
                documents.push(self.keys.server_keys_document()?);
                continue;
            }
            let document: Option<CanonicalJsonObject> = self
                .federation
                .keys
                .key_document(server, *minimum_valid_until_ts)
                .await
                .map_err(Error::internal)?;
            if let Some(mut document) = document {
                self.keys.sign(&mut document)?;
                documents.push(serde_json::to_value(document).map_err(Error::internal)?);
            }
        }
        Ok(documents)
    }

    /// `GET /_matrix/federation/v1/query/profile`: a local user's public profile, or only
    /// `field`.
    pub async fn federation_profile_query(
        &self,
        user_id: &UserId,
        field: Option<&str>,
    ) -> Result<Map<String, Value>> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param("User is not hosted on this homeserver").into());
        }
        if self.store.get_user(user_id.as_str()).await?.is_none() {
            return Err(MatrixError::not_found("Profile was not found").into());
        }
        let mut profile = self.store.get_profile(user_id.as_str()).await?;
        if let Some(field) = field {
            profile.retain(|key, _| key == field);
        }
        Ok(profile)
    }
}
