//! May they (SPEC §3.4 steps 5–7, §3.8): rules, paths and Origin, rate limits, and the denial
//! table.

pub mod deny;
pub mod ratelimit;
pub mod rules;
