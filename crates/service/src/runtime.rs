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
