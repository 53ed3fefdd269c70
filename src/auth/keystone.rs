//! Token validation against a real Keystone v3, the way keystonemiddleware does it.
//!
//! The service authenticates itself (password or application credential), keeps its own token
//! and renews it before it expires or when Keystone refuses it. Each user token is validated
//! with `GET /v3/auth/tokens` (`X-Auth-Token`: the service token, `X-Subject-Token`: the
//! user's). Validations are cached until the token expires or the cache TTL passes, whichever
//! is first; refusals are cached briefly. Cache keys are SHA-256 digests: no raw token is kept
//! in memory longer than one request, and none is ever logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Mutex;

use super::{AuthError, Authenticator};
use crate::domain::Principal;

/// How the service proves who it is.
#[derive(Debug, Clone)]
pub enum ServiceCredentials {
    Password { username: String, password: String, user_domain: String, project: String, project_domain: String },
    ApplicationCredential { id: String, secret: String },
}

#[derive(Debug, Clone)]
pub struct KeystoneConfig {
    /// The identity endpoint, e.g. `http://127.0.0.1:5000` (with or without `/v3`).
    pub url: String,
    pub credentials: ServiceCredentials,
    /// The longest a validation is trusted.
    pub cache_ttl: Duration,
    /// How long a refused token stays refused without asking again.
    pub negative_ttl: Duration,
    /// How many validations are cached.
    pub cache_size: u64,
    /// Per-request timeout towards Keystone.
    pub timeout: Duration,
    /// How an `https` endpoint's certificate is checked.
    pub tls: KeystoneTls,
    /// The `admin` role makes a cloud-wide admin only in Keystone's admin project (a policy of
    /// `role:admin and is_admin_project:True`). Off, as in Nova's and Glance's default policies
    /// (`context_is_admin` is `role:admin`): the role makes an admin in any project.
    pub admin_project_only: bool,
}

/// How imagemeta checks the certificate of an `https` Keystone (keystonemiddleware's `cafile`
/// and `insecure`).
#[derive(Debug, Clone)]
pub enum KeystoneTls {
    /// Against the system's trusted roots.
    SystemRoots,
    /// Against the system's roots and these PEM certificates (a private CA).
    ExtraRoots(Vec<u8>),
    /// Not at all: the connection is encrypted but Keystone is not authenticated.
    Insecure,
}

type TokenKey = [u8; 32];

#[derive(Clone)]
struct Valid {
    principal: Arc<Principal>,
    until: Instant,
}

pub struct Keystone {
    base: String,
    credentials: ServiceCredentials,
    http: reqwest::Client,
    cache_ttl: Duration,
    admin_project_only: bool,
    valid: Cache<TokenKey, Valid>,
    refused: Cache<TokenKey, ()>,
    /// The service's own token and when to renew it; one renewal at a time.
    service_token: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    user: Named,
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Role>,
    /// Absent means true (keystonemiddleware's default).
    is_admin_project: Option<bool>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
}

#[derive(Deserialize)]
struct Role {
    name: String,
}

fn key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

/// Makes rustls's `ring` provider the process's default, once. Every `reqwest` client needs
/// one before it is built (this build leaves out reqwest's default provider, aws-lc, for
/// ring), the tests' clients included.
pub fn install_tls() {
    crate::tls::install();
}

/// A request error with its causes, which say what failed (a refused connection, a
/// certificate Keystone's CA did not sign...), without the URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Keystone is not answering usefully: the request should be retried later (503).
fn unavailable(what: impl std::fmt::Display) -> AuthError {
    AuthError::Unavailable(what.to_string())
}

impl Keystone {
    pub fn new(config: KeystoneConfig) -> anyhow::Result<Keystone> {
        let base = config.url.trim_end_matches('/').trim_end_matches("/v3").to_owned();
        install_tls();
        let mut http = reqwest::Client::builder().timeout(config.timeout);
        match &config.tls {
            KeystoneTls::SystemRoots => {}
            KeystoneTls::ExtraRoots(pem) => {
                let roots = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| anyhow::anyhow!("the Keystone CA file holds no usable PEM certificate: {e}"))?;
                anyhow::ensure!(!roots.is_empty(), "the Keystone CA file holds no PEM certificate");
                http = http.tls_certs_merge(roots);
            }
            KeystoneTls::Insecure => http = http.tls_danger_accept_invalid_certs(true),
        }
        let http = http.build()?;
        Ok(Keystone {
            base,
            credentials: config.credentials,
            http,
            cache_ttl: config.cache_ttl,
            admin_project_only: config.admin_project_only,
            valid: Cache::builder().max_capacity(config.cache_size).time_to_live(config.cache_ttl).build(),
            refused: Cache::builder().max_capacity(config.cache_size).time_to_live(config.negative_ttl).build(),
            service_token: Mutex::new(None),
        })
    }

    /// The service token, obtained or renewed when missing, refused, or close to expiry.
    async fn service_token(&self, renew: bool) -> Result<String, AuthError> {
        let mut slot = self.service_token.lock().await;
        if let Some((token, renew_at)) = slot.as_ref()
            && !renew
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let identity = match &self.credentials {
            ServiceCredentials::Password { username, password, user_domain, project, project_domain } => json!({
                "auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": username, "domain": {"name": user_domain}, "password": password}}},
                    "scope": {"project": {"name": project, "domain": {"name": project_domain}}},
                }
            }),
            ServiceCredentials::ApplicationCredential { id, secret } => json!({
                "auth": {"identity": {"methods": ["application_credential"],
                                      "application_credential": {"id": id, "secret": secret}}}
            }),
        };
        let response = self
            .http
            .post(format!("{}/v3/auth/tokens", self.base))
            .json(&identity)
            .send()
            .await
            .map_err(|e| unavailable(format!("cannot reach Keystone: {}", describe(e))))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!("Keystone refused the service credentials ({status})")));
        }
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| unavailable("Keystone issued no service token"))?;
        let body: TokenBody = response.json().await.map_err(|e| unavailable(format!("bad token response: {e}")))?;
        let expires = parse_expiry(&body.token.expires_at).unwrap_or(Instant::now() + Duration::from_secs(300));
        // Renew a minute early (or halfway, for very short-lived tokens).
        let lifetime = expires.saturating_duration_since(Instant::now());
        let renew_at = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60).min(lifetime / 2));
        *slot = Some((token.clone(), renew_at));
        Ok(token)
    }

    async fn validate(&self, token: &str) -> Result<Valid, AuthError> {
        let mut renew = false;
        loop {
            let service = self.service_token(renew).await?;
            let response = self
                .http
                .get(format!("{}/v3/auth/tokens", self.base))
                .header("x-auth-token", service)
                .header("x-subject-token", token)
                .send()
                .await
                .map_err(|e| unavailable(format!("cannot reach Keystone: {}", describe(e))))?;
            match response.status().as_u16() {
                200 => {
                    let body: TokenBody =
                        response.json().await.map_err(|e| unavailable(format!("bad validation response: {e}")))?;
                    return principal(body.token, self.cache_ttl, self.admin_project_only);
                }
                // The subject token is unknown, expired or revoked.
                404 => return Err(AuthError::Invalid),
                // Our own token was refused: renew it once.
                401 | 403 if !renew => renew = true,
                other => return Err(unavailable(format!("Keystone answered {other} to a token validation"))),
            }
        }
    }
}

/// The identity in a validated token. A token without a project scope cannot use these APIs.
fn principal(info: TokenInfo, ttl: Duration, admin_project_only: bool) -> Result<Valid, AuthError> {
    let project = info.project.ok_or(AuthError::Invalid)?;
    let expires = parse_expiry(&info.expires_at).ok_or(AuthError::Invalid)?;
    let now = Instant::now();
    if expires <= now {
        return Err(AuthError::Invalid);
    }
    let roles: Vec<String> = info.roles.into_iter().map(|r| r.name.to_lowercase()).collect();
    let mut principal = Principal::new(info.user.id, project.id, roles);
    if admin_project_only {
        // Absent means true: keystonemiddleware's default, for a Keystone without an admin
        // project configured.
        principal.is_admin &= info.is_admin_project.unwrap_or(true);
    }
    Ok(Valid { principal: Arc::new(principal), until: expires.min(now + ttl) })
}

/// Keystone's `expires_at` as an instant on this machine's monotonic clock.
fn parse_expiry(s: &str) -> Option<Instant> {
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let left = at - OffsetDateTime::now_utc();
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
    Some(Instant::now() + left)
}

/// `GET /v3/auth/catalog`.
#[derive(Deserialize)]
struct CatalogBody {
    catalog: Vec<CatalogService>,
}

#[derive(Deserialize)]
struct CatalogService {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Deserialize)]
struct CatalogEndpoint {
    interface: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    url: String,
}

/// The URL of the `kind` endpoint for `interface` in `region`, as keystoneauth's `url_for`
/// picks it (the region matched by name or id).
fn find_endpoint(catalog: &[CatalogService], kind: &str, region: &str, interface: &str) -> Option<String> {
    catalog.iter().filter(|s| s.kind == kind).flat_map(|s| &s.endpoints).find_map(|e| {
        let in_region = e.region.as_deref() == Some(region) || e.region_id.as_deref() == Some(region);
        (in_region && e.interface == interface).then(|| e.url.trim_end_matches('/').to_owned())
    })
}

#[async_trait]
impl Authenticator for Keystone {
    async fn endpoint(
        &self,
        token: &str,
        service_type: &str,
        region: &str,
        interface: &str,
    ) -> Result<Option<String>, AuthError> {
        let response = self
            .http
            .get(format!("{}/v3/auth/catalog", self.base))
            .header("x-auth-token", token)
            .send()
            .await
            .map_err(|e| unavailable(format!("cannot reach Keystone: {}", describe(e))))?;
        match response.status().as_u16() {
            200 => {
                let body: CatalogBody =
                    response.json().await.map_err(|e| unavailable(format!("bad catalog response: {e}")))?;
                Ok(find_endpoint(&body.catalog, service_type, region, interface))
            }
            401 | 403 | 404 => Err(AuthError::Invalid),
            other => Err(unavailable(format!("Keystone answered {other} to a catalog request"))),
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let k = key(token);
        if let Some(v) = self.valid.get(&k).await {
            if Instant::now() < v.until {
                crate::admin::Tally::KeystoneCacheHit.add();
                return Ok(v.principal);
            }
            self.valid.invalidate(&k).await;
        }
        if self.refused.get(&k).await.is_some() {
            crate::admin::Tally::KeystoneCacheHit.add();
            return Err(AuthError::Invalid);
        }
        crate::admin::Tally::KeystoneCacheMiss.add();
        let started = Instant::now();
        let validated = self.validate(token).await;
        let outcome = match &validated {
            Ok(_) => "valid",
            Err(AuthError::Invalid) => "invalid",
            Err(AuthError::Unavailable(_)) => "unavailable",
        };
        metrics::histogram!("imagemeta_keystone_validation_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match validated {
            Ok(v) => {
                let principal = v.principal.clone();
                self.valid.insert(k, v).await;
                Ok(principal)
            }
            Err(AuthError::Invalid) => {
                self.refused.insert(k, ()).await;
                Err(AuthError::Invalid)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(expires: &str, roles: &[&str], admin_project: Option<bool>) -> TokenInfo {
        TokenInfo {
            expires_at: expires.into(),
            user: Named { id: "u".into() },
            project: Some(Named { id: "p".into() }),
            roles: roles.iter().map(|r| Role { name: r.to_string() }).collect(),
            is_admin_project: admin_project,
        }
    }

    #[test]
    fn identity_from_token() {
        let minute = Duration::from_secs(60);
        let v = principal(info("2999-01-01T00:00:00.000000Z", &["Admin", "member"], None), minute, false).ok().unwrap();
        assert!(v.principal.is_admin && v.principal.roles.contains(&"admin".to_string()));
        assert!(v.until <= Instant::now() + minute);
        assert!(matches!(principal(info("2000-01-01T00:00:00Z", &[], None), minute, false), Err(AuthError::Invalid)));
    }

    #[test]
    fn endpoints_are_found_by_type_region_and_interface() {
        let catalog: CatalogBody = serde_json::from_str(
            r#"{"catalog": [
                {"type": "identity", "endpoints": [{"interface": "public", "region": "R1", "url": "http://k"}]},
                {"type": "image", "endpoints": [
                    {"interface": "internal", "region": "R1", "region_id": "R1", "url": "http://internal"},
                    {"interface": "public", "region_id": "R2", "url": "http://two/"},
                    {"interface": "public", "region": "R1", "url": "http://one"}]}]}"#,
        )
        .unwrap();
        let find = |region, interface| find_endpoint(&catalog.catalog, "image", region, interface);
        assert_eq!(find("R1", "public").as_deref(), Some("http://one"));
        assert_eq!(find("R2", "public").as_deref(), Some("http://two"));
        assert_eq!(find("R1", "internal").as_deref(), Some("http://internal"));
        assert_eq!(find("R3", "public"), None);
        assert_eq!(find("R1", "not an interface"), None);
    }

    /// Nova's and Glance's default: the admin role makes an admin in any project. With
    /// `admin_project_only`, only in the admin project (absent: keystonemiddleware's true).
    #[test]
    fn the_admin_role_outside_the_admin_project() {
        let minute = Duration::from_secs(60);
        let admin = |project: Option<bool>, only: bool| {
            principal(info("2999-01-01T00:00:00Z", &["admin"], project), minute, only).ok().unwrap().principal.is_admin
        };
        assert!(admin(Some(false), false));
        assert!(!admin(Some(false), true));
        assert!(admin(Some(true), true));
        assert!(admin(None, true));
        let member = principal(info("2999-01-01T00:00:00Z", &["member"], Some(true)), minute, true).ok().unwrap();
        assert!(!member.principal.is_admin);
    }
}
