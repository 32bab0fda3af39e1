//! The adversarial corpus: each case is a named test that must get 401 (or the 400 the SPEC
//! names) and never 200, plus the algorithm matrix that must be accepted.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// Issuers for every key type, each selected by its own `iss`.
fn multi_config() -> String {
    let mut c = String::new();
    // No source: the issuer's public key file, `NAME.pub.pem`.
    let rsa_algs = r#"["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]"#;
    let aud_source = "secret_env = \"GATEPASS_TEST_AUD_SECRET\"\naudiences = [\"omni2\"]";
    for (name, iss, algs, source) in [
        (
            "local",
            ISS,
            r#"["HS256", "HS384", "HS512"]"#,
            Some(r#"secret_file = "hs256.key""#),
        ),
        ("rsa", "https://rsa.test", rsa_algs, None),
        ("ec256", "https://ec256.test", r#"["ES256"]"#, None),
        ("ec384", "https://ec384.test", r#"["ES384"]"#, None),
        ("ed", "https://ed.test", r#"["EdDSA"]"#, None),
        ("aud", "https://aud.test", r#"["HS256"]"#, Some(aud_source)),
    ] {
        let source = source.map_or_else(
            || format!("public_key_file = \"{name}.pub.pem\""),
            str::to_owned,
        );
        c += &format!("[[issuers]]\nname = \"{name}\"\nissuer = \"{iss}\"\nalgorithms = {algs}\n{source}\nleeway = \"5s\"\n\n");
    }
    c
}

async fn server() -> Server {
    // SAFETY of set_var: every test in this binary sets the same value.
    unsafe {
        std::env::set_var(
            "GATEPASS_TEST_AUD_SECRET",
            "aud-secret-aud-secret-aud-secret!!",
        )
    };
    start(&multi_config()).await
}

fn claims_for(iss: &str) -> Value {
    let mut c = claims("u1", "admin");
    c["iss"] = iss.into();
    c
}

/// A token for `iss`, signed by `key` with `alg` and no `kid`.
fn signed_for(alg: Algorithm, key: &str, iss: &str) -> String {
    sign_with(alg, key, None, &claims_for(iss))
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn raw(header: &Value, payload: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header),
        b64(payload),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

fn hmac(key: &[u8], alg: aws_lc_rs::hmac::Algorithm, msg: &str) -> Vec<u8> {
    aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(alg, key), msg.as_bytes())
        .as_ref()
        .to_vec()
}

/// Asserts a 401 with `invalid_token` (never 200, never 5xx).
async fn rejected(s: &Server, token: &str, description: &str) {
    let g = validate(s, Fwd::get("/x").bearer(token)).await;
    g.assert_denied(401, "invalid_token");
    assert_eq!(g.json()["error_description"], description, "token {token}");
}

#[tokio::test]
async fn algorithm_matrix_is_accepted() {
    let s = server().await;
    let k = keys();
    let cases = [
        (Algorithm::HS256, HS_SECRET, ISS),
        (Algorithm::HS384, HS_SECRET, ISS),
        (Algorithm::HS512, HS_SECRET, ISS),
        (Algorithm::RS256, k.rsa_priv.as_str(), "https://rsa.test"),
        (Algorithm::RS384, &k.rsa_priv, "https://rsa.test"),
        (Algorithm::RS512, &k.rsa_priv, "https://rsa.test"),
        (Algorithm::PS256, &k.rsa_priv, "https://rsa.test"),
        (Algorithm::PS384, &k.rsa_priv, "https://rsa.test"),
        (Algorithm::PS512, &k.rsa_priv, "https://rsa.test"),
        (Algorithm::ES256, &k.ec256_priv, "https://ec256.test"),
        (Algorithm::ES384, &k.ec384_priv, "https://ec384.test"),
        (Algorithm::EdDSA, &k.ed_priv, "https://ed.test"),
    ];
    for (alg, key, iss) in cases {
        let tok = signed_for(alg, key, iss);
        let g = validate(&s, Fwd::get("/x").bearer(&tok)).await;
        assert_eq!(g.status, 200, "{alg:?}: {}", g.body);
        assert_eq!(g.h("x-user-id"), Some("u1"));
    }
}

#[tokio::test]
async fn alg_none_in_any_casing() {
    let s = server().await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let t = raw(&json!({"alg": alg, "typ": "JWT"}), &claims_for(ISS), b"");
        assert_eq!(t.rsplit('.').next(), Some(""));
        let g = validate(&s, Fwd::get("/x").bearer(&t)).await;
        g.assert_denied(401, "invalid_token");
        // With a signature part present too.
        let t = raw(&json!({"alg": alg}), &claims_for(ISS), b"sig");
        assert_eq!(status_of(&s, Fwd::get("/x").bearer(&t)).await, 401);
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_as_secret() {
    let s = server().await;
    let pem = keys().rsa_pub.as_bytes();
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let payload = claims_for("https://rsa.test");
    let msg = format!("{}.{}", b64(&header), b64(&payload));
    let t = format!(
        "{msg}.{}",
        URL_SAFE_NO_PAD.encode(hmac(pem, aws_lc_rs::hmac::HMAC_SHA256, &msg))
    );
    rejected(&s, &t, "token algorithm is not allowed").await;
    // Even when the issuer's allow-list also names HS256, an RSA key never verifies HMAC.
    let cfg = "[[issuers]]\nname = \"mixed\"\nissuer = \"https://rsa.test\"\nalgorithms = [\"RS256\", \"HS256\"]\npublic_key_file = \"rsa.pub.pem\"\n";
    let s2 = start(cfg).await;
    rejected(&s2, &t, "no key matches the token").await;
}

/// Claims for the `rsa` issuer under header `h`, signed with a key that is not the issuer's.
fn attacker_signed(h: &jsonwebtoken::Header) -> String {
    let key = encoding_key(Algorithm::RS256, &keys().other_rsa_priv);
    jsonwebtoken::encode(h, &claims_for("https://rsa.test"), &key).unwrap()
}

#[tokio::test]
async fn embedded_jwk_is_ignored() {
    let s = server().await;
    let k = keys();
    let attacker = jwk(Algorithm::RS256, &k.other_rsa_priv, "evil");
    let mut h = jsonwebtoken::Header::new(Algorithm::RS256);
    h.jwk = Some(serde_json::from_value(attacker).unwrap());
    let t = attacker_signed(&h);
    rejected(&s, &t, "token signature is invalid").await;
}

#[tokio::test]
async fn jku_and_x5u_to_an_attacker_key_are_never_fetched() {
    let s = server().await;
    // An attacker-controlled URL that counts every connection to it.
    let attacker = gatepass_testkit::Stub::start().await;
    attacker.set_status(404);
    let url = attacker.url("/jwks.json");
    for field in ["jku", "x5u"] {
        let mut h = jsonwebtoken::Header::new(Algorithm::RS256);
        h.kid = Some("evil".into());
        match field {
            "jku" => h.jku = Some(url.clone()),
            _ => h.x5u = Some(url.clone()),
        }
        let t = attacker_signed(&h);
        rejected(&s, &t, "token signature is invalid").await;
    }
    assert_eq!(attacker.connections(), 0);
}

/// `kid`s that would escape a key directory or inject into a lookup.
const TRAVERSAL_KIDS: [&str; 4] = [
    "../../../../../../dev/null",
    "/etc/passwd",
    "' OR 1=1 --",
    "..%2f..%2fetc%2fpasswd",
];

#[tokio::test]
async fn kid_path_traversal() {
    let s = server().await;
    for kid in TRAVERSAL_KIDS {
        // Signed with the empty key, the content of /dev/null (by hand: jsonwebtoken refuses
        // empty HMAC keys).
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let input = format!("{}.{}", b64(&header), b64(&claims_for(ISS)));
        let sig = hmac(b"", aws_lc_rs::hmac::HMAC_SHA256, &input);
        let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
        rejected(&s, &t, "token signature is invalid").await;
    }
}

#[tokio::test]
async fn ecdsa_r_and_s_zero() {
    let s = server().await;
    for (alg, len, iss) in [
        ("ES256", 64, "https://ec256.test"),
        ("ES384", 96, "https://ec384.test"),
    ] {
        let t = raw(
            &json!({"alg": alg, "typ": "JWT"}),
            &claims_for(iss),
            &vec![0u8; len],
        );
        rejected(&s, &t, "token signature is invalid").await;
    }
}

#[tokio::test]
async fn tampered_payload() {
    let s = server().await;
    let t = user("u1", "viewer");
    let parts: Vec<&str> = t.split('.').collect();
    let t2 = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims("u1", "super_admin")),
        parts[2]
    );
    rejected(&s, &t2, "token signature is invalid").await;
}

#[tokio::test]
async fn stripped_signature() {
    let s = server().await;
    let t = user("u1", "admin");
    let stripped = &t[..=t.rfind('.').unwrap()];
    rejected(&s, stripped, "token signature is invalid").await;
    let no_dot = &t[..t.rfind('.').unwrap()];
    rejected(&s, no_dot, "token is malformed").await;
}

#[tokio::test]
async fn expired_and_nbf_beyond_leeway() {
    let s = server().await;
    let mut c = claims_for(ISS);
    c["exp"] = (now() - 60).into();
    rejected(&s, &hs(&c), "token expired").await;
    let mut c = claims_for(ISS);
    c["nbf"] = (now() + 60).into();
    rejected(&s, &hs(&c), "token is not valid yet").await;
    // Within the 5 s leeway both pass.
    let mut c = claims_for(ISS);
    c["exp"] = (now() - 2).into();
    c["nbf"] = (now() + 2).into();
    assert_eq!(status_of(&s, Fwd::get("/x").bearer(&hs(&c))).await, 200);
}

#[tokio::test]
async fn wrong_or_missing_iss() {
    let s = server().await;
    rejected(
        &s,
        &hs(&claims_for("https://evil.test")),
        "token issuer is not trusted",
    )
    .await;
    let mut c = claims_for(ISS);
    c.as_object_mut().unwrap().remove("iss");
    rejected(&s, &hs(&c), "a required claim is missing or malformed").await;
    // With a single issuer the key's validation catches it.
    let single = start(&base_config()).await;
    rejected(
        &single,
        &hs(&claims_for("https://evil.test")),
        "token issuer does not match",
    )
    .await;
    rejected(&single, &hs(&c), "a required claim is missing or malformed").await;
}

#[tokio::test]
async fn wrong_or_missing_aud() {
    let s = server().await;
    let secret = "aud-secret-aud-secret-aud-secret!!";
    let mut c = claims_for("https://aud.test");
    c["aud"] = "other".into();
    rejected(
        &s,
        &sign_with(Algorithm::HS256, secret, None, &c),
        "token audience is not accepted",
    )
    .await;
    c.as_object_mut().unwrap().remove("aud");
    rejected(
        &s,
        &sign_with(Algorithm::HS256, secret, None, &c),
        "a required claim is missing or malformed",
    )
    .await;
    c["aud"] = json!(["x", "omni2"]);
    assert_eq!(
        status_of(
            &s,
            Fwd::get("/x").bearer(&sign_with(Algorithm::HS256, secret, None, &c))
        )
        .await,
        200
    );
}

#[tokio::test]
async fn missing_exp_or_exp_as_string() {
    let s = server().await;
    let mut c = claims_for(ISS);
    c.as_object_mut().unwrap().remove("exp");
    rejected(&s, &hs(&c), "a required claim is missing or malformed").await;
    c["exp"] = (now() + 3600).to_string().into();
    rejected(&s, &hs(&c), "a required claim is missing or malformed").await;
}

#[tokio::test]
async fn valid_signature_from_another_issuers_key() {
    let s = server().await;
    let k = keys();
    // iss says rsa, signed with the HMAC secret of `local`.
    rejected(
        &s,
        &hs(&claims_for("https://rsa.test")),
        "token algorithm is not allowed",
    )
    .await;
    // iss says rsa, signed by an RSA key that is not the rsa issuer's.
    let t = signed_for(Algorithm::RS256, &k.other_rsa_priv, "https://rsa.test");
    rejected(&s, &t, "token signature is invalid").await;
    // iss says ec256, signed with the P-384 key under ES256's name is impossible; ES384 is not allowed.
    let t = signed_for(Algorithm::ES384, &k.ec384_priv, "https://ec256.test");
    rejected(&s, &t, "token algorithm is not allowed").await;
}

#[tokio::test]
async fn two_authorization_headers_is_400() {
    let s = server().await;
    let t = hs(&claims_for(ISS));
    let g = validate(&s, Fwd::get("/x").bearer(&t).bearer(&t)).await;
    g.assert_denied_with(400, "invalid_request", "more than one Authorization header");
}

/// Issue 8 item 1: RFC 6750 §3 puts the error code in the challenge, on a 400 too.
#[tokio::test]
async fn every_400_carries_an_invalid_request_challenge() {
    let s = server().await;
    let t = hs(&claims_for(ISS));
    for (f, description) in [
        (
            Fwd::get("/x").bearer(&t).bearer(&t),
            "more than one Authorization header",
        ),
        (
            Fwd::get("/x").h("Cookie", &format!("access_token={t}; access_token={t}")),
            "more than one token in the request",
        ),
        (
            Fwd::get("/a%2Fb").bearer(&t),
            "the request path has characters a backend may read differently",
        ),
    ] {
        let g = validate(&s, f).await;
        g.assert_denied(400, "invalid_request");
        assert_eq!(g.json()["error_description"], description);
        assert_eq!(
            g.h("www-authenticate"),
            Some(format!(r#"Bearer realm="gatepass", error="invalid_request", error_description="{description}""#).as_str())
        );
    }
}

/// Issue 8 F: several cookies of the token cookie's name are ambiguous (gatepass could read
/// the first while a backend reads the last), on one `Cookie` line or over several.
#[tokio::test]
async fn several_token_cookies_are_400() {
    let s = server().await;
    let good = hs(&claims_for(ISS));
    let g = validate(
        &s,
        Fwd::get("/x").h(
            "Cookie",
            &format!("access_token={good}; access_token=forged"),
        ),
    )
    .await;
    g.assert_denied(400, "invalid_request");
    let g = validate(
        &s,
        Fwd::get("/x")
            .h("Cookie", &format!("access_token={good}"))
            .h("Cookie", "access_token=forged"),
    )
    .await;
    g.assert_denied(400, "invalid_request");
    // One token cookie among others is fine.
    let g = validate(
        &s,
        Fwd::get("/x").h("Cookie", &format!("a=1; access_token={good}; b=2")),
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
}

/// Issue 8 E: `iss`, `sub`, `jti`, `sid` must be strings and `exp`/`nbf`/`iat` numbers. An
/// `iss` array naming the issuer must not pass (a single issuer is not selected by `iss`).
#[tokio::test]
async fn registered_claims_must_have_their_types() {
    let s = start(&base_config()).await;
    let cases: [(&str, Value); 7] = [
        ("iss", json!([ISS, "https://evil.example"])),
        ("iss", json!({"iss": ISS})),
        ("sub", json!(42)),
        ("jti", json!(["a", "b"])),
        ("sid", json!(7)),
        ("nbf", json!("0")),
        ("iat", json!("now")),
    ];
    for (name, value) in cases {
        let mut c = claims("u1", "admin");
        c[name] = value.clone();
        let g = validate(&s, Fwd::get("/x").bearer(&hs(&c))).await;
        g.assert_denied(401, "invalid_token");
        assert_eq!(
            g.json()["error_description"],
            "a required claim is missing or malformed",
            "{name} = {value}"
        );
    }
    let mut c = claims("u1", "admin");
    c["jti"] = "j1".into();
    c["sid"] = "s1".into();
    assert_eq!(status_of(&s, Fwd::get("/x").bearer(&hs(&c))).await, 200);
}

#[tokio::test]
async fn basic_scheme() {
    let s = server().await;
    let g = validate(
        &s,
        Fwd::get("/x").h("Authorization", "Basic YWRtaW46YWRtaW4="),
    )
    .await;
    g.assert_denied_with(
        401,
        "invalid_token",
        "Authorization must use the Bearer scheme",
    );
}

#[tokio::test]
async fn garbage_base64() {
    let s = server().await;
    for t in [
        "!!!.???.***",
        "e30.e30.e30",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
        "a.b",
        "....",
        "ey.ey.ey",
    ] {
        let g = validate(&s, Fwd::get("/x").bearer(t)).await;
        g.assert_denied(401, "invalid_token");
    }
}

#[tokio::test]
async fn oversized_token_is_a_clean_401() {
    let s = server().await;
    let mut c = claims_for(ISS);
    c["padding"] = "x".repeat(100_000).into();
    let t = hs(&c);
    rejected(&s, &t, "token is too large").await;
}

/// Well signed, but a claim named twice (two readers could each take another), a `b64`
/// header (RFC 7797, not implemented), or a header member of the wrong type: all refused.
#[tokio::test]
async fn repeated_claims_and_odd_headers_are_refused() {
    let s = start(&base_config()).await;
    let (past, future) = (now() - 3600, now() + 3600);
    let body = |extra: &str| {
        format!(r#"{{"sub":"u1","role":"admin","iss":"{ISS}","exp":{future}{extra}}}"#)
    };
    let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
    // The control: the same text with no repeat passes.
    assert_eq!(
        status_of(&s, Fwd::get("/x").bearer(&hs_text(hs, &body("")))).await,
        200
    );
    for extra in [
        format!(r#","exp":{past}"#),
        r#","iss":"https://evil.example""#.to_string(),
        r#","sub":"u2""#.to_string(),
        r#","role":"viewer""#.to_string(),
    ] {
        rejected(&s, &hs_text(hs, &body(&extra)), "token is malformed").await;
    }
    for header in [
        r#"{"alg":"HS256","b64":false}"#,
        r#"{"alg":"HS256","b64":true}"#,
        r#"{"alg":"HS256","b64":null}"#,
        r#"{"alg":"HS256","x5c":1}"#,
        r#"{"alg":"HS256","cty":["JWT"]}"#,
        r#"{"alg":"HS256","jku":7}"#,
        r#"{"alg":"HS256","alg":"HS256"}"#,
    ] {
        rejected(&s, &hs_text(header, &body("")), "token is malformed").await;
    }
    // Members gatepass does not use, well typed, change nothing.
    let extra =
        r#"{"alg":"HS256","typ":"JWT","cty":"x","x5c":["AA"],"jwk":{"kty":"oct"},"zzz":[1]}"#;
    assert_eq!(
        status_of(&s, Fwd::get("/x").bearer(&hs_text(extra, &body("")))).await,
        200
    );
}

// ---- issue 20: hardening from the review of round 2 (SPEC §3.9) ------------------------------
// Each test was run against the binary before the fix and failed (it got 200 or an allow).

/// Finding 1: a validly signed token whose JOSE header is a JSON array (`["HS256"]`) was
/// accepted (a struct reads an array positionally); jsonwebtoken accepts only an object.
#[tokio::test]
async fn jose_header_as_an_array_is_refused() {
    let s = start(&base_config()).await;
    let body = claims("u1", "admin").to_string();
    assert_eq!(
        status_of(
            &s,
            Fwd::get("/x").bearer(&hs_text(r#"{"alg":"HS256"}"#, &body))
        )
        .await,
        200
    );
    for header in [r#"["HS256"]"#, r#"["HS256",null,"JWT"]"#, r#""HS256""#] {
        rejected(&s, &hs_text(header, &body), "token is malformed").await;
    }
}

/// Finding 2: explicit typing. A back-channel logout token (`typ: logout+jwt`, `events`), a
/// DPoP proof's type, `JOSE` or `null` is no access token, at `/validate` and at
/// `POST /tickets`; `JWT`, `application/jwt`, `at+jwt` (any case) and no `typ` are.
#[tokio::test]
async fn logout_tokens_and_foreign_types_are_not_access_tokens() {
    let s = start(&base_config()).await;
    let body = claims("u1", "admin").to_string();
    for typ in [
        "JWT",
        "jwt",
        "application/jwt",
        "at+jwt",
        "Application/AT+JWT",
    ] {
        let t = hs_text(&format!(r#"{{"alg":"HS256","typ":"{typ}"}}"#), &body);
        assert_eq!(status_of(&s, Fwd::get("/x").bearer(&t)).await, 200, "{typ}");
    }
    let mut refused = Vec::new();
    for typ in [
        r#""logout+jwt""#,
        r#""dpop+jwt""#,
        r#""JOSE""#,
        "null",
        r#""""#,
        "5",
    ] {
        refused.push(hs_text(&format!(r#"{{"alg":"HS256","typ":{typ}}}"#), &body));
    }
    // A logout token as the provider signs it, whatever its `typ` says.
    let mut logout = claims("u1", "admin");
    logout["events"] = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
    refused.push(hs_text(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &logout.to_string(),
    ));
    refused.push(hs_text(r#"{"alg":"HS256"}"#, &logout.to_string()));
    for t in &refused {
        rejected(&s, t, "token is malformed").await;
        let g = s.tickets(reqwest::Method::POST, Some(t)).await;
        g.assert_denied_with(401, "invalid_token", "token is malformed");
    }
    assert_eq!(
        metric(
            &s,
            r#"gatepass_requests_total{outcome="deny",reason="not_access_token"}"#
        )
        .await,
        refused.len() as f64 * 2.0
    );
    // Other events are no logout token.
    let mut other = claims("u1", "admin");
    other["events"] = json!({"https://example.test/event": {}});
    let t = hs_text(r#"{"alg":"HS256"}"#, &other.to_string());
    assert_eq!(status_of(&s, Fwd::get("/x").bearer(&t)).await, 200);
}

/// Finding 3: a member name repeated below the top level was last-wins
/// (`realm_access: {"roles": ["viewer"], "roles": ["admin"]}` gave role `admin`).
#[tokio::test]
async fn repeated_names_below_the_top_level_are_refused() {
    let s = start(&base_config()).await;
    let (iss, exp) = (ISS, now() + 600);
    let payload =
        |realm: &str| format!(r#"{{"sub":"u1","iss":"{iss}","exp":{exp},"realm_access":{realm}}}"#);
    let one = hs_text(r#"{"alg":"HS256"}"#, &payload(r#"{"roles":["admin"]}"#));
    let g = validate(&s, Fwd::get("/x").bearer(&one)).await;
    assert_eq!((g.status, g.h("x-user-role")), (200, Some("admin")));
    for realm in [
        r#"{"roles":["viewer"],"roles":["admin"]}"#,
        r#"{"roles":[{"a":1,"a":2}]}"#,
        r#"{"x":{"y":{"z":1,"z":1}}}"#,
    ] {
        rejected(
            &s,
            &hs_text(r#"{"alg":"HS256"}"#, &payload(realm)),
            "token is malformed",
        )
        .await;
    }
    // In the JOSE header too.
    let t = hs_text(
        r#"{"alg":"HS256","jwk":{"kty":"oct","kty":"RSA"}}"#,
        &payload("{}"),
    );
    rejected(&s, &t, "token is malformed").await;
}

/// Finding 4: `scope: "mcp:read\u2003mcp:write"` (or a tab) granted `mcp:write`: items split
/// on any Unicode whitespace instead of the space character.
#[tokio::test]
async fn scope_items_split_on_the_space_character_only() {
    let s = start(&base_config()).await;
    let with_scope = |scope: &str| {
        let mut c = claims("u1", "admin");
        c.as_object_mut().unwrap().remove("permissions");
        c["scope"] = scope.into();
        hs(&c)
    };
    // `/api/v1/write` needs mcp:read and mcp:write.
    let ok = with_scope("mcp:read mcp:write");
    assert_status(&s, Fwd::new("POST", "/api/v1/write").bearer(&ok), 200).await;
    for scope in [
        "mcp:read\u{2003}mcp:write",
        "mcp:read\tmcp:write",
        "mcp:read\u{a0}mcp:write",
    ] {
        let g = validate(
            &s,
            Fwd::new("POST", "/api/v1/write").bearer(&with_scope(scope)),
        )
        .await;
        g.assert_denied(403, "insufficient_scope");
    }
}

/// Finding 8: `iat: -5` and `iat: -1e300` were accepted (read as 0); negative NumericDates
/// are malformed, in `exp` and `nbf` too.
#[tokio::test]
async fn negative_times_are_malformed() {
    let s = start(&base_config()).await;
    for (name, value) in [
        ("iat", json!(-5)),
        ("iat", json!(-1e300)),
        ("iat", json!(-0.5)),
        ("nbf", json!(-1)),
        ("exp", json!(-1)),
    ] {
        let mut c = claims("u1", "admin");
        c[name] = value.clone();
        rejected(&s, &hs(&c), "token is malformed").await;
    }
    let mut c = claims("u1", "admin");
    c["iat"] = json!(now() as f64 - 0.5);
    assert_eq!(status_of(&s, Fwd::get("/x").bearer(&hs(&c))).await, 200);
}
