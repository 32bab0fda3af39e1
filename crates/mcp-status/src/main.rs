use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
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
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-status: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let rt = || tokio::runtime::Runtime::new().context("cannot start the runtime");
    match Cli::parse().cmd {
        Cmd::Serve {
            config,
            listen,
            log_format,
        } => {
            let mut config = Config::load(&config)?;
            if let Some(l) = listen {
                config.listen = l;
            }
            mcp_status::init_tracing(matches!(log_format, Format::Json));
            rt()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&config.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.listen))?;
                mcp_status::run(listener, config, shutdown_signal()).await?;
                Ok(())
            })
        }
        Cmd::CheckConfig { config } => {
            let config = Config::load(&config)?;
            print!("{}", mcp_status::check_config(&config)?);
            Ok(())
        }
        Cmd::DemoMcp { listen, flap, down } => rt()?.block_on(async move {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
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

/// SIGTERM or Ctrl-C, both registered at once (a signal right after "listening" counts);
/// Ctrl-C alone if SIGTERM cannot be registered.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let ctrl_c = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    if let Err(e) = &term {
        tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
    }
    async move {
        let ctrl_c = async {
            match ctrl_c {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        match term {
            Ok(mut term) => tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            },
            Err(_) => ctrl_c.await,
        }
    }
}
