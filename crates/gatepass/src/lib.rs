//! gatepass: a Traefik ForwardAuth companion. `run` is the entry point shared by the binary and
//! the tests.

pub mod claims;
pub mod cli;
pub mod config;
pub mod decision;
pub mod introspect;
pub mod json;
pub mod jwks;
pub mod keys;
pub mod logout;
pub mod metrics;
pub mod outcome;
pub mod ratelimit;
pub mod revocation_api;
pub mod revocations;
pub mod rules;
pub mod server;
pub mod state;
pub mod tickets;
pub mod tls;
pub mod token;
pub mod verified;
pub mod verify;

pub use config::{Config, ConfigError};
pub use server::{run, serve, App};
