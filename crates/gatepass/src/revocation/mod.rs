//! Revocations (SPEC §6, §3.9): the per-issuer list every decision reads, shared through
//! Redis and fed to downstreams (`list`), and OpenID Connect back-channel logout tokens
//! (`logout`). The HTTP endpoints over them are in `server::revocations`.
//!
//! Imports: `config`, `metrics`, `policy` (the denial table), `verify` (what a verified token
//! is, and the verifier's keys for logout tokens).

pub mod list;
pub mod logout;
