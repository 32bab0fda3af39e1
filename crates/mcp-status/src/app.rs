//! The running service: config, hub, health registry, auth and metrics, and the background
//! tasks that feed them. Transport and routes live in `server`, one socket in `ws`.

use std::sync::Arc;

use gatepass_service::state::RedisState;
use gatepass_service::Tasks;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::broadcast::Hub;
use crate::config::{Config, ConfigError};
use crate::health::Registry;
use crate::metrics::Metrics;

pub struct App {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub registry: Arc<Registry>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    /// The Redis client when `[state] backend = "redis"` (per-user connection leases, MCP
    /// state).
    pub shared: Option<Arc<RedisState>>,
    /// Each WebSocket task holds a receiver; shutdown waits until all are dropped
    /// (`closed()`). The app itself holds none, so with no socket the wait ends at once.
    pub(crate) ws_tasks: watch::Sender<()>,
    /// The pollers, the JWKS refresh and the metrics tick; aborted when the app is dropped.
    tasks: Tasks,
}

impl App {
    /// Builds the app and starts the health pollers (inside a Tokio runtime).
    pub fn new(config: Config) -> Result<Arc<App>, ConfigError> {
        let metrics = Arc::new(Metrics::new());
        let l = &config.limits;
        let hub = Arc::new(Hub::new(
            l.max_connections,
            l.max_connections_per_user,
            l.send_queue,
            metrics.clone(),
        ));
        let auth = Arc::new(Auth::new(&config)?);
        let shared = if config.state.is_redis() {
            Some(RedisState::start(
                &config.state,
                &config.base_dir,
                metrics.state.clone(),
            )?)
        } else {
            // In process: always available.
            gatepass_service::state::StateObserver::up(&*metrics.state, true);
            None
        };
        let registry = Arc::new(Registry::new(
            &config.mcps,
            hub.clone(),
            metrics.clone(),
            shared.clone(),
        ));
        let (ws_tasks, _) = watch::channel(());
        let app = Arc::new(App {
            hub,
            registry,
            auth,
            metrics,
            shared,
            ws_tasks,
            tasks: Tasks::new(),
            config,
        });
        app.registry.start(&app.tasks);
        app.tasks.spawn(app.auth.clone().refresh_jwks());
        if let Some(feed) = crate::revocation::feed(&app.config)? {
            app.tasks.spawn(crate::revocation::follow(
                feed,
                app.hub.clone(),
                app.metrics.clone(),
            ));
        }
        let (registry, hub, every) = (
            app.registry.clone(),
            app.hub.clone(),
            app.config.limits.metrics_interval.0,
        );
        app.tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                hub.publish(&registry.system_metrics());
            }
        });
        Ok(app)
    }
}
