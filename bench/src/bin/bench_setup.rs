//! Writes everything the benchmark run needs into DIR: keys, one gatepass config per algorithm
//! (cached and cache-disabled), a TLS config, rotating token files, and a 100k-token file.
//!   bench_setup DIR
//! Writes N DPoP requests (token and a fresh proof, tab-separated, one a line) for 100 client
//! keys whose ES256 tokens (signed with DIR's ES256 key) are bound to them, each proof for
//! `GET http://app.test/api/v1/mcps` (what rotate.lua's MODE=dpop sends):
//!   bench_setup dpop DIR N OUT
//! Signs N browsers in at a running gatepass with `[signin]` (the real OpenID Provider of
//! tests/oidc behind it, user alice) and writes their session cookies, one a line:
//!   bench_setup sessions GATEPASS_URL APP_HOST OP_ISSUER N OUT

use std::fmt::Write as _;
use std::path::Path;

use gatepass_bench::{Key, ALGS, ISS, SECRET};

fn gatepass_config(dir: &str, key: &Key, cache: &str, tls: bool) -> String {
    let mut c = String::new();
    if tls {
        let _ = writeln!(
            c,
            "[tls]\ncert = \"{dir}/gatepass.pem\"\nkey = \"{dir}/gatepass-key.pem\"\n"
        );
    }
    let _ = writeln!(
        c,
        "[[issuers]]\nname = \"bench\"\nissuer = \"{ISS}\"\nalgorithms = [\"{:?}\"]\n{}\n\n{cache}",
        key.alg,
        key.source(dir)
    );
    c
}

/// `sessions GATEPASS_URL APP_HOST OP_ISSUER N OUT`: N sign-ins, as a browser makes them.
fn sessions(args: &[String]) {
    let [gatepass, host, issuer, n, out] = args else {
        panic!("usage: bench_setup sessions GATEPASS_URL APP_HOST OP_ISSUER N OUT");
    };
    let n: usize = n.parse().expect("N");
    let op = gatepass_testkit::oidc::OidcProvider::attach(issuer);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids = rt.block_on(async {
        let b = gatepass_testkit::browser::Browser::new();
        let forwarded = [
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", host.as_str()),
            ("x-forwarded-uri", "/"),
            ("x-forwarded-for", "10.0.0.1"),
        ];
        let mut nav = forwarded.to_vec();
        nav.extend(gatepass_testkit::browser::NAVIGATION);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let start = b
                .request(
                    http::Method::GET,
                    &format!("{gatepass}/validate"),
                    &nav,
                    None,
                )
                .await;
            assert_eq!(start.status, 302, "{}", start.body);
            let callback = op
                .authorize(&b, start, "alice", &format!("http://{host}/"))
                .await;
            let path = &callback[format!("http://{host}").len()..];
            let mut h = forwarded.to_vec();
            h.extend(gatepass_testkit::browser::NAVIGATION);
            let done = b
                .request(http::Method::GET, &format!("{gatepass}{path}"), &h, None)
                .await;
            assert_eq!(done.status, 303, "{}", done.body);
            ids.push(b.cookie("gatepass_session").expect("a session cookie"));
            b.forget("gatepass_session");
        }
        ids
    });
    std::fs::write(out, ids.join("\n") + "\n").unwrap();
    eprintln!("{n} sessions written to {out}");
}

/// `dpop DIR N OUT`: N (token, proof) lines, 100 keys round robin.
fn dpop(args: &[String]) {
    let [dir, n, out] = args else {
        panic!("usage: bench_setup dpop DIR N OUT");
    };
    let n: usize = n.parse().expect("N");
    let issuer = Key {
        alg: jsonwebtoken::Algorithm::ES256,
        private_pem: std::fs::read_to_string(Path::new(dir).join("ES256.pem")).expect("ES256.pem"),
        public_pem: String::new(),
    };
    let clients: Vec<(gatepass_testkit::dpop::DpopKey, String)> = (0..100)
        .map(|i| {
            let key = gatepass_testkit::dpop::DpopKey::es256();
            let cnf = serde_json::json!({"cnf": {"jkt": key.thumbprint()}});
            let token = issuer.mint_with(&format!("dpop-{i}"), cnf);
            (key, token)
        })
        .collect();
    let mut text = String::with_capacity(n * 800);
    for i in 0..n {
        let (key, token) = &clients[i % clients.len()];
        let proof = key.proof("GET", "http://app.test/api/v1/mcps", Some(token));
        let _ = writeln!(text, "{token}\t{proof}");
    }
    std::fs::write(out, text).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("sessions") => return sessions(&args[1..]),
        Some("dpop") => return dpop(&args[1..]),
        _ => {}
    }
    let dir = std::env::args().nth(1).expect("usage: bench_setup DIR");
    let d = Path::new(&dir);
    std::fs::create_dir_all(d).unwrap();
    std::fs::write(d.join("hs256.key"), SECRET).unwrap();
    // TLS for the h2 row: a CA and a certificate for 127.0.0.1.
    gatepass_testkit::DevCa::new("gatepass bench CA").write(
        d,
        "ca.pem",
        "gatepass.pem",
        "gatepass-key.pem",
    );

    for alg in ALGS {
        let key = Key::generate(alg);
        if !key.public_pem.is_empty() {
            std::fs::write(d.join(format!("{alg:?}.pub.pem")), &key.public_pem).unwrap();
            std::fs::write(d.join(format!("{alg:?}.pem")), &key.private_pem).unwrap();
        }
        let name = format!("{alg:?}").to_lowercase();
        std::fs::write(
            d.join(format!("gp-{name}.toml")),
            gatepass_config(&dir, &key, "", false),
        )
        .unwrap();
        // Cache entries expire at once: every request takes the signature path.
        std::fs::write(
            d.join(format!("gp-{name}-nocache.toml")),
            gatepass_config(&dir, &key, "[cache]\nttl = \"0ms\"\n", false),
        )
        .unwrap();
        let tokens: Vec<String> = (0..1000).map(|i| key.mint(&format!("user-{i}"))).collect();
        std::fs::write(
            d.join(format!("tokens-{name}.txt")),
            tokens.join("\n") + "\n",
        )
        .unwrap();
        if alg == jsonwebtoken::Algorithm::HS256 {
            std::fs::write(d.join("gp-tls.toml"), gatepass_config(&dir, &key, "", true)).unwrap();
            let many: Vec<String> = (0..100_000)
                .map(|i| key.mint(&format!("many-{i}")))
                .collect();
            std::fs::write(d.join("tokens-100k.txt"), many.join("\n") + "\n").unwrap();
        }
    }
    eprintln!("bench setup written to {dir}");
}
