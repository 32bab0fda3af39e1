//! One-time WebSocket tickets (SPEC §3.5): 256 random bits, base64url, redeemed at most once.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use moka::future::Cache;

use crate::config::TicketsConfig;
use crate::verify::{now_secs, Verified};

/// Length of an encoded ticket (32 bytes, base64url without padding).
const TICKET_LEN: usize = 43;

pub struct Tickets {
    cache: Cache<String, Arc<Verified>>,
    pub ttl_secs: u64,
}

impl Tickets {
    pub fn new(c: &TicketsConfig) -> Tickets {
        Tickets {
            cache: Cache::builder()
                .max_capacity(c.max_outstanding)
                .time_to_live(c.ttl.0)
                .build(),
            ttl_secs: c.ttl.0.as_secs(),
        }
    }

    /// A new ticket carrying `identity`.
    pub async fn issue(&self, identity: Arc<Verified>) -> String {
        let bytes: [u8; 32] = rand::random();
        let ticket = URL_SAFE_NO_PAD.encode(bytes);
        self.cache.insert(ticket.clone(), identity).await;
        ticket
    }

    /// Redeems a ticket: removal is atomic, so of two concurrent redemptions one wins.
    pub async fn redeem(&self, ticket: &str) -> Option<Arc<Verified>> {
        if ticket.len() != TICKET_LEN {
            return None;
        }
        self.cache
            .remove(ticket)
            .await
            .filter(|v| v.exp > now_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatepass_identity::Identity;

    #[tokio::test]
    async fn single_use_even_concurrently() {
        let t = Arc::new(Tickets::new(&TicketsConfig::default()));
        let v = Arc::new(Verified::new(
            Identity {
                id: "u".into(),
                ..Default::default()
            },
            now_secs() + 60,
        ));
        let ticket = t.issue(v).await;
        assert_eq!(ticket.len(), TICKET_LEN);
        let (a, b) = tokio::join!(t.redeem(&ticket), t.redeem(&ticket));
        assert_eq!(a.is_some() as u8 + b.is_some() as u8, 1);
        assert!(t.redeem(&ticket).await.is_none());
        assert!(t.redeem("short").await.is_none());
    }
}
