//! Revocations (SPEC §6): the list every decision reads, and back-channel logout.

pub mod list;
pub mod logout;
