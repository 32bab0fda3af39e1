//! One-time WebSocket tickets (SPEC §3.5): 256 random bits, base64url, redeemed at most once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use moka::future::Cache;

use crate::config::TicketsConfig;
use crate::verified::{now_secs, Verified};

/// Length of an encoded ticket (32 bytes, base64url without padding).
const TICKET_LEN: usize = 43;

pub struct Tickets {
    /// Ticket -> (identity, deadline). moka's TTL only bounds memory: `remove` may still return
    /// an entry past its TTL, so the deadline is checked on redemption.
    cache: Cache<String, (Arc<Verified>, Instant)>,
    ttl: Duration,
    pub ttl_secs: u64,
}

impl Tickets {
    pub fn new(c: &TicketsConfig) -> Tickets {
        Tickets {
            cache: Cache::builder()
                .max_capacity(c.max_outstanding)
                .time_to_live(c.ttl.0)
                .build(),
            ttl: c.ttl.0,
            ttl_secs: c.ttl.0.as_secs(),
        }
    }

    /// A new ticket carrying `identity`.
    pub async fn issue(&self, identity: Arc<Verified>) -> String {
        let bytes: [u8; 32] = rand::random();
        let ticket = URL_SAFE_NO_PAD.encode(bytes);
        self.cache
            .insert(ticket.clone(), (identity, Instant::now() + self.ttl))
            .await;
        ticket
    }

    /// Redeems a ticket: removal is atomic, so of two concurrent redemptions one wins.
    pub async fn redeem(&self, ticket: &str) -> Option<Arc<Verified>> {
        self.redeem_at(ticket, Instant::now()).await
    }

    async fn redeem_at(&self, ticket: &str, now: Instant) -> Option<Arc<Verified>> {
        if ticket.len() != TICKET_LEN {
            return None;
        }
        let (v, deadline) = self.cache.remove(ticket).await?;
        (now < deadline && v.exp > now_secs()).then_some(v)
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

    #[tokio::test]
    async fn expired_ticket_is_refused() {
        let t = Tickets::new(&TicketsConfig::default());
        let v = Arc::new(Verified::new(
            Identity {
                id: "u".into(),
                ..Default::default()
            },
            now_secs() + 600,
        ));
        let ticket = t.issue(v.clone()).await;
        let later = Instant::now() + Duration::from_secs(31);
        assert!(t.redeem_at(&ticket, later).await.is_none());
        // A ticket bought with a token that has since expired is refused too.
        let stale = Arc::new(Verified::new(
            Identity {
                id: "u".into(),
                ..Default::default()
            },
            now_secs() - 1,
        ));
        let ticket = t.issue(stale).await;
        assert!(t.redeem(&ticket).await.is_none());
        let ticket = t.issue(v).await;
        assert!(t.redeem(&ticket).await.is_some());
    }
}
