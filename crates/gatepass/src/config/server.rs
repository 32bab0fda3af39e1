//! What serving needs: `[tls]`, `[assertion]` (the identity assertion) and `[tickets]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Dur};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    pub key_file: PathBuf,
    #[serde(default = "default_assertion_ttl")]
    pub ttl: Dur,
}

fn default_assertion_ttl() -> Dur {
    Dur::secs(60)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsConfig {
    pub ttl: Dur,
    pub max_outstanding: u64,
}

impl Default for TicketsConfig {
    fn default() -> Self {
        TicketsConfig {
            ttl: Dur::secs(30),
            max_outstanding: 100_000,
        }
    }
}

impl Config {
    pub(super) fn validate_assertion_and_tickets(&self) -> Result<(), ConfigError> {
        if let Some(a) = &self.assertion {
            if a.ttl.0 < Duration::from_secs(1) {
                return Err(ConfigError::new("assertion.ttl", "must be at least 1s"));
            }
        }
        if self.tickets.ttl.0 < Duration::from_secs(1) {
            return Err(ConfigError::new("tickets.ttl", "must be at least 1s"));
        }
        if self.tickets.max_outstanding == 0 {
            return Err(ConfigError::new(
                "tickets.max_outstanding",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
