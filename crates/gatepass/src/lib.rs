//! gatepass: a Traefik ForwardAuth companion. `run` is the entry point shared by the binary and
//! the tests.

pub mod cli;
pub mod config;
pub mod decision;
pub mod metrics;
pub mod policy;
pub mod revocation;
#[path = "server/revocations.rs"]
pub mod revocation_api;
pub mod server;
pub mod state;
pub mod tickets;
pub mod tls;
pub mod verify;

// The modules' paths before they moved into folders (the next commit updates the uses).
pub use policy::{deny as outcome, ratelimit, rules};
pub use revocation::{list as revocations, logout};
pub use verify::{claims, introspect, json, jwks, keys, token, verified};

pub use config::{Config, ConfigError};
pub use server::{run, serve, App};
