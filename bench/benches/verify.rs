//! In-process verify cost per algorithm: gatepass's signature path (`verify_uncached`: issuer
//! selection, header checks, decode, claims → identity, header encoding) next to the raw
//! `jsonwebtoken::decode` of the same token, and gatepass's cache-hit path.

use std::str::FromStr;

use criterion::{criterion_group, criterion_main, Criterion};
use gatepass_bench::{Key, ALGS};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

fn decoding_key(key: &Key) -> DecodingKey {
    match key.alg {
        Algorithm::HS256 => DecodingKey::from_secret(gatepass_bench::SECRET.as_bytes()).unwrap(),
        Algorithm::RS256 => DecodingKey::from_rsa_pem(key.public_pem.as_bytes()).unwrap(),
        Algorithm::ES256 => DecodingKey::from_ec_pem(key.public_pem.as_bytes()).unwrap(),
        _ => DecodingKey::from_ed_pem(key.public_pem.as_bytes()).unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("gatepass-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hs256.key"), gatepass_bench::SECRET).unwrap();
    let d = dir.display().to_string();
    for alg in ALGS {
        let key = Key::generate(alg);
        if !key.public_pem.is_empty() {
            std::fs::write(dir.join(format!("{alg:?}.pub.pem")), &key.public_pem).unwrap();
        }
        let toml = format!(
            "[[issuers]]\nname = \"bench\"\nissuer = \"{}\"\nalgorithms = [\"{alg:?}\"]\n{}\n",
            gatepass_bench::ISS,
            key.source(&d)
        );
        let config = gatepass::Config::parse(&toml).unwrap();
        let metrics = gatepass::metrics::Metrics::new();
        let verifier = rt
            .block_on(async {
                gatepass::verify::Verifier::new(&config, &metrics).map_err(|e| e.to_string())
            })
            .unwrap();
        let token = key.mint("bench-user");
        let dk = decoding_key(&key);
        let mut v = Validation::new(Algorithm::from_str(&format!("{alg:?}")).unwrap());
        v.leeway = 30;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.set_issuer(&[gatepass_bench::ISS]);
        v.set_required_spec_claims(&["exp", "iss"]);
        let mut g = c.benchmark_group(format!("{alg:?}"));
        // Through the same async harness as gatepass's rows, so the harness cost cancels out.
        g.bench_function("jsonwebtoken::decode", |b| {
            b.to_async(&rt).iter(|| async {
                jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(&token, &dk, &v)
                    .unwrap()
            })
        });
        g.bench_function("gatepass verify (signature path)", |b| {
            b.to_async(&rt)
                .iter(|| async { verifier.verify_uncached(&token).await.unwrap() })
        });
        g.bench_function("gatepass verify (cache hit)", |b| {
            b.to_async(&rt)
                .iter(|| async { verifier.verify(&token).await.unwrap() })
        });
        g.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
