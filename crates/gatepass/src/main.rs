use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gatepass::cli::{self, LogFormat, MintRequest};
use gatepass::config::{Config, Dur};
use gatepass_service::runtime;

#[derive(Parser)]
#[command(
    name = "gatepass",
    version,
    about = "Traefik ForwardAuth companion: verifies JWTs, sets identity headers"
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
    /// Serve /validate, /tickets, /healthz, /readyz, /metrics.
    Serve {
        #[arg(long, env = "GATEPASS_CONFIG")]
        config: PathBuf,
        #[arg(long, env = "GATEPASS_LISTEN")]
        listen: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        log_format: Format,
    },
    /// Validate the config and its key files; print the effective config.
    CheckConfig {
        #[arg(long, env = "GATEPASS_CONFIG")]
        config: PathBuf,
    },
    /// Mint a development token for an issuer with a signing key.
    Mint {
        #[arg(long, env = "GATEPASS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        sub: String,
        #[arg(long)]
        username: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        #[arg(long, value_parser = Dur::parse)]
        ttl: Option<Dur>,
        #[arg(long)]
        aud: Option<String>,
    },
    /// Write a new Ed25519 key for identity assertions.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    gatepass_service::exit_code("gatepass", real_main())
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
            cli::init_tracing(match log_format {
                Format::Text => LogFormat::Text,
                Format::Json => LogFormat::Json,
            });
            let addr = config.listen.clone();
            gatepass_service::serve_blocking(&addr, |listener| {
                gatepass::run(listener, config, shutdown_signal())
            })
        }
        Cmd::CheckConfig { config } => {
            let config = Config::load(&config)?;
            let effective = runtime()?.block_on(async { cli::check_config(&config) })?;
            print!("{effective}");
            Ok(())
        }
        Cmd::Mint {
            config,
            issuer,
            sub,
            username,
            role,
            permissions,
            ttl,
            aud,
        } => {
            let config = Config::load(&config)?;
            let req = MintRequest {
                issuer,
                sub,
                username,
                role,
                permissions,
                ttl,
                aud,
            };
            println!("{}", cli::mint(&config, &req)?);
            Ok(())
        }
        Cmd::Keygen { out } => Ok(cli::keygen(&out)?),
    }
}

/// The shared shutdown signal, logging when it arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let signal = gatepass_service::shutdown_signal();
    async move {
        signal.await;
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
