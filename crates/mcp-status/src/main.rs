use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gatepass_service::{runtime, shutdown_signal};
use mcp_status::config::{Config, Dur};

#[derive(Parser)]
#[command(
    name = "mcp-status",
    version,
    about = "Live MCP server status over WebSocket, behind gatepass"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the dashboard, the WebSocket, the API, /healthz and /metrics.
    Serve {
        #[arg(long, env = "MCP_STATUS_CONFIG")]
        config: PathBuf,
        #[arg(long, env = "MCP_STATUS_LISTEN")]
        listen: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        log_format: Format,
    },
    /// Validate the config and its key file; print the effective config (secrets redacted).
    CheckConfig {
        #[arg(long, env = "MCP_STATUS_CONFIG")]
        config: PathBuf,
    },
    /// A demo MCP health endpoint (GET /health; POST /up, /down, /toggle).
    DemoMcp {
        #[arg(long)]
        listen: String,
        /// Toggle health by itself at this interval (e.g. 20s).
        #[arg(long, value_parser = Dur::parse)]
        flap: Option<Dur>,
        /// Start unhealthy.
        #[arg(long)]
        down: bool,
    },
}

fn main() -> ExitCode {
    gatepass_service::exit_code("mcp-status", real_main())
}

fn real_main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve {
            config,
            listen,
            log_format,
        } => {
            let mut config = Config::load(&config)?;
            config.listen = listen.unwrap_or(config.listen);
            mcp_status::init_tracing(matches!(log_format, Format::Json));
            let addr = config.listen.clone();
            gatepass_service::serve_blocking(&addr, |listener| {
                mcp_status::run(listener, config, shutdown_signal())
            })
        }
        Cmd::CheckConfig { config } => {
            let config = Config::load(&config)?;
            print!("{}", mcp_status::check_config(&config)?);
            Ok(())
        }
        Cmd::DemoMcp { listen, flap, down } => runtime()?.block_on(async move {
            let listener = gatepass_service::bind(&listen).await?;
            eprintln!("demo MCP on http://{}/health", listener.local_addr()?);
            let serve = mcp_status::demo::serve(
                listener,
                mcp_status::demo::Switch::new(!down),
                flap.map(|d| d.0),
            );
            tokio::select! {
                _ = serve => {}
                _ = shutdown_signal() => {}
            }
            Ok(())
        }),
    }
}
