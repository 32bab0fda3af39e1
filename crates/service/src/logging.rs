//! Tracing setup shared by both services.

/// Tracing to stderr, filtered by the environment variable `env_var` (default `info`); JSON
/// lines when `json`, plain text otherwise. Colour codes only when stderr is a terminal, so
/// log files (`make run`'s run/logs/) stay plain text.
pub fn init_tracing(env_var: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env_var)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
