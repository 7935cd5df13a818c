//! Users, roles and API tokens (`USERS`).
//!
//! Roles: `viewer` reads state and telemetry; `operator` also submits and
//! cancels tasks; `admin` may do everything. A token is `cat1.<id>.<secret>`,
//! shown once when created; only the SHA-256 of the secret is stored. The REPL
//! on the master's own terminal is the local admin and needs no token.

use crate::auth::Auth;
use crate::auth::admission::random_secret;
use crate::error::{MasterError, MasterResult};
use crate::store::{ApiTokenRecord, UserRecord, now_millis};
use cloudai_common::tls;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read cluster state and telemetry.
    Viewer,
    /// Also submit and cancel tasks, assign queued tasks.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Parses `admin`, `operator` or `viewer`.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// Their role.
    pub role: Role,
    /// The token's id (`None` for the console and `--insecure`).
    pub token_id: Option<String>,
    /// When the token stops working (ms since epoch).
    pub expires_at: Option<i64>,
}

impl Caller {
    /// The master's own console: the local admin, no token.
    pub fn console() -> Caller {
        Caller {
            user: CONSOLE_USER.into(),
            role: Role::Admin,
            token_id: None,
            expires_at: None,
        }
    }
}

/// The owner of what the master's own console does.
pub const CONSOLE_USER: &str = "console";

/// Longest lifetime `token create --expires` accepts: ten years.
pub const MAX_TOKEN_LIFETIME_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// One token as the index knows it.
struct IndexedToken {
    user: String,
    role: Role,
    hash: String,
    expires_at: Option<i64>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Unknown id, wrong secret, or not a token at all.
    Invalid,
    /// It expired at this moment (ms since epoch).
    Expired(i64),
}

/// In-memory index of token ids, loaded from the store and kept in step with
/// it, and when each token was last used (since the master started: writing
/// the store on every call would cost more than the answer is worth).
pub struct TokenIndex {
    by_id: Mutex<HashMap<String, IndexedToken>>,
    last_used: Mutex<HashMap<String, i64>>,
    /// Bumped whenever tokens or users change, so open streams re-check theirs.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for TokenIndex {
    fn default() -> Self {
        Self {
            by_id: Mutex::default(),
            last_used: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl TokenIndex {
    pub(crate) fn rebuild(&self, users: &[UserRecord]) {
        let mut index = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        index.clear();
        for user in users {
            let Some(role) = Role::parse(&user.role) else {
                continue;
            };
            for token in &user.tokens {
                index.insert(
                    token.id.clone(),
                    IndexedToken {
                        user: user.name.clone(),
                        role,
                        hash: token.hash.clone(),
                        expires_at: token.expires_at,
                    },
                );
            }
        }
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| index.contains_key(id));
        drop(index);
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// The caller a token names at `now` (ms since epoch), noting its use.
    pub(crate) fn check(&self, token: &str, now: i64) -> Result<Caller, Refusal> {
        let caller = self.find(token, now)?;
        if let Some(id) = &caller.token_id {
            self.last_used
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), now);
        }
        Ok(caller)
    }

    /// The caller a token names at `now`, without counting it as a use.
    fn find(&self, token: &str, now: i64) -> Result<Caller, Refusal> {
        let mut parts = token.trim().splitn(3, '.');
        if parts.next() != Some("cat1") {
            return Err(Refusal::Invalid);
        }
        let (Some(id), Some(secret)) = (parts.next(), parts.next()) else {
            return Err(Refusal::Invalid);
        };
        let index = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let entry = index.get(id).ok_or(Refusal::Invalid)?;
        if tls::fingerprint(secret.as_bytes()) != entry.hash {
            return Err(Refusal::Invalid);
        }
        if let Some(at) = entry.expires_at
            && at <= now
        {
            return Err(Refusal::Expired(at));
        }
        Ok(Caller {
            user: entry.user.clone(),
            role: entry.role,
            token_id: Some(id.to_string()),
            expires_at: entry.expires_at,
        })
    }

    /// When a token was last used since the master started.
    pub(crate) fn last_used(&self, token_id: &str) -> Option<i64> {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token_id)
            .copied()
    }
}

/// A token just made: the only time its secret is seen.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    /// `cat1.<id>.<secret>`.
    pub token: String,
    /// Its public id.
    pub id: String,
    /// When it stops working (ms since epoch).
    pub expires_at: Option<i64>,
}

impl Auth {
    pub(super) async fn reindex_users(&self) -> MasterResult<Vec<UserRecord>> {
        let users = self.store().list_users().await?;
        self.tokens().rebuild(&users);
        Ok(users)
    }

    /// Adds a user with a role; returns the role.
    pub async fn add_user(&self, name: &str, role: &str) -> MasterResult<Role> {
        cloudai_common::validate::id("user name", name)?;
        let role = Role::parse(role).ok_or_else(|| {
            MasterError::InvalidArgument(format!(
                "role '{role}' is not one of admin, operator, viewer"
            ))
        })?;
        if self
            .store()
            .list_users()
            .await?
            .iter()
            .any(|u| u.name == name)
        {
            return Err(MasterError::FailedPrecondition(format!(
                "user '{name}' already exists"
            )));
        }
        let user = UserRecord {
            name: name.to_string(),
            role: role.as_str().to_string(),
            created_at: now_millis(),
            tokens: vec![],
        };
        self.store().put_user(&user).await?;
        tracing::info!(user = name, role = role.as_str(), "user added");
        Ok(role)
    }

    /// Removes a user and every token of theirs.
    pub async fn remove_user(&self, name: &str) -> MasterResult<()> {
        if !self.store().delete_user(name).await? {
            return Err(MasterError::NotFound(format!(
                "no user '{name}': `users` lists them"
            )));
        }
        self.reindex_users().await?;
        tracing::info!(user = name, "user removed");
        Ok(())
    }

    /// All users.
    pub async fn users(&self) -> MasterResult<Vec<UserRecord>> {
        Ok(self.store().list_users().await?)
    }

    /// Creates an API token for a user, valid for `lifetime` (`None`:
    /// until revoked); the returned token is shown once.
    pub async fn create_token(
        &self,
        name: &str,
        lifetime: Option<std::time::Duration>,
    ) -> MasterResult<CreatedToken> {
        let now = now_millis();
        let expires_at = match lifetime {
            None => None,
            Some(lifetime) if lifetime.as_secs() > MAX_TOKEN_LIFETIME_SECONDS => {
                return Err(MasterError::InvalidArgument(format!(
                    "a token may live at most {} days",
                    MAX_TOKEN_LIFETIME_SECONDS / 86_400
                )));
            }
            Some(lifetime) if lifetime.is_zero() => {
                return Err(MasterError::InvalidArgument(
                    "a token's lifetime must be longer than zero".into(),
                ));
            }
            Some(lifetime) => {
                // Bounded above, so this cannot overflow.
                Some(now + i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX / 2))
            }
        };
        let users = self.store().list_users().await?;
        let Some(mut user) = users.into_iter().find(|u| u.name == name) else {
            return Err(MasterError::NotFound(format!(
                "no user '{name}': add one with `user add {name} viewer|operator|admin`"
            )));
        };
        let id = random_secret()[..8].to_string();
        let secret = random_secret();
        user.tokens.push(ApiTokenRecord {
            id: id.clone(),
            hash: tls::fingerprint(secret.as_bytes()),
            created_at: now,
            expires_at,
        });
        self.store().put_user(&user).await?;
        self.reindex_users().await?;
        tracing::info!(user = name, token_id = id, ?expires_at, "API token created");
        Ok(CreatedToken {
            token: format!("cat1.{id}.{secret}"),
            id,
            expires_at,
        })
    }

    /// When a token was last used since the master started.
    pub fn token_last_used(&self, token_id: &str) -> Option<i64> {
        self.tokens().last_used(token_id)
    }

    /// Revokes one API token by its id; returns the name of its user.
    pub async fn revoke_token(&self, token_id: &str) -> MasterResult<String> {
        for mut user in self.store().list_users().await? {
            let before = user.tokens.len();
            user.tokens.retain(|t| t.id != token_id);
            if user.tokens.len() != before {
                self.store().put_user(&user).await?;
                self.reindex_users().await?;
                tracing::info!(user = %user.name, token_id, "API token revoked");
                return Ok(user.name);
            }
        }
        Err(MasterError::NotFound(format!(
            "no token with id '{token_id}': `users` lists token ids"
        )))
    }

    /// Resolves once `token` no longer grants `required`: revoked, its user
    /// removed, or expired. Streams opened with the token end with it. Never
    /// resolves with `--insecure` (no tokens).
    pub fn revoked(
        &self,
        token: Option<String>,
        required: Role,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let insecure = self.pki().is_none();
        let auth = self.clone();
        let mut changes = self.tokens().changes.subscribe();
        async move {
            if insecure {
                return std::future::pending().await;
            }
            let grants = || {
                token
                    .as_deref()
                    .and_then(|t| auth.tokens().find(t, now_millis()).ok())
                    .filter(|caller| caller.role >= required)
            };
            loop {
                let Some(caller) = grants() else { return };
                let expiry = async {
                    match caller.expires_at {
                        Some(at) => {
                            // At most a day at a time: the loop looks again.
                            let left = at.saturating_sub(now_millis()).clamp(0, 86_400_000);
                            tokio::time::sleep(std::time::Duration::from_millis(left as u64)).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() {
                        return std::future::pending().await;
                    },
                    () = expiry => {}
                }
            }
        }
    }

    /// Checks a bearer token (header or query) for a required role. With
    /// `--insecure` no token is needed. Failures are rate limited per address.
    pub fn authorize(
        &self,
        token: Option<&str>,
        required: Role,
        peer: Option<SocketAddr>,
    ) -> MasterResult<Caller> {
        if self.pki().is_none() {
            return Ok(Caller {
                user: "anonymous".into(),
                role: Role::Admin,
                token_id: None,
                expires_at: None,
            });
        }
        // Valid tokens always pass; only failures are rate limited.
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            self.limiter().check(peer)?;
            self.limiter().fail(peer);
            return Err(MasterError::Unauthenticated(
                "an API token is required: send `Authorization: Bearer <token>` (create one on the master with `token create <user>`)".into(),
            ));
        };
        let caller = match self.tokens().check(token, now_millis()) {
            Ok(caller) => caller,
            Err(refusal) => {
                self.limiter().check(peer)?;
                self.limiter().fail(peer);
                return Err(MasterError::Unauthenticated(match refusal {
                    Refusal::Invalid => "the API token is not valid (revoked or mistyped)".into(),
                    Refusal::Expired(at) => format!(
                        "the API token expired {}: ask an admin for a new one (`token create <user> --expires 30d`)",
                        cloudai_common::units::format_millis_utc(at)
                    ),
                }));
            }
        };
        if caller.role < required {
            return Err(MasterError::PermissionDenied(format!(
                "user {} is a {}; this needs the {} role",
                caller.user,
                caller.role.as_str(),
                required.as_str()
            )));
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!(Role::parse("operator"), Some(Role::Operator));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn tokens_are_found_by_id_and_checked_by_hash() {
        let index = TokenIndex::default();
        let secret = "s3cret";
        index.rebuild(&[UserRecord {
            name: "ana".into(),
            role: "viewer".into(),
            created_at: 0,
            tokens: vec![ApiTokenRecord {
                id: "abcd1234".into(),
                hash: tls::fingerprint(secret.as_bytes()),
                created_at: 0,
                expires_at: None,
            }],
        }]);
        assert_eq!(
            index.check("cat1.abcd1234.s3cret", 0).ok(),
            Some(Caller {
                user: "ana".into(),
                role: Role::Viewer,
                token_id: Some("abcd1234".into()),
                expires_at: None,
            })
        );
        assert_eq!(index.check("cat1.abcd1234.wrong", 0).ok(), None);
        assert_eq!(index.check("cat1.ffff0000.s3cret", 0).ok(), None);
        assert_eq!(index.check("garbage", 0).ok(), None);
        assert!(index.last_used("abcd1234").is_some());
    }

    #[test]
    fn expired_tokens_are_refused_and_say_when() {
        let index = TokenIndex::default();
        index.rebuild(&[UserRecord {
            name: "bo".into(),
            role: "admin".into(),
            created_at: 0,
            tokens: vec![ApiTokenRecord {
                id: "00ff00ff".into(),
                hash: tls::fingerprint(b"x"),
                created_at: 0,
                expires_at: Some(1_000),
            }],
        }]);
        assert!(index.check("cat1.00ff00ff.x", 999).is_ok());
        assert_eq!(
            index.check("cat1.00ff00ff.x", 1_000),
            Err(Refusal::Expired(1_000))
        );
        assert_eq!(index.check("cat1.00ff00ff.y", 0), Err(Refusal::Invalid));
    }
}
