//! What gatepass and mcp-status share as services, so each binary keeps only its own logic:
//! config file loading and its one-line errors ([`config`]), tracing setup
//! ([`init_tracing`]), the runtime and shutdown signal ([`runtime`], [`shutdown_signal`]),
//! background tasks aborted with their owner ([`Tasks`]), and the HTTP accept loop with a
//! bounded graceful drain ([`server::Server`]), the `[state]` table with its Redis client
//! ([`state`]), tables every replica keeps a copy of ([`table`]), and the `[telemetry]` table
//! with OpenTelemetry traces over OTLP ([`telemetry`]), and the digest secrets are known by
//! ([`digest`]).

pub mod config;
pub mod digest;
mod logging;
mod runtime;
pub mod server;
pub mod state;
pub mod table;
mod tasks;
pub mod telemetry;

pub use config::{ConfigError, Dur};
pub use logging::{init_tracing, init_tracing_with, subscriber as logging_subscriber};
pub use runtime::{
    bind, exit_code, runtime, serve_blocking, shutdown_signal, Binary, Cli, ConfigArg, Listen,
    LogFormat, ServeArgs, ShutdownSignal,
};
pub use server::{Draining, Server, Transport};
pub use tasks::Tasks;
