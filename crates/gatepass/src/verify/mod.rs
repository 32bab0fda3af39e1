//! Who is this (SPEC §3.4 steps 3–4, §7): finding the credential, keys and JWKS, introspection,
//! claims, the verifier and its cache, and the verified identity.

pub mod claims;
pub mod introspect;
pub mod json;
pub mod jwks;
pub mod keys;
pub mod token;
pub mod verified;
mod verifier;

pub use verifier::*;
