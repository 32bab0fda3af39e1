//! `[revocation]` (SPEC §6), read by `revocation/` and its endpoints.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Dur};

/// `[revocation]` (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// Roles whose bearer tokens may `POST /revocations`.
    pub admin_roles: Vec<String>,
    /// The bearer secret of `GET /revocations`; without it there is no feed (404).
    pub feed_secret_file: Option<PathBuf>,
    /// Lifetime of `sub` and `sid` entries (and of a `jti` entry given no `exp`): the longest
    /// token lifetime.
    pub retain: Dur,
    /// Most live entries; a revocation beyond it is refused (503), never silently dropped.
    pub max_entries: usize,
    /// Whether a `POST /revocations` caller may revoke another issuer's tokens (`iss`).
    pub cross_issuer: bool,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            admin_roles: vec!["admin".into(), "super_admin".into()],
            feed_secret_file: None,
            retain: Dur::secs(24 * 3600),
            max_entries: 100_000,
            cross_issuer: false,
        }
    }
}

impl Config {
    pub(super) fn validate_revocation(&self) -> Result<(), ConfigError> {
        let r = &self.revocation;
        if r.admin_roles.iter().any(|role| role.is_empty()) {
            return Err(ConfigError::new(
                "revocation.admin_roles",
                "roles must be non-empty",
            ));
        }
        if r.retain.0 < Duration::from_secs(1) {
            return Err(ConfigError::new("revocation.retain", "must be at least 1s"));
        }
        if r.max_entries == 0 {
            return Err(ConfigError::new(
                "revocation.max_entries",
                "must be greater than 0",
            ));
        }
        for (i, iss) in self.issuers.iter().enumerate() {
            if iss
                .backchannel_logout_audience
                .as_ref()
                .is_some_and(|a| a.is_empty())
            {
                return Err(ConfigError::new(
                    format!("issuers[{i}].backchannel_logout_audience"),
                    "must be the client id logout tokens name in `aud`",
                ));
            }
        }
        Ok(())
    }
}
