//! gatepass: a Traefik ForwardAuth companion. `run` is the entry point shared by the binary and
//! the tests.
//!
//! Concepts live in folders, each importing only what is below it (`python3
//! scripts/check_layers.py` checks it): `config` at the bottom; `policy` (may they: rules,
//! limits, the denial table); `verify` (who is this); `revocation` (the list, logout tokens);
//! then the files that wire them together: `metrics`, `tickets`, `tls`, `state` (everything
//! built from a config), `decision` (one `/validate` answer), `cli`, and `server` at the top.

pub mod cli;
pub mod config;
pub mod decision;
pub mod metrics;
pub mod policy;
pub mod revocation;
pub mod server;
pub mod session;
pub mod state;
pub mod tickets;
pub mod tls;
pub mod verify;

pub use config::{Config, ConfigError};
pub use server::{run, serve, App};
