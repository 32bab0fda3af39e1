//! RFC 8725 / RFC 9068 checks (SPEC §7): `crit`, a future `iat`, `max_token_lifetime`, and the
//! strict `rfc9068` profile; and the config combinations that are refused.

mod common;

use common::*;
use gatepass_testkit::now;
use serde_json::{json, Value};

fn token(header: Value, claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", b64(&header), b64(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HS_SECRET.as_bytes());
    let sig = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn hs_header(extra: Value) -> Value {
    let mut h = json!({"alg": "HS256", "typ": "JWT"});
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    h
}

fn with(extra: Value) -> Value {
    let mut c = claims("u1", "admin");
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

async fn denied(s: &Server, t: &str, description: &str) {
    validate(s, Fwd::get("/x").bearer(t))
        .await
        .assert_denied_with(401, "invalid_token", description);
}

#[tokio::test]
async fn crit_and_a_future_iat_are_refused_for_every_issuer() {
    let s = start(&base_config()).await;
    let crit = token(
        hs_header(json!({"crit": ["exp"], "exp": 1})),
        &with(json!({})),
    );
    denied(
        &s,
        &crit,
        "token header names a critical extension gatepass does not implement",
    )
    .await;
    let empty_crit = token(hs_header(json!({"crit": []})), &with(json!({})));
    denied(
        &s,
        &empty_crit,
        "token header names a critical extension gatepass does not implement",
    )
    .await;
    // leeway is 5s in the base config.
    let future = token(hs_header(json!({})), &with(json!({"iat": now() + 60})));
    denied(&s, &future, "token iat is in the future").await;
    let within = token(hs_header(json!({})), &with(json!({"iat": now() + 2})));
    assert_status(&s, Fwd::get("/x").bearer(&within), 200).await;
}

#[tokio::test]
async fn max_token_lifetime_caps_exp_minus_iat() {
    let cfg = base_config().replace(
        "leeway = \"5s\"",
        "leeway = \"5s\"\nmax_token_lifetime = \"1h\"",
    );
    let s = start(&cfg).await;
    let t = now();
    let long = token(
        hs_header(json!({})),
        &with(json!({"iat": t, "exp": t + 7200})),
    );
    denied(
        &s,
        &long,
        "token lifetime exceeds the issuer's max_token_lifetime",
    )
    .await;
    let no_iat = token(hs_header(json!({})), &with(json!({"iat": null})));
    denied(&s, &no_iat, "a required claim is missing or malformed").await;
    let ok = token(
        hs_header(json!({})),
        &with(json!({"iat": t, "exp": t + 3600})),
    );
    assert_status(&s, Fwd::get("/x").bearer(&ok), 200).await;
}

#[tokio::test]
async fn rfc9068_wants_at_jwt_and_its_claims() {
    let cfg = base_config().replace(
        "leeway = \"5s\"",
        "leeway = \"5s\"\nprofile = \"rfc9068\"\naudiences = [\"https://api.test\"]",
    );
    let s = start(&cfg).await;
    let full = json!({"aud": "https://api.test", "client_id": "c1", "jti": "j1"});
    let good = token(
        json!({"alg": "HS256", "typ": "at+jwt"}),
        &with(full.clone()),
    );
    assert_status(&s, Fwd::get("/x").bearer(&good), 200).await;
    let long_typ = token(
        json!({"alg": "HS256", "typ": "application/at+jwt"}),
        &with(full.clone()),
    );
    assert_status(&s, Fwd::get("/x").bearer(&long_typ), 200).await;
    let jwt = token(hs_header(json!({})), &with(full.clone()));
    denied(&s, &jwt, "token typ must be at+jwt").await;
    let no_typ = token(json!({"alg": "HS256"}), &with(full.clone()));
    denied(&s, &no_typ, "token typ must be at+jwt").await;
    for missing in ["client_id", "jti", "iat", "sub"] {
        let mut c = full.clone();
        c[missing] = Value::Null;
        let t = token(json!({"alg": "HS256", "typ": "at+jwt"}), &with(c));
        denied(&s, &t, "a required claim is missing or malformed").await;
    }
    let wrong_aud = token(
        json!({"alg": "HS256", "typ": "at+jwt"}),
        &with(json!({"aud": "https://other.test", "client_id": "c1", "jti": "j1"})),
    );
    denied(&s, &wrong_aud, "token audience is not accepted").await;
    // The same token under an issuer without the profile: typ JWT is fine.
    let plain = start(&base_config()).await;
    assert_status(&plain, Fwd::get("/x").bearer(&jwt), 200).await;
}

#[test]
fn bad_combinations_are_one_line_naming_the_key() {
    let issuer = |extra: &str| {
        format!(
            "[[issuers]]\nname = \"a\"\nissuer = \"https://a.test\"\nalgorithms = [\"RS256\"]\n{extra}\n"
        )
    };
    let err = |text: String| gatepass::Config::parse(&text).unwrap_err().to_string();
    assert_eq!(
        err(issuer("discovery = true\njwks_url = \"https://a.test/jwks\"")),
        "config error: issuers[0].discovery: takes the keys from the discovery document: remove secret_file, secret_env, public_key_file, jwks_file and jwks_url"
    );
    assert_eq!(
        err(issuer(
            "jwks_url = \"https://a.test/jwks\"\nprofile = \"rfc9068\""
        )),
        "config error: issuers[0].profile: rfc9068 requires `aud` to be checked: set audiences"
    );
    let intro = "introspection_url = \"https://a.test/i\"\nintrospection_client_id = \"gp\"\nintrospection_secret_file = \"s\"";
    let two = format!(
        "{}{}",
        issuer(intro),
        issuer(intro)
            .replace("name = \"a\"", "name = \"b\"")
            .replace("https://a.test\"\nalg", "https://b.test\"\nalg")
    );
    assert_eq!(
        err(two),
        "config error: issuers[1].introspection_url: at most one issuer may introspect opaque tokens"
    );
    assert_eq!(
        err(issuer("introspection_url = \"https://a.test/i\"")),
        "config error: issuers[0].introspection_client_id: introspection needs introspection_client_id and introspection_secret_file (client_secret_basic)"
    );
    assert_eq!(
        err(issuer("discovery = true").replace("https://a.test", "a.test")),
        "config error: issuers[0].issuer: must be the issuer's http(s) URL with discovery = true"
    );
}
