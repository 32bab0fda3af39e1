//! Everything a decision needs, built once from a config (keys, rules, token sources,
//! limits, tickets, assertion signer, TLS): after parsing, the only place config errors arise.
//! Rebuilt as a whole on reload.

use std::sync::Arc;

use gatepass_identity::AssertionSigner;
use gatepass_service::state::{OnUnavailable, RedisState};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::policy::ratelimit::Limits;
use crate::policy::rules::Rules;
use crate::revocation::list::Revocations;
use crate::session::Sessions;
use crate::tickets::Tickets;
use crate::verify::replay::Replays;
use crate::verify::token::{self, TokenSource};
use crate::verify::Verifier;

/// Everything a decision needs; rebuilt as a whole on reload.
pub struct State {
    pub config: Config,
    pub verifier: Arc<Verifier>,
    pub rules: Rules,
    pub sources: Vec<TokenSource>,
    pub limits: Limits,
    pub tickets: Tickets,
    pub assertion: Option<(AssertionSigner, std::time::Duration)>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The Redis client when `[state] backend = "redis"`: one per process, kept across
    /// reloads that leave `[state]` unchanged.
    pub shared: Option<Arc<RedisState>>,
    /// The revocation list; kept across reloads that leave `[state]` unchanged.
    pub revocations: Arc<Revocations>,
    /// SHA-256 of the feed secret (`[revocation] feed_secret_file`); none: no feed.
    pub feed_secret: Option<[u8; 32]>,
    /// Logout token `jti`s already used.
    pub logout_replays: Arc<Replays>,
    /// Browser sign-in and its sessions (`[signin]`).
    pub sessions: Option<Arc<Sessions>>,
    /// DPoP proof checking, when any issuer accepts DPoP-bound tokens (SPEC §10).
    pub dpop: Option<crate::verify::dpop::Dpop>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for State {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

impl State {
    /// Loads every key and certificate the config names. Must run inside a Tokio runtime.
    pub fn build(config: Config, metrics: &Metrics) -> Result<State, ConfigError> {
        State::build_after(config, metrics, None)
    }

    /// [`State::build`] for a reload: keeps `previous`'s Redis client when `[state]` is the
    /// same, so a process never holds two connections for one server.
    pub fn build_after(
        config: Config,
        metrics: &Metrics,
        previous: Option<&State>,
    ) -> Result<State, ConfigError> {
        // Rules and token sources first: they need no files, so their errors come first.
        let rules = Rules::compile(&config.rules, config.default_rule.policy, &config.paths)?
            .with_resources(&config.resources, |servers| {
                use crate::config::Binding;
                use crate::verify::dpop::{AlgSet, BindingPolicy};
                let named: Vec<BindingPolicy> = config
                    .issuers
                    .iter()
                    .filter(|i| servers.contains(&i.issuer))
                    .map(BindingPolicy::of)
                    .collect();
                if named.iter().all(|b| b.dpop == Binding::Off) {
                    return None;
                }
                let algs = named
                    .iter()
                    .fold(AlgSet::default(), |a, b| a.union(b.dpop_algs));
                Some(crate::policy::rules::DpopMetadata {
                    algorithms: algs.names().split(' ').map(str::to_owned).collect(),
                    required: named.iter().all(|b| b.dpop == Binding::Required),
                })
            });
        let session_cookie = config.signin.as_ref().map(|s| s.cookie_name.as_str());
        let sources = token::parse_sources(&config.tokens.sources, session_cookie)
            .map_err(|m| ConfigError::new("tokens.sources", m))?;
        let verifier = Arc::new(Verifier::new(&config, metrics)?);
        let assertion = match &config.assertion {
            Some(a) => {
                let path = config.path(&a.key_file);
                let pem = std::fs::read(&path).map_err(|e| {
                    ConfigError::new(
                        "assertion.key_file",
                        format!("cannot read {}: {}", path.display(), e.kind()),
                    )
                })?;
                let signer = AssertionSigner::from_pkcs8_pem(&pem)
                    .map_err(|e| ConfigError::new("assertion.key_file", e.to_string()))?;
                Some((signer, a.ttl.0))
            }
            None => None,
        };
        let tls = match &config.tls {
            Some(t) => Some(crate::tls::acceptor(
                &config.path(&t.cert),
                &config.path(&t.key),
            )?),
            None => None,
        };
        let feed_secret = match &config.revocation.feed_secret_file {
            Some(file) => Some(crate::revocation::list::secret_digest(
                &config.read_secret("revocation.feed_secret_file", file, 16)?,
            )),
            None => None,
        };
        let same_state = previous.filter(|p| p.config.state == config.state);
        let shared = match previous {
            Some(p) if p.config.state == config.state => p.shared.clone(),
            _ if config.state.is_redis() => Some(RedisState::start(
                &config.state,
                &config.base_dir,
                metrics.state.clone(),
            )?),
            _ => None,
        };
        let (limits, tickets) = match &shared {
            Some(r) => (
                Limits::redis(
                    &config.rate_limit,
                    r.clone(),
                    metrics.state_fallbacks.clone(),
                ),
                Tickets::redis(&config.tickets, r.clone()),
            ),
            None => {
                // In process: always available.
                gatepass_service::state::StateObserver::up(&*metrics.state, true);
                (
                    Limits::new(&config.rate_limit),
                    Tickets::new(&config.tickets),
                )
            }
        };
        let revocations = match same_state {
            Some(p) => p.revocations.clone(),
            None => Revocations::new(metrics, shared.clone()),
        };
        // Sessions outlive a reload that keeps `[state]` (the store is kept).
        let kept_store = same_state
            .and_then(|p| p.sessions.as_ref())
            .map(|s| s.store());
        let sessions = Sessions::new(
            &config,
            verifier.clone(),
            revocations.clone(),
            kept_store,
            shared.clone(),
            metrics,
        )?;
        // Used values are kept across a reload that keeps `[state]`: a proof or logout token
        // used just before it must stay used.
        let logout_replays = match same_state {
            Some(p) => p.logout_replays.clone(),
            // A logout token's jti is remembered for 2 x its issuer's leeway + 1 s.
            None => {
                let leeway = config
                    .issuers
                    .iter()
                    .map(|i| i.leeway.0)
                    .max()
                    .unwrap_or_default();
                let remember = 2 * leeway + std::time::Duration::from_secs(1);
                Arc::new(Replays::new(
                    shared.clone(),
                    "logout-jti",
                    "logout_jti",
                    remember,
                    100_000,
                ))
            }
        };
        let dpop_replays = same_state
            .and_then(|p| p.dpop.as_ref())
            .map(|d| d.replays());
        let dpop = crate::verify::dpop::Dpop::new(&config, shared.clone(), dpop_replays)?;
        Ok(State {
            sessions,
            revocations,
            feed_secret,
            logout_replays,
            dpop,
            rules,
            limits,
            tickets,
            shared,
            sources,
            verifier,
            assertion,
            tls,
            tasks: Default::default(),
            config,
        })
    }

    /// Starts key refreshers and limiter upkeep; they stop when the state is dropped.
    pub fn start(&self, this: std::sync::Weak<arc_swap::ArcSwap<State>>) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        for issuer in &self.verifier.issuers {
            if let Some(t) = issuer.keys.spawn_upkeep() {
                tasks.push(t);
            }
        }
        tasks.extend(self.revocations.spawn());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tick.tick().await;
                let Some(app) = this.upgrade() else { return };
                let state = app.load();
                state.limits.upkeep();
                if let Some(s) = &state.sessions {
                    s.upkeep();
                }
            }
        }));
    }

    /// `"ok"`, or `"unavailable"` while Redis does not answer.
    pub fn state_status(&self) -> &'static str {
        match &self.shared {
            Some(r) if !r.is_up() => "unavailable",
            _ => "ok",
        }
    }

    /// Under Sentinel, the master in use (`host:port`, never credentials).
    pub fn state_master(&self) -> Option<String> {
        self.shared.as_ref()?.master()
    }

    /// Does the state make `/readyz` fail? Only when limits refuse without Redis.
    pub fn state_blocks_readiness(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|r| !r.is_up() && r.on_unavailable() == OnUnavailable::Deny)
    }

    /// Issuers whose keys came from `[state] dir` (their IdP unreachable since start).
    pub fn saved_state_issuers(&self) -> Vec<&str> {
        self.verifier
            .issuers
            .iter()
            .filter(|i| i.keys.from_saved_state())
            .map(|i| i.name.as_str())
            .collect()
    }

    /// Issuers without usable keys.
    pub fn unready_issuers(&self) -> Vec<&str> {
        self.verifier
            .issuers
            .iter()
            .filter(|i| !matches!(i.keys, crate::verify::jwks::KeySource::None))
            .filter(|i| i.keys.current().is_none_or(|k| k.keys.is_empty()))
            .map(|i| i.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_err(extra: &str) -> String {
        let text = format!(
            "[[issuers]]\nname = \"local\"\nissuer = \"https://auth.example.test\"\nalgorithms = [\"HS256\"]\nsecret_env = \"GATEPASS_STATE_TEST_UNSET\"\n{extra}"
        );
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        match State::build(config, &Metrics::new()) {
            Ok(_) => panic!("built"),
            Err(e) => e.to_string(),
        }
    }

    /// `[signin]`'s files are read here: the session key file and the client secret.
    #[tokio::test]
    async fn signin_key_file_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("hs.key"), "hs-secret-0123456789abcdef0123456789").unwrap();
        let build = |keys: Option<&str>, secret: bool| {
            let _ = std::fs::remove_file(d.join("session.keys"));
            if let Some(k) = keys {
                std::fs::write(d.join("session.keys"), k).unwrap();
            }
            let secret_line = if secret {
                "client_secret_file = \"missing.key\"\n"
            } else {
                ""
            };
            let text = format!(
                "[[issuers]]\nname = \"local\"\nissuer = \"https://a.test\"\nalgorithms = [\"HS256\"]\nsecret_file = \"{hs}\"\n[[issuers]]\nname = \"corp\"\nissuer = \"https://idp.test\"\ndiscovery = true\nalgorithms = [\"RS256\"]\n[tokens]\nsources = [\"session\", \"bearer\"]\n[signin]\nissuer = \"corp\"\nclient_id = \"gp\"\nhosts = [\"app.test\"]\nkey_file = \"{keys}\"\n{secret_line}",
                hs = d.join("hs.key").display(),
                keys = d.join("session.keys").display(),
            );
            let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
            match State::build(config, &Metrics::new()) {
                Ok(_) => String::new(),
                Err(e) => e.to_string(),
            }
        };
        let good = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";
        assert_eq!(build(Some(good), false), "");
        let missing = build(None, false);
        assert!(
            missing.starts_with("config error: signin.key_file: cannot read "),
            "{missing}"
        );
        assert_eq!(
            build(Some("not-a-key\n"), false),
            "config error: signin.key_file: line 1 is not one base64 32-byte key"
        );
        assert_eq!(
            build(Some("\n# nothing\n"), false),
            "config error: signin.key_file: holds no key (one base64 32-byte key a line; `openssl rand -base64 32` makes one)"
        );
        let secret = build(Some(good), true);
        assert!(
            secret.starts_with("config error: signin.client_secret_file: cannot read "),
            "{secret}"
        );
        assert!(!secret.contains('\n'));
    }

    /// Rules and token sources compile here, once; their errors name the key.
    #[tokio::test]
    async fn rule_and_source_errors_name_the_key() {
        assert_eq!(
            build_err("[[rules]]\npath = \"api\"\n"),
            "config error: rules[0].path: must start with `/`"
        );
        assert_eq!(
            build_err("[tokens]\nsources = [\"header:x\"]\n"),
            "config error: tokens.sources: unknown token source `header:x` (bearer, websocket_protocol, cookie:NAME, query:NAME, ticket, session)"
        );
        assert_eq!(
            build_err(""),
            "config error: issuers[0].secret_env: environment variable GATEPASS_STATE_TEST_UNSET is not set or empty"
        );
    }
}
