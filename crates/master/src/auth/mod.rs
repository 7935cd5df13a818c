//! Who may do what: the cluster PKI (`pki`), worker admission with join tokens
//! and certificates and the failed-authentication limiter (`admission`), and
//! users, roles and API tokens (`users`).

pub(crate) mod admission;
pub(crate) mod pki;
pub(crate) mod users;

use crate::core::registry::Registry;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Handle to authentication and authorization (cheap to clone).
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    registry: Registry,
    /// The cluster PKI; `None` with `--insecure`.
    pki: Option<Arc<pki::Pki>>,
    limiter: admission::AuthLimiter,
    tokens: users::TokenIndex,
    join_token_ttl: Duration,
}

impl Auth {
    /// Loads the users' tokens from the store.
    pub async fn load(
        store: Arc<dyn Store>,
        registry: Registry,
        pki: Option<Arc<pki::Pki>>,
        join_token_ttl: Duration,
    ) -> crate::error::MasterResult<Self> {
        let auth = Self {
            inner: Arc::new(Inner {
                store,
                registry,
                pki,
                limiter: admission::AuthLimiter::default(),
                tokens: users::TokenIndex::default(),
                join_token_ttl,
            }),
        };
        auth.reindex_users().await?;
        Ok(auth)
    }

    /// The cluster PKI (`None` with `--insecure`).
    pub fn pki(&self) -> Option<&Arc<pki::Pki>> {
        self.inner.pki.as_ref()
    }

    /// Lifetime of join tokens.
    pub fn join_token_ttl(&self) -> Duration {
        self.inner.join_token_ttl
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    fn limiter(&self) -> &admission::AuthLimiter {
        &self.inner.limiter
    }

    fn tokens(&self) -> &users::TokenIndex {
        &self.inner.tokens
    }
}
