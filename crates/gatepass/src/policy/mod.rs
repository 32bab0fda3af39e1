//! May they (SPEC §3.4 steps 2 and 5–7, §3.8): rules on host, path and method, paths a
//! backend may read differently, Origin allow-lists (`rules`), rate limits and the per-IP
//! failure budget (`ratelimit`), and the denial table every refusal is answered from (`deny`).
//!
//! Imports: `config` only. It knows users only as a limiter key (`ratelimit::LimitedUser`), so
//! `verify` can name its refusals with this folder's `DenyReason` without a cycle.

pub mod deny;
pub mod ratelimit;
pub mod rules;
