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
}

/// In-memory index of token ids, loaded from the store and kept in step with it.
pub struct TokenIndex {
    by_id: Mutex<HashMap<String, (String, Role, String)>>,
    /// Bumped whenever tokens or users change, so open streams re-check theirs.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for TokenIndex {
    fn default() -> Self {
        Self {
            by_id: Mutex::default(),
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
                    (user.name.clone(), role, token.hash.clone()),
                );
            }
        }
        drop(index);
        self.changes.send_modify(|generation| *generation += 1);
    }

    pub(crate) fn lookup(&self, token: &str) -> Option<Caller> {
        let mut parts = token.trim().splitn(3, '.');
        if parts.next()? != "cat1" {
            return None;
        }
        let (id, secret) = (parts.next()?, parts.next()?);
        let index = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let (user, role, hash) = index.get(id)?;
        (tls::fingerprint(secret.as_bytes()) == *hash).then(|| Caller {
            user: user.clone(),
            role: *role,
        })
    }
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

    /// Creates an API token for a user; the returned secret is shown once.
    pub async fn create_token(&self, name: &str) -> MasterResult<String> {
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
            created_at: now_millis(),
        });
        self.store().put_user(&user).await?;
        self.reindex_users().await?;
        tracing::info!(user = name, token_id = id, "API token created");
        Ok(format!("cat1.{id}.{secret}"))
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

    /// Resolves once `token` no longer grants `required`: revoked, or its
    /// user removed. Streams opened with the token end with it. Never
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
            loop {
                if changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let still = token
                    .as_deref()
                    .and_then(|t| auth.tokens().lookup(t))
                    .is_some_and(|caller| caller.role >= required);
                if !still {
                    return;
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
        let Some(caller) = self.tokens().lookup(token) else {
            self.limiter().check(peer)?;
            self.limiter().fail(peer);
            return Err(MasterError::Unauthenticated(
                "the API token is not valid (revoked or mistyped)".into(),
            ));
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
            }],
        }]);
        assert_eq!(
            index.lookup("cat1.abcd1234.s3cret"),
            Some(Caller {
                user: "ana".into(),
                role: Role::Viewer
            })
        );
        assert_eq!(index.lookup("cat1.abcd1234.wrong"), None);
        assert_eq!(index.lookup("cat1.ffff0000.s3cret"), None);
        assert_eq!(index.lookup("garbage"), None);
    }
}
