//! Access tokens: minting, hashing, and turning a presented token into a [`Requester`].
//!
//! Tokens are random (from a CSPRNG) and stored only as SHA-256 hashes. Recently used tokens are
//! cached in memory for a few seconds; logout, device deletion and deactivation evict them.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use myelin_core::{ErrCode, MatrixError};
use ruma::{OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use crate::appservice::Masquerade;
use crate::util::{now_ms, random_string};
use crate::{Error, Result, Services};

/// Who is making a request, as established from its access token.
#[derive(Clone, Debug)]
pub struct Requester {
    pub user_id: OwnedUserId,
    pub device_id: Option<String>,
    pub is_guest: bool,
    pub is_admin: bool,
    /// Shadow-banned (admin API): the user's sends look successful but nothing is sent.
    pub shadow_banned: bool,
    /// Suspended (MSC3823): the user may not send, join, knock or invite.
    pub suspended: bool,
    /// SHA-256 of the presented access token.
    pub token_hash: String,
    /// The appservice whose `as_token` this request presented.
    pub appservice_id: Option<String>,
}

impl Requester {
    /// The requester for what the server does as a user on its own initiative (a force-join,
    /// a room deletion's leaves, server notices): no device, no token, no admin power.
    pub fn acting_as(user_id: &UserId) -> Self {
        Requester {
            user_id: user_id.to_owned(),
            device_id: None,
            is_guest: false,
            is_admin: false,
            shadow_banned: false,
            suspended: false,
            token_hash: String::new(),
            appservice_id: None,
        }
    }

    /// Whether the server acts on its own initiative ([`Requester::acting_as`]): no token.
    pub fn is_server_initiated(&self) -> bool {
        self.token_hash.is_empty()
    }

    /// Synapse's `check_auth_blocking` for an event this requester makes: the server's own
    /// actions are never blocked, nor an appservice's unless `track_appservice_user_ips` counts
    /// its users as monthly active users.
    pub(crate) async fn check_auth_blocking_for(&self, services: &crate::Services) -> crate::Result<()> {
        if self.is_server_initiated()
            || (self.appservice_id.is_some() && !services.config.appservice.track_appservice_user_ips)
        {
            return Ok(());
        }
        services.check_auth_blocking(Some(&self.user_id)).await
    }
}

/// SHA-256 of a token, in hex: the form tokens are stored in.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh token: `<prefix>_<base64 of the localpart>_<32 random characters>`. The localpart
/// part only helps admins recognise tokens; the random part carries the security.
pub fn mint_token(prefix: &str, localpart: &str) -> String {
    let localpart: String = localpart.chars().take(32).collect();
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(localpart.as_bytes());
    format!("{prefix}_{encoded}_{}", random_string(32))
}

/// A device ID as Synapse makes them: ten uppercase letters.
pub fn new_device_id() -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..10).map(|_| char::from(b'A' + rng.random_range(0..26u8))).collect()
}

const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 100_000;
/// Device "last seen" is written at most this often per device (as in Synapse).
const LAST_SEEN_GRANULARITY_MS: u64 = 120_000;

#[derive(Clone)]
struct CachedRequester {
    requester: Requester,
    valid_until_ms: Option<i64>,
    /// The refresh token this access token came with, if it has not been used yet.
    unused_refresh: Option<String>,
    cached_at: Instant,
}

/// (user ID, device ID) -> (when last recorded, from which address).
type LastSeen = HashMap<(String, String), (u64, Option<IpAddr>)>;

/// The in-memory parts of authentication.
#[derive(Default)]
pub struct AuthCache {
    tokens: Mutex<HashMap<String, CachedRequester>>,
    last_seen: Mutex<LastSeen>,
}

impl AuthCache {
    /// Forgets cached tokens (after logout, device deletion, deactivation).
    pub fn evict(&self, token_hashes: &[String]) {
        let mut tokens = self.tokens.lock();
        for hash in token_hashes {
            tokens.remove(hash);
        }
    }

    /// Forgets every cached token of a user.
    pub fn evict_user(&self, user_id: &UserId) {
        let mut tokens = self.tokens.lock();
        tokens.retain(|_, cached| cached.requester.user_id != user_id);
    }

    fn get(&self, hash: &str) -> Option<CachedRequester> {
        let tokens = self.tokens.lock();
        tokens.get(hash).filter(|c| c.cached_at.elapsed() < CACHE_TTL).cloned()
    }

    fn put(&self, hash: String, cached: CachedRequester) {
        let mut tokens = self.tokens.lock();
        if tokens.len() >= CACHE_MAX {
            tokens.clear();
        }
        tokens.insert(hash, cached);
    }

    /// Whether the device's last-seen record is due an update.
    fn should_touch(&self, user_id: &str, device_id: &str, ip: Option<IpAddr>, now: u64) -> bool {
        let mut last_seen = self.last_seen.lock();
        let key = (user_id.to_owned(), device_id.to_owned());
        match last_seen.get(&key) {
            Some((ts, last_ip)) if now.saturating_sub(*ts) < LAST_SEEN_GRANULARITY_MS && *last_ip == ip => {
                false
            }
            _ => {
                if last_seen.len() >= CACHE_MAX {
                    last_seen.clear();
                }
                last_seen.insert(key, (now, ip));
                true
            }
        }
    }
}

/// Where a request came from, for device "last seen" records.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

fn unknown_token(soft_logout: bool) -> Error {
    MatrixError::new(
        ErrCode::UnknownToken,
        if soft_logout { "Access token has expired" } else { "Unrecognised access token" },
    )
    .with_extra("soft_logout", soft_logout)
    .into()
}

impl Services {
    /// Establishes who presented `token`.
    pub async fn authenticate(&self, token: &str, client: &ClientInfo) -> Result<Requester> {
        self.authenticate_masquerading(token, client, &Masquerade::default()).await
    }

    /// Establishes who presented `token`: an appservice's `as_token` acts for its sender or,
    /// with `masquerade`, for a user (and device) of its namespace; any other token for its
    /// own user and device (`masquerade` ignored).
    pub async fn authenticate_masquerading(
        &self,
        token: &str,
        client: &ClientInfo,
        masquerade: &Masquerade,
    ) -> Result<Requester> {
        if let Some(requester) = self.appservice_requester(token, masquerade).await? {
            return Ok(requester);
        }
        let hash = hash_token(token);
        let now = now_ms();
        let cached = match self.auth_cache.get(&hash) {
            Some(cached) => cached,
            None => {
                let record = self.store.get_access_token(&hash).await?.ok_or_else(|| unknown_token(false))?;
                let user = self.store.get_user(&record.user_id).await?.ok_or_else(|| unknown_token(false))?;
                if user.deactivated {
                    return Err(unknown_token(false));
                }
                let user_id = UserId::parse(&record.user_id).map_err(Error::internal)?;
                let cached = CachedRequester {
                    requester: Requester {
                        user_id,
                        device_id: record.device_id.clone(),
                        is_guest: user.is_guest,
                        is_admin: user.admin,
                        shadow_banned: user.shadow_banned,
                        suspended: user.suspended,
                        token_hash: hash.clone(),
                        appservice_id: None,
                    },
                    valid_until_ms: record.valid_until_ms,
                    unused_refresh: if record.used { None } else { record.refresh_token_hash.clone() },
                    cached_at: Instant::now(),
                };
                if user.locked {
                    return Err(MatrixError::new(ErrCode::UserLocked, "This account has been locked")
                        .with_extra("soft_logout", true)
                        .into());
                }
                self.auth_cache.put(hash.clone(), cached.clone());
                cached
            }
        };
        if cached.valid_until_ms.is_some_and(|until| until <= now as i64) {
            return Err(unknown_token(true));
        }
        if let Some(refresh_hash) = &cached.unused_refresh {
            // First use of a refreshed access token: the refresh token before it dies now.
            self.store.mark_access_token_used(&hash, Some(refresh_hash)).await?;
            self.auth_cache.evict(std::slice::from_ref(&hash));
        }
        let requester = cached.requester;
        if let Some(device_id) = &requester.device_id
            && self.auth_cache.should_touch(requester.user_id.as_str(), device_id, client.ip, now)
        {
            self.note_monthly_active(&requester.user_id).await;
            let store = self.store.clone();
            let user_id = requester.user_id.to_string();
            let device_id = device_id.clone();
            let ip = client.ip.map(|ip| ip.to_string());
            let user_agent = client.user_agent.clone();
            tokio::spawn(async move {
                if let Err(error) = store
                    .touch_device(&user_id, &device_id, ip.as_deref(), user_agent.as_deref(), now as i64)
                    .await
                {
                    tracing::warn!(%error, "could not record device last-seen");
                }
            });
        }
        Ok(requester)
    }
}
