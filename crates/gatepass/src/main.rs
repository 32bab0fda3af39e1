use std::process::ExitCode;

use clap::Subcommand;
use gatepass::cli::{self, KeygenArgs, MintArgs};
use gatepass::config::Config;
use gatepass_service::{runtime, Binary, ConfigArg, ServeArgs};

const GATEPASS: Binary = Binary::new("gatepass", "GATEPASS", env!("CARGO_PKG_DESCRIPTION"));

fn main() -> ExitCode {
    GATEPASS.main(|cmd| match cmd {
        Cmd::Serve(args) => args.serve(&GATEPASS, Config::load, gatepass::run),
        Cmd::CheckConfig(arg) => {
            let config = Config::load(&arg.config)?;
            let effective = runtime()?.block_on(async { cli::check_config(&config) })?;
            print!("{effective}");
            Ok(())
        }
        Cmd::Mint(args) => {
            println!(
                "{}",
                cli::mint(&Config::load(&args.config.config)?, &args.token)?
            );
            Ok(())
        }
        Cmd::Keygen(args) => Ok(cli::keygen(&args.out)?),
    })
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve /validate, /tickets, /healthz, /readyz, /metrics.
    Serve(ServeArgs),
    /// Validate the config and its key files; print the effective config.
    CheckConfig(ConfigArg),
    /// Mint a development token for an issuer with a signing key.
    Mint(MintArgs),
    /// Write a new Ed25519 key for identity assertions.
    Keygen(KeygenArgs),
}
