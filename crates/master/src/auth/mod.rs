//! Who may do what: the cluster PKI (`pki`), worker admission with join tokens
//! and certificates and the failed-authentication limiter (`admission`), and
//! users, roles and API tokens (`users`).

pub(crate) mod admission;
pub(crate) mod pki;
pub(crate) mod users;
