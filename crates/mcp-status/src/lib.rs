//! mcp-status: the WebSocket service behind gatepass. It trusts only gatepass's identity
//! headers (checked against the assertion when configured) and broadcasts MCP health.

pub mod auth;
pub mod broadcast;
pub mod config;
pub mod demo;
pub mod health;
pub mod metrics;
pub mod server;
pub mod ws;

pub use config::Config;
pub use server::{run, serve, App};

/// Tracing to stderr, filtered by `MCP_STATUS_LOG` (default `info`).
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_STATUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}
