//! Who is this (SPEC §3.4 steps 3–4, §7, §3.9): finding the credential in a request
//! (`token`), the strict JSON reader (`json`), keys and JWKS with discovery (`keys`, `jwks`),
//! opaque tokens (`introspect`), claims to an identity (`claims`), the verifier and its cache
//! (`verifier`, re-exported here), what a verified token is (`verified`), DPoP proofs and
//! certificate thumbprints (`dpop`), values accepted once (`replay`), and the JOSE `typ` (`typ`).
//!
//! Imports: `config`, `metrics`, `policy` (the denial table; `token` reads the query with
//! `policy::rules`). Never `revocation`, `state`, `decision` or `server`: they ask this folder.

pub mod claims;
pub mod dpop;
pub mod introspect;
pub mod json;
pub mod jwks;
pub mod keys;
pub mod replay;
pub mod token;
pub mod typ;
pub mod verified;
mod verifier;

pub use verifier::*;
