//! User-interactive authentication (the spec's UIA).
//!
//! An operation names its flows; a request carries an optional `auth` dict. Sessions are stored,
//! bound to the operation (and user) that started them, expire, and are deleted when they
//! complete, so a completed session cannot be replayed.

use myelin_core::{ErrCode, MatrixError};
use myelin_store::UiaSessionRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Requester;
use crate::util::{now_ms, random_string};
use crate::{Error, Result, Services};

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";
pub const TERMS: &str = "m.login.terms";

/// How long a session may take, from its first request.
pub const SESSION_LIFETIME_MS: u64 = 30 * 60 * 1000;

/// What the client is told when it must (continue to) authenticate.
#[derive(Debug, Clone)]
pub struct UiaChallenge {
    pub flows: Vec<Vec<String>>,
    pub params: Value,
    pub session: String,
    pub completed: Vec<String>,
    /// Why the last stage failed, if it did.
    pub error: Option<MatrixError>,
}

/// An operation protected by UIA.
pub struct UiaRequest<'a> {
    /// Names the operation; a session started for one operation cannot finish another.
    pub operation: &'static str,
    pub flows: Vec<Vec<String>>,
    /// The request's `auth` dict, if any.
    pub auth: Option<&'a Value>,
    /// The authenticated user, for operations on an existing account.
    pub requester: Option<&'a Requester>,
    /// Stored with a new session and handed back on completion.
    pub data: Value,
}

/// A completed session's data.
pub struct UiaCompleted {
    pub data: Value,
    pub completed: Vec<String>,
}

#[derive(Deserialize)]
struct AuthDict {
    #[serde(rename = "type")]
    kind: Option<String>,
    session: Option<String>,
    token: Option<String>,
    password: Option<String>,
    identifier: Option<Value>,
    user: Option<String>,
}

impl Services {
    /// Advances UIA for one request: returns the session data once some flow is complete,
    /// otherwise `Error::Uia` with the challenge.
    pub async fn check_uia(&self, request: UiaRequest<'_>) -> Result<UiaCompleted> {
        let auth: Option<AuthDict> = match request.auth {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                serde_json::from_value(value.clone())
                    .map_err(|e| MatrixError::bad_json(format!("Invalid `auth`: {e}")))?,
            ),
        };
        let requester_user = request.requester.map(|r| r.user_id.to_string());
        let now = now_ms();
        let mut session = match auth.as_ref().and_then(|a| a.session.as_deref()) {
            Some(session_id) => {
                let session = self
                    .store
                    .get_uia_session(session_id)
                    .await?
                    .filter(|s| (s.created_ts as u64) + SESSION_LIFETIME_MS > now)
                    .ok_or_else(|| MatrixError::unknown(format!("Unknown session ID: {session_id}")))?;
                if session.operation != request.operation || session.user_id != requester_user {
                    return Err(MatrixError::forbidden(
                        "Requested operation has changed during the UI authentication session.",
                    )
                    .into());
                }
                session
            }
            None => {
                let session = UiaSessionRecord {
                    session_id: random_string(24),
                    operation: request.operation.to_owned(),
                    user_id: requester_user.clone(),
                    created_ts: now as i64,
                    completed: Vec::new(),
                    data: request.data.clone(),
                };
                self.store.create_uia_session(&session).await?;
                session
            }
        };
        let mut params = json!({});
        if request.flows.iter().flatten().any(|stage| stage == TERMS)
            && let Some(terms) = self.terms_params()
        {
            params[TERMS] = terms;
        }
        let challenge = |session: &UiaSessionRecord, error: Option<MatrixError>| {
            Error::Uia(Box::new(UiaChallenge {
                flows: request.flows.clone(),
                params: params.clone(),
                session: session.session_id.clone(),
                completed: session.completed.clone(),
                error,
            }))
        };

        if let Some(auth) = &auth
            && let Some(kind) = auth.kind.as_deref()
        {
            if !request.flows.iter().any(|flow| flow.iter().any(|stage| stage == kind)) {
                return Err(challenge(
                    &session,
                    Some(MatrixError::new(ErrCode::Unrecognized, format!("Unrecognised login type {kind}"))),
                ));
            }
            if let Err(error) = self.check_stage(kind, auth, request.requester, &mut session).await {
                return Err(match error {
                    // Too many failed attempts is no failed stage: it is answered as rate limited.
                    Error::Matrix(error) if error.code != ErrCode::LimitExceeded => {
                        challenge(&session, Some(error))
                    }
                    other => other,
                });
            }
            if !session.completed.iter().any(|c| c == kind) {
                session.completed.push(kind.to_owned());
            }
            self.store.update_uia_session(&session.session_id, &session.completed, &session.data).await?;
        }

        let done =
            request.flows.iter().any(|flow| flow.iter().all(|stage| session.completed.contains(stage)));
        if !done {
            return Err(challenge(&session, None));
        }
        // Only one request may finish a session.
        if !self.store.delete_uia_session(&session.session_id).await? {
            return Err(MatrixError::unknown(format!("Unknown session ID: {}", session.session_id)).into());
        }
        Ok(UiaCompleted { data: session.data, completed: session.completed })
    }

    async fn check_stage(
        &self,
        kind: &str,
        auth: &AuthDict,
        requester: Option<&Requester>,
        session: &mut UiaSessionRecord,
    ) -> Result<()> {
        match kind {
            // Accepting the terms is the request itself (Synapse's `TermsAuthChecker`).
            DUMMY | TERMS => Ok(()),
            REGISTRATION_TOKEN => {
                let token =
                    auth.token.as_deref().ok_or_else(|| MatrixError::missing_param("Missing `token`"))?;
                if session.data.get("registration_token").and_then(Value::as_str) == Some(token) {
                    return Ok(());
                }
                if !self.store.reserve_registration_token(token, now_ms() as i64).await? {
                    return Err(MatrixError::new(ErrCode::Unauthorized, "Invalid registration token").into());
                }
                session.data["registration_token"] = json!(token);
                Ok(())
            }
            PASSWORD => {
                let requester = requester.ok_or_else(|| MatrixError::forbidden("Invalid password"))?;
                let password = auth
                    .password
                    .as_deref()
                    .ok_or_else(|| MatrixError::missing_param("Missing `password`"))?;
                // As `/login`: failed attempts on the account are limited.
                self.check_failed_password_attempts(requester.user_id.as_str())?;
                let named = match (&auth.identifier, &auth.user) {
                    (Some(identifier), _) => {
                        identifier.get("user").and_then(Value::as_str).map(|u| self.qualify_user_id(u))
                    }
                    (None, Some(user)) => Some(self.qualify_user_id(user)),
                    (None, None) => None,
                };
                if let Some(named) = named
                    && !named.eq_ignore_ascii_case(requester.user_id.as_str())
                {
                    self.record_failed_password_attempt(requester.user_id.as_str())?;
                    return Err(MatrixError::forbidden("Invalid username or password").into());
                }
                let user = self.store.get_user(requester.user_id.as_str()).await?;
                let hash = user.and_then(|u| u.password_hash);
                let valid = match hash {
                    Some(hash) => self.passwords.verify(password, &hash).await,
                    None => false,
                };
                if !valid {
                    self.record_failed_password_attempt(requester.user_id.as_str())?;
                    return Err(MatrixError::forbidden("Invalid password").into());
                }
                Ok(())
            }
            other => {
                Err(MatrixError::new(ErrCode::Unrecognized, format!("Unrecognised login type {other}"))
                    .into())
            }
        }
    }

    /// `@alice:server` stays as it is; `alice` becomes `@alice:<this server>`.
    pub fn qualify_user_id(&self, user: &str) -> String {
        if user.starts_with('@') { user.to_owned() } else { format!("@{user}:{}", self.server_name()) }
    }
}
