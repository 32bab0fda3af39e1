//! Process plumbing both binaries repeat: the Tokio runtime and the shutdown signal.

use std::future::Future;

use anyhow::Context;

/// A multi-threaded Tokio runtime, or an error saying it could not start.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the runtime")
}

/// SIGTERM or Ctrl-C, both registered at once (a signal right after "listening" counts);
/// Ctrl-C alone if SIGTERM cannot be registered. Call it inside the runtime: the signals are
/// registered by the call, not when the future is first polled.
pub fn shutdown_signal() -> impl Future<Output = ()> {
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

/// `main`'s exit status: success, or `name: error` on stderr and failure.
pub fn exit_code(name: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Binds a TCP listener on `addr`; the error names the address.
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// On a new runtime: binds `addr`, then runs `serve` with the listener until it returns.
pub fn serve_blocking<F, E>(
    addr: &str,
    serve: impl FnOnce(tokio::net::TcpListener) -> F,
) -> anyhow::Result<()>
where
    F: Future<Output = Result<(), E>>,
    anyhow::Error: From<E>,
{
    runtime()?.block_on(async move {
        let listener = bind(addr).await?;
        serve(listener).await?;
        Ok(())
    })
}

/// `--log-format` of both binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A config `serve` can run: it names the address to listen on.
pub trait Listen {
    /// The listen address, which `--listen` replaces.
    fn listen(&mut self) -> &mut String;
    /// The `[telemetry]` table (traces exported when it names an endpoint); none: no traces.
    fn telemetry(&self) -> Option<&crate::telemetry::TelemetryConfig> {
        None
    }
}

/// `--config FILE`; [`Binary::main`] also reads it from `<PREFIX>_CONFIG`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The TOML config file.
    #[arg(long)]
    pub config: std::path::PathBuf,
}

/// The `serve` subcommand's flags, the same for both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Listen address, over the config's `listen`.
    #[arg(long)]
    pub listen: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// The `serve` subcommand of both binaries: loads the config with `load`, puts `--listen`
    /// over its address, starts tracing filtered by `<PREFIX>_LOG` (and the config's
    /// `[telemetry]` exporter, service name the binary's), then runs `run` with the bound
    /// listener on a new runtime until SIGTERM or Ctrl-C (logged); queued spans are exported
    /// before it returns.
    pub fn serve<C, F, E>(
        self,
        binary: &Binary,
        load: impl FnOnce(&std::path::Path) -> Result<C, E>,
        run: impl FnOnce(tokio::net::TcpListener, C, ShutdownSignal) -> F,
    ) -> anyhow::Result<()>
    where
        C: Listen,
        F: Future<Output = Result<(), E>>,
        anyhow::Error: From<E>,
    {
        let mut config = load(&self.config.config)?;
        if let Some(addr) = self.listen {
            *config.listen() = addr;
        }
        let log_env = format!("{}_LOG", binary.env_prefix);
        let json = self.log_format == LogFormat::Json;
        let telemetry = crate::init_tracing_with(&log_env, json, config.telemetry(), binary.name)?;
        let addr = config.listen().clone();
        let result = serve_blocking(&addr, |listener| {
            // Registered now, before "listening" is logged: a signal right after it counts.
            let signal = shutdown_signal();
            let shutdown = ShutdownSignal(Box::pin(async {
                signal.await;
                tracing::info!("shutting down: finishing in-flight requests");
            }));
            run(listener, config, shutdown)
        });
        // After the runtime is gone: the exporter's blocking client must not stop inside it.
        telemetry.shutdown();
        result
    }
}

/// The command line of a binary: its subcommands `C`; name, about and version come from the
/// [`Binary`].
#[derive(clap::Parser)]
pub struct Cli<C: clap::Subcommand> {
    #[command(subcommand)]
    pub cmd: C,
}

/// A binary: its name (also the prefix of its error line), its `--help` line, and the
/// prefix of its environment variables (`<PREFIX>_CONFIG`, `<PREFIX>_LISTEN`,
/// `<PREFIX>_LOG`).
pub struct Binary {
    name: &'static str,
    env_prefix: &'static str,
    about: &'static str,
}

impl Binary {
    /// `about` is the `--help` line (e.g. the crate's `CARGO_PKG_DESCRIPTION`); the version is
    /// the workspace's.
    pub const fn new(name: &'static str, env_prefix: &'static str, about: &'static str) -> Binary {
        Binary {
            name,
            env_prefix,
            about,
        }
    }

    /// `main` for this binary: parses the command line and runs `main` on the subcommand; an
    /// error is one line `name: error` on stderr and exit code 1.
    pub fn main<C: clap::Subcommand>(
        &self,
        main: impl FnOnce(C) -> anyhow::Result<()>,
    ) -> std::process::ExitCode {
        let cli: Cli<C> = self.parse();
        exit_code(self.name, main(cli.cmd))
    }

    /// Parses the command line; `--config` (every subcommand) and `serve --listen` also read
    /// `<PREFIX>_CONFIG` and `<PREFIX>_LISTEN`.
    fn parse<C: clap::Subcommand>(&self) -> Cli<C> {
        use clap::{CommandFactory, FromArgMatches};
        // Leaked once per process: clap's `env` wants `'static` names.
        let env = |name: &str| -> &'static str {
            Box::leak(format!("{}_{name}", self.env_prefix).into_boxed_str())
        };
        let (config_env, listen_env) = (env("CONFIG"), env("LISTEN"));
        let cmd = Cli::<C>::command()
            .name(self.name)
            .about(self.about)
            .version(env!("CARGO_PKG_VERSION"))
            .mut_subcommands(|sub| {
                let serve = sub.get_name() == "serve";
                sub.mut_args(|arg| match arg.get_id().as_str() {
                    "config" => arg.env(config_env),
                    "listen" if serve => arg.env(listen_env),
                    _ => arg,
                })
            });
        Cli::<C>::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit())
    }
}

/// The shutdown future `ServeArgs::serve` hands to `run`: SIGTERM or Ctrl-C.
pub struct ShutdownSignal(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for ShutdownSignal {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.0.as_mut().poll(cx)
    }
}
