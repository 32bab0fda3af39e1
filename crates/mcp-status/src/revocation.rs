//! Following gatepass's revocation feed (SPEC §6): every revocation closes the sockets it
//! covers with `4001 Token revoked`. While the feed is down, sockets stay open, a warning is
//! logged (once per outage) and `mcp_status_revocation_feed_up` is 0.

use std::sync::Arc;

use gatepass_identity::{FeedStatus, RevocationFeed};

use crate::broadcast::Hub;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;

/// The feed client `[revocation]` describes (secret and CA read now); none without a
/// `feed_url`.
pub fn feed(config: &Config) -> Result<Option<RevocationFeed>, ConfigError> {
    let r = &config.revocation;
    let (Some(url), Some(secret_file)) = (&r.feed_url, &r.feed_secret_file) else {
        return Ok(None);
    };
    let path = config.path(secret_file);
    let secret = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::new(
            "revocation.feed_secret_file",
            format!("cannot read {}: {}", path.display(), e.kind()),
        )
    })?;
    let secret = secret.trim().to_owned();
    if secret.is_empty() {
        return Err(ConfigError::new("revocation.feed_secret_file", "is empty"));
    }
    // The secret goes to the configured URL only: no redirects.
    let mut client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10));
    if let Some(ca) = &r.ca_file {
        let path = config.path(ca);
        let pem = std::fs::read(&path).map_err(|e| {
            ConfigError::new(
                "revocation.ca_file",
                format!("cannot read {}: {}", path.display(), e.kind()),
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ConfigError::new("revocation.ca_file", "no PEM certificate in it"))?;
        for c in certs {
            client = client.add_root_certificate(c);
        }
    }
    let client = client
        .build()
        .map_err(|_| ConfigError::new("revocation.ca_file", "cannot build a TLS client"))?;
    let feed = RevocationFeed::new(url, secret)
        .map_err(|e| ConfigError::new("revocation.feed_url", e.to_string()))?;
    Ok(Some(feed.with_client(client)))
}

/// Follows `feed` until the task is dropped.
pub async fn follow(feed: RevocationFeed, hub: Arc<Hub>, metrics: Arc<Metrics>) {
    let mut up: Option<bool> = None;
    let status_metrics = metrics.clone();
    metrics.feed_up.set(0.0);
    feed.run(
        move |r| {
            metrics.revocations.increment(1);
            let closed = hub.revoke(&r);
            tracing::info!(kind = ?r.kind, sockets = closed, "revocation received");
        },
        move |status| {
            let now_up = match status {
                FeedStatus::Up => true,
                FeedStatus::Down(_) => false,
                FeedStatus::Skipped => {
                    tracing::warn!("unreadable event on the revocation feed; skipped");
                    return;
                }
            };
            if up != Some(now_up) {
                match status {
                    FeedStatus::Down(why) => tracing::warn!(
                        reason = %why,
                        "revocation feed unavailable; open sockets stay open, retrying"
                    ),
                    _ => tracing::info!("revocation feed connected"),
                }
                up = Some(now_up);
            }
            status_metrics.feed_up.set(if now_up { 1.0 } else { 0.0 });
        },
    )
    .await;
}
