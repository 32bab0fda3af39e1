use std::process::ExitCode;

use clap::Subcommand;
use gatepass_service::{Binary, ConfigArg, ServeArgs};
use mcp_status::config::Config;

const MCP_STATUS: Binary = Binary::new("mcp-status", "MCP_STATUS", env!("CARGO_PKG_DESCRIPTION"));

fn main() -> ExitCode {
    MCP_STATUS.main(|cmd| match cmd {
        Cmd::Serve(args) => args.serve(&MCP_STATUS, Config::load, mcp_status::run),
        Cmd::CheckConfig(arg) => {
            print!("{}", mcp_status::check_config(&Config::load(&arg.config)?)?);
            Ok(())
        }
        Cmd::DemoMcp(args) => mcp_status::demo::run_command(args),
    })
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the dashboard, the WebSocket, the API, /healthz and /metrics.
    Serve(ServeArgs),
    /// Validate the config and its key file; print the effective config (secrets redacted).
    CheckConfig(ConfigArg),
    /// A demo MCP health endpoint (GET /health; POST /up, /down, /toggle).
    DemoMcp(mcp_status::demo::DemoArgs),
}
