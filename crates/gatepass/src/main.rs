use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use gatepass::cli::{self, LogFormat, MintRequest};
use gatepass::config::{Config, Dur};

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
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatepass: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
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
            cli::init_tracing(match log_format {
                Format::Text => LogFormat::Text,
                Format::Json => LogFormat::Json,
            });
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&config.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.listen))?;
                gatepass::run(listener, config, shutdown_signal()).await?;
                Ok(())
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the runtime")
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
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
