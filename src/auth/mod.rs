//! Token validation: turns an `X-Auth-Token` into a [`Principal`].
//!
//! Each mode is one [`Authenticator`] (static tokens, noauth, [`keystone`]); the API layers
//! only see the trait.

pub mod keystone;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::domain::Principal;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, unknown, expired or revoked: the client must authenticate (401).
    #[error("invalid token")]
    Invalid,
    /// The identity service could not answer (503).
    #[error("identity service unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, AuthError>;

    /// What [`Authenticator::authenticate`] would answer, when it can be told without waiting
    /// (`None`: ask it). Spares the requests of an authenticator that never waits a boxed
    /// future each.
    fn at_once(&self, _token: &str) -> Option<Result<Arc<Principal>, AuthError>> {
        None
    }

    /// The URL of the `service_type` endpoint for `interface` in `region`, from the service
    /// catalog `token` is scoped to (what `glance-download` finds the other Glance by). `None`
    /// when the catalog has no such endpoint, or when there is no catalog (no Keystone).
    async fn endpoint(
        &self,
        _token: &str,
        _service_type: &str,
        _region: &str,
        _interface: &str,
    ) -> Result<Option<String>, AuthError> {
        Ok(None)
    }
}

/// A fixed table of tokens, loaded from a JSON file:
/// `{"<token>": {"user_id": "…", "project_id": "…", "roles": ["member", "reader"]}}`.
pub struct StaticTokens {
    tokens: HashMap<String, Arc<Principal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    user_id: String,
    project_id: String,
    #[serde(default)]
    roles: Vec<String>,
}

impl StaticTokens {
    fn lookup(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        self.tokens.get(token).cloned().ok_or(AuthError::Invalid)
    }

    pub fn load(path: &Path) -> anyhow::Result<StaticTokens> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the tokens file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<StaticTokens> {
        let entries: HashMap<String, TokenEntry> = serde_json::from_str(text)?;
        if let Some(empty) = entries.keys().find(|t| t.is_empty()) {
            anyhow::bail!("empty token {empty:?} in the tokens file");
        }
        let tokens = entries
            .into_iter()
            .map(|(token, e)| (token, Arc::new(Principal::new(e.user_id, e.project_id, e.roles))))
            .collect();
        Ok(StaticTokens { tokens })
    }
}

#[async_trait]
impl Authenticator for StaticTokens {
    async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        self.lookup(token)
    }

    /// Always: the table is in memory.
    fn at_once(&self, token: &str) -> Option<Result<Arc<Principal>, AuthError>> {
        Some(self.lookup(token))
    }
}

/// Local development only: the token `user:project` is taken at its word (project defaults to
/// the user), and user `admin` is an admin, as Nova's former `noauth2`.
pub struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let (user, project) = token.split_once(':').unwrap_or((token, token));
        if user.is_empty() || project.is_empty() {
            return Err(AuthError::Invalid);
        }
        let roles = if user == "admin" { vec!["admin", "member", "reader"] } else { vec!["member", "reader"] };
        Ok(Arc::new(Principal::new(user.into(), project.into(), roles.into_iter().map(String::from).collect())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_tokens_map_to_principals() {
        let t = StaticTokens::parse(r#"{"t1": {"user_id": "u", "project_id": "p", "roles": ["admin"]}}"#).unwrap();
        let p = t.authenticate("t1").await.unwrap();
        assert!(p.is_admin && p.project_id == "p");
        assert!(matches!(t.authenticate("t2").await, Err(AuthError::Invalid)));
    }

    #[tokio::test]
    async fn noauth_takes_user_and_project() {
        let p = NoAuth.authenticate("alice:p1").await.unwrap();
        assert_eq!((p.user_id.as_str(), p.project_id.as_str(), p.is_admin), ("alice", "p1", false));
        assert!(NoAuth.authenticate("admin").await.unwrap().is_admin);
    }
}
