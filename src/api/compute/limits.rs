//! `GET /limits` (nova-images §7): Nova's default quotas, with `maxImageMeta` reporting the
//! `metadata_items` quota this service enforces, below microversion 2.39.

use serde_json::{Map, Value, json};

use super::{Ctx, Reply};
use crate::api::fault::Fault;
use crate::api::microversion::Version;
use crate::domain::policy::{self, Rule};

pub fn index(ctx: &Ctx<'_>) -> Result<Reply, Fault> {
    let v = ctx.version.unwrap_or(Version::new(2, 1));
    // From 2.75 the query schema allows `tenant_id` only (`additionalProperties: false`).
    if v >= Version::new(2, 75) {
        let mut extras: Vec<&String> = ctx.query.iter().map(|(k, _)| k).filter(|k| *k != "tenant_id").collect();
        extras.dedup();
        if !extras.is_empty() {
            return Err(Fault::bad_request(super::schemas::additional_not_allowed(&extras)));
        }
    }
    // Another project's limits need `os_compute_api:limits:other_project` (admin): Nova checks
    // it whenever `tenant_id` is given.
    let other = Rule::OtherProjectLimits;
    if ctx.query.iter().any(|(k, _)| k == "tenant_id") && !policy::authorize(&ctx.principal, &other, None) {
        return Err(Fault::forbidden(format!("Policy doesn't allow {} to be performed.", other.name())));
    }
    let meta = ctx.state.settings.metadata_quota.as_limit();
    // Before 2.36 the network-proxy limits are shown; before 2.39 `maxImageMeta` is; before
    // 2.57 the personality (injected files) limits are.
    let proxies = v < Version::new(2, 36);
    let image_meta = v < Version::new(2, 39);
    let personality = v < Version::new(2, 57);
    let mut absolute = Map::new();
    let mut put = |k: &str, v: i64| {
        absolute.insert(k.into(), Value::from(v));
    };
    if image_meta {
        put("maxImageMeta", meta);
    }
    if personality {
        put("maxPersonality", 5);
        put("maxPersonalitySize", 10240);
    }
    if proxies {
        put("maxSecurityGroupRules", -1);
        put("maxSecurityGroups", -1);
    }
    put("maxServerMeta", meta);
    put("maxTotalCores", 20);
    if proxies {
        put("maxTotalFloatingIps", -1);
    }
    put("maxTotalInstances", 10);
    put("maxTotalKeypairs", 100);
    put("maxTotalRAMSize", 51200);
    put("maxServerGroups", 10);
    put("maxServerGroupMembers", 10);
    put("totalCoresUsed", 0);
    put("totalInstancesUsed", 0);
    put("totalRAMUsed", 0);
    if proxies {
        put("totalSecurityGroupsUsed", 0);
        put("totalFloatingIpsUsed", 0);
    }
    put("totalServerGroupsUsed", 0);
    Ok(Reply::ok(json!({"limits": {"absolute": absolute, "rate": []}})))
}
