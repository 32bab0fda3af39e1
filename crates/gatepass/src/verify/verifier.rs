//! Token verification (SPEC §3.4 step 4) behind the verified-token cache: a repeated token is
//! a cache lookup, not a signature check.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{Config, ConfigError, Profile};
use crate::metrics::Metrics;
use crate::policy::deny::DenyReason;
use crate::verify::claims::ClaimMap;
use crate::verify::dpop::BindingPolicy;
use crate::verify::introspect::Introspector;
use crate::verify::json;
use crate::verify::jwks::KeySource;
use crate::verify::keys::{self, VerifyKey};
use crate::verify::typ::Typ;
use crate::verify::verified::seconds;
pub use crate::verify::verified::{now_secs, user_key, TokenIds, Verified};
use gatepass_identity::now_millis;

/// One configured issuer.
pub struct Issuer {
    pub name: String,
    pub iss: String,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    /// The `aud` its back-channel logout tokens carry (none: it sends none).
    pub backchannel_audience: Option<String>,
    /// Clock skew allowed, in seconds.
    pub leeway: u64,
    pub profile: Option<Profile>,
    /// Longest `exp - iat`, in seconds.
    pub max_lifetime: Option<u64>,
    /// Which key bindings (`cnf`) its tokens may, or must, carry (SPEC §10).
    pub binding: BindingPolicy,
}

/// A verified token in the cache, until the earlier of its `exp` and `[cache] ttl` (Unix ms).
#[derive(Clone)]
struct Cached {
    verified: Arc<Verified>,
    until_ms: u64,
}

/// The token cache: S3-FIFO (quick_cache), sharded, a read lock and one clone per hit (no
/// per-read bookkeeping queue, no housekeeping on the request path). Keyed by the token, which
/// the client chooses: a hash seeded per process (foldhash); a hit still compares the whole
/// token.
type TokenCache = quick_cache::sync::Cache<
    String,
    Cached,
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

/// Names the issuer verifying the token on the current (decision) span, when tracing.
fn record_issuer(issuer: &Issuer) {
    if gatepass_service::telemetry::enabled() {
        tracing::Span::current().record("gatepass.issuer", issuer.name.as_str());
    }
}

/// Verifies tokens for every configured issuer.
pub struct Verifier {
    pub issuers: Vec<Issuer>,
    claims: ClaimMap,
    /// Opaque tokens: the one issuer that introspects them.
    introspector: Option<Introspector>,
    cache: TokenCache,
    /// `[cache] ttl` in ms; 0: nothing is cached.
    ttl_ms: u64,
    max_token_bytes: usize,
    /// `gatepass_token_cache_total{result}`.
    cache_hit: metrics::Counter,
    cache_miss: metrics::Counter,
}

impl Verifier {
    pub fn new(config: &Config, metrics: &Metrics) -> Result<Verifier, ConfigError> {
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for (i, ic) in config.issuers.iter().enumerate() {
            let keys = KeySource::new(config, ic, metrics).map_err(|e| {
                ConfigError::new(format!("issuers[{i}].{}", e.config_key(ic)), e.to_string())
            })?;
            issuers.push(Issuer {
                name: ic.name.clone(),
                iss: ic.issuer.clone(),
                algorithms: keys::algorithms(ic),
                keys,
                backchannel_audience: ic.backchannel_logout_audience.clone(),
                leeway: ic.leeway.0.as_secs(),
                profile: ic.profile,
                max_lifetime: ic.max_token_lifetime.map(|d| d.0.as_secs()),
                binding: BindingPolicy::of(ic),
            });
        }
        let max = config.cache.max_tokens;
        let cache = TokenCache::with(
            usize::try_from(max).unwrap_or(usize::MAX),
            max,
            quick_cache::UnitWeighter,
            foldhash::fast::RandomState::default(),
            Default::default(),
        );
        Ok(Verifier {
            issuers,
            introspector: Introspector::new(config, metrics)?,
            claims: ClaimMap::new(&config.claims),
            cache,
            ttl_ms: config.cache.ttl.0.as_millis() as u64,
            max_token_bytes: config.tokens.max_token_bytes,
            cache_hit: metrics.cache_hit.clone(),
            cache_miss: metrics.cache_miss.clone(),
        })
    }

    /// Verifies `token`, from the cache when it was verified before.
    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, DenyReason> {
        if let Some(v) = self.lookup(token).await {
            return Ok(v);
        }
        self.cache_miss.increment(1);
        if !crate::verify::token::is_jws(token) {
            if let Some(i) = &self.introspector {
                if token.len() > self.max_token_bytes {
                    return Err(DenyReason::TokenTooLarge);
                }
                record_issuer(&self.issuers[i.issuer]);
                let issuer = &self.issuers[i.issuer];
                let discovered = issuer.keys.discovered_introspection();
                return i.verify(token, &self.claims, discovered).await;
            }
        }
        let v = Arc::new(self.verify_uncached(token).await?);
        if self.ttl_ms > 0 {
            let until_ms = (now_millis() + self.ttl_ms).min(v.exp.saturating_mul(1000));
            self.cache.insert(
                token.to_owned(),
                Cached {
                    verified: v.clone(),
                    until_ms,
                },
            );
        }
        Ok(v)
    }

    /// The token's earlier verification, while it is unexpired; never a signature check.
    pub async fn lookup(&self, token: &str) -> Option<Arc<Verified>> {
        let v = match &self.introspector {
            Some(i) if !crate::verify::token::is_jws(token) => i.cached(token).await?,
            _ => {
                let c = self.cache.get(token)?;
                if c.until_ms <= now_millis() {
                    // Lapsed: gone now, so the cache holds only live entries it can reuse.
                    self.cache.remove(token);
                    return None;
                }
                c.verified
            }
        };
        self.cache_hit.increment(1);
        if gatepass_service::telemetry::enabled() {
            tracing::Span::current().record("gatepass.cache_hit", true);
        }
        Some(v)
    }

    /// Number of cached tokens.
    pub fn cached(&self) -> u64 {
        self.cache.len() as u64
    }

    /// The issuer a token's claims name (`iss` selects it; with one issuer, that one, whose
    /// `iss` the registered-claim checks still compare).
    pub fn select_issuer(&self, claims: &Map<String, Value>) -> Result<&Issuer, DenyReason> {
        if let [only] = self.issuers.as_slice() {
            return Ok(only);
        }
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s,
            None => return Err(DenyReason::MissingClaim),
            Some(_) => return Err(DenyReason::UnknownIssuer),
        };
        self.issuers
            .iter()
            .find(|i| i.iss == *iss)
            .ok_or(DenyReason::UnknownIssuer)
    }

    /// Verifies without the cache (the signature path; used by the benchmarks).
    pub async fn verify_uncached(&self, token: &str) -> Result<Verified, DenyReason> {
        if token.len() > self.max_token_bytes {
            return Err(DenyReason::TokenTooLarge);
        }
        if !crate::verify::token::is_jws(token) {
            return Err(DenyReason::MalformedToken);
        }
        // `alg` values outside the enum (`none`, `None`, `HS1`) fail here.
        let header = light_header(token)?;
        // RFC 7515 §4.1.11: gatepass implements no extension, so any `crit` is refused.
        if header.crit {
            return Err(DenyReason::UnsupportedCritical);
        }
        // RFC 8725 §3.11: a token typed for another purpose (a logout token, a DPoP proof) is
        // never an access token.
        if !header.typ.is_access_token() {
            return Err(DenyReason::NotAccessToken);
        }
        // `is_jws` held: exactly two dots.
        let (message, signature) = token.rsplit_once('.').ok_or(DenyReason::MalformedToken)?;
        // Parsed once, by the one strict reader: `iss` selects the issuer.
        let claims = claims_of(message)?;
        let issuer = self.select_issuer(&claims)?;
        record_issuer(issuer);
        if !issuer.algorithms.contains(&header.alg) {
            return Err(DenyReason::AlgorithmNotAllowed);
        }
        if issuer.profile == Some(Profile::Rfc9068) && header.typ != Typ::AtJwt {
            return Err(DenyReason::WrongTokenType);
        }
        let kid = header.kid.as_deref();
        let keys = issuer.keys_for(kid).await?;
        let mut best: Option<DenyReason> = None;
        for key in keys.candidates(kid, header.alg) {
            match signature_ok(key, header.alg, message, signature) {
                // The first key that signed it decides: the claim checks are the issuer's.
                Ok(()) => return self.build(claims, issuer, &key.validation),
                Err(reason) => best = best.or(Some(reason)),
            }
        }
        Err(best.unwrap_or(DenyReason::UnknownKey))
    }

    fn build(
        &self,
        claims: Map<String, Value>,
        issuer: &Issuer,
        rules: &Validation,
    ) -> Result<Verified, DenyReason> {
        check_registered(&claims, rules, now_secs())?;
        if !claim_types_ok(&claims) {
            return Err(DenyReason::MissingClaim);
        }
        if is_logout_token(&claims) {
            return Err(DenyReason::NotAccessToken);
        }
        let exp = seconds(&claims, "exp").ok_or(DenyReason::MissingClaim)?;
        let iat = seconds(&claims, "iat");
        check_times(issuer, exp, iat)?;
        if issuer.profile == Some(Profile::Rfc9068) {
            let present = |name: &str| {
                claims
                    .get(name)
                    .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            };
            if !(present("sub") && present("client_id") && present("jti") && iat.is_some()) {
                return Err(DenyReason::MissingClaim);
            }
        }
        // The issuer that verified it (with one issuer, `iss` was compared to it).
        let v = self.identity_of(&claims, &issuer.iss, exp)?;
        issuer.binding.check(&v.ids.cnf)?;
        Ok(v)
    }

    /// The binding settings of the issuer that verified `v`.
    pub fn binding_of(&self, v: &Verified) -> BindingPolicy {
        match self.issuers.as_slice() {
            [only] => only.binding,
            all => all
                .iter()
                .find(|i| Some(i.iss.as_str()) == v.ids.iss.as_deref())
                .map(|i| i.binding)
                .unwrap_or_default(),
        }
    }

    /// The verified form of claims already checked (a token's, or a sign-in session's ID
    /// token's): the identity through `[claims]`, and the ids revocations know it by.
    pub fn identity_of(
        &self,
        claims: &Map<String, Value>,
        iss: &str,
        exp: u64,
    ) -> Result<Verified, DenyReason> {
        let identity = self
            .claims
            .identity(claims, exp)
            .ok_or(DenyReason::MissingClaim)?;
        let mut ids = TokenIds::from_claims(claims);
        ids.iss = Some(iss.into());
        Ok(Verified::with_ids(identity, exp, ids))
    }
}

impl Issuer {
    /// The issuer's keys, refetched once when `kid` is unknown to a remote JWKS.
    pub async fn keys_for(
        &self,
        kid: Option<&str>,
    ) -> Result<Arc<crate::verify::keys::KeySet>, DenyReason> {
        let mut keys = self.keys.current().ok_or(DenyReason::KeysUnavailable)?;
        if let (Some(kid), KeySource::Remote(remote)) = (kid, &self.keys) {
            if !keys.has_kid(kid) {
                remote.refetch_for_unknown_kid().await;
                keys = self.keys.current().ok_or(DenyReason::KeysUnavailable)?;
                if !keys.has_kid(kid) {
                    return Err(DenyReason::UnknownKey);
                }
            }
        }
        Ok(keys)
    }
}

/// Whether `key` signed `message` with `alg`: as `jsonwebtoken::decode` decides it (a signature
/// that is not base64url is malformed, any other failure a bad signature), with an HMAC
/// secret's prebuilt key.
pub(crate) fn signature_ok(
    key: &VerifyKey,
    alg: Algorithm,
    message: &str,
    signature: &str,
) -> Result<(), DenyReason> {
    // `candidates` already filters on this; checked here too, as `decode` did, so no caller
    // can verify with a key outside its allow-list and family.
    if !key.supports(alg) {
        return Err(DenyReason::AlgorithmNotAllowed);
    }
    if let Some(hmac) = key.hmac.as_ref().and_then(|h| h.get(alg)) {
        // Room for HS512's 64 bytes; anything longer is no HMAC tag of ours.
        let mut tag = [0u8; 96];
        let n = match URL_SAFE_NO_PAD.decode_slice(signature, &mut tag) {
            Ok(n) => n,
            Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                return Err(DenyReason::BadSignature)
            }
            Err(base64::DecodeSliceError::DecodeError(_)) => {
                return Err(DenyReason::MalformedToken)
            }
        };
        return aws_lc_rs::hmac::verify(hmac, message.as_bytes(), &tag[..n])
            .map_err(|_| DenyReason::BadSignature);
    }
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.key, alg) {
        Ok(true) => Ok(()),
        Ok(false) => Err(DenyReason::BadSignature),
        Err(e) => Err(map_error(e.kind())),
    }
}

/// The payload of a signed `header.payload`, decoded once by the strict reader: an object,
/// no member name twice at any depth, non-negative times (SPEC §3.9).
pub(crate) fn claims_of(message: &str) -> Result<Map<String, Value>, DenyReason> {
    let payload = message
        .split_once('.')
        .map(|(_, p)| p)
        .ok_or(DenyReason::MalformedToken)?;
    json::segment(payload)
        .ok()
        .filter(json::times_ok)
        .ok_or(DenyReason::MalformedToken)
}

/// The `events` member a back-channel logout token must have.
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Does the claims set carry the back-channel logout event (a logout token)?
pub(crate) fn is_logout_token(claims: &Map<String, Value>) -> bool {
    claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|e| e.contains_key(LOGOUT_EVENT))
}

/// The registered-claim checks of a key's `Validation` as `jsonwebtoken::decode` makes them, in
/// its order, on the claims parsed once (decode parses the header and the payload a second
/// time): required claims present and well-formed, then `exp`, `nbf` (both with `leeway`),
/// `iss`, `aud`. Only what `validation_for` sets is honoured: it never requires `sub`, sets no
/// `sub` and no `reject_tokens_expiring_in_less_than`. Where jsonwebtoken's whole parse failed on
/// a malformed `exp`/`nbf` (an array, an object) this names the claim instead.
fn check_registered(
    claims: &Map<String, Value>,
    rules: &Validation,
    now: u64,
) -> Result<(), DenyReason> {
    let get = |name: &str| claims.get(name).filter(|v| !v.is_null());
    for name in &rules.required_spec_claims {
        let ok = match name.as_str() {
            n @ ("exp" | "nbf") => claims.get(n).and_then(numeric_date).is_some(),
            n @ ("iss" | "aud") => get(n).is_some_and(|v| any_of(v, None).is_some()),
            n => get(n).is_some(),
        };
        if !ok {
            return Err(DenyReason::MissingClaim);
        }
    }
    // A null `exp` or `nbf` is malformed to jsonwebtoken, a null `iss` or `aud` absent.
    let date = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(v) => numeric_date(v).map(Some).ok_or(DenyReason::MissingClaim),
    };
    // Both read before either is compared, as jsonwebtoken does.
    let exp = if rules.validate_exp {
        date("exp")?
    } else {
        None
    };
    let nbf = if rules.validate_nbf {
        date("nbf")?
    } else {
        None
    };
    if exp.is_some_and(|exp| exp < now.saturating_sub(rules.leeway)) {
        return Err(DenyReason::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now + rules.leeway) {
        return Err(DenyReason::NotYetValid);
    }
    let one_of = |name: &str, allowed: &HashSet<String>, wrong| match get(name) {
        None => Ok(()),
        Some(v) => match any_of(v, Some(allowed)) {
            Some(true) => Ok(()),
            Some(false) => Err(wrong),
            None => Err(DenyReason::MissingClaim),
        },
    };
    if let Some(iss) = &rules.iss {
        one_of("iss", iss, DenyReason::WrongIssuer)?;
    }
    if rules.validate_aud {
        match &rules.aud {
            Some(aud) => one_of("aud", aud, DenyReason::WrongAudience)?,
            None if get("aud").is_some() => return Err(DenyReason::WrongAudience),
            None => {}
        }
    }
    Ok(())
}

/// A NumericDate (RFC 7519 §2) as jsonwebtoken's checks read one: an unsigned integer, or a
/// finite non-negative number, rounded. Anything else is malformed.
fn numeric_date(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })
}

/// A StringOrURI claim, or an array of them: whether one is in `allowed` (none given: false);
/// `None` when it is neither.
fn any_of(v: &Value, allowed: Option<&HashSet<String>>) -> Option<bool> {
    let hit = |s: &str| allowed.is_some_and(|a| a.contains(s));
    match v {
        Value::String(s) => Some(hit(s)),
        Value::Array(items) => items
            .iter()
            .try_fold(false, |any, x| Some(hit(x.as_str()?) || any)),
        _ => None,
    }
}

/// RFC 8725 checks every token gets: no `iat` beyond `leeway` in the future, and a lifetime
/// within the issuer's `max_token_lifetime` (which then requires `iat`).
pub(crate) fn check_times(issuer: &Issuer, exp: u64, iat: Option<u64>) -> Result<(), DenyReason> {
    if iat.is_some_and(|iat| iat > now_secs() + issuer.leeway) {
        return Err(DenyReason::IssuedInFuture);
    }
    if let Some(max) = issuer.max_lifetime {
        let iat = iat.ok_or(DenyReason::MissingClaim)?;
        if exp.saturating_sub(iat) > max {
            return Err(DenyReason::LifetimeTooLong);
        }
    }
    Ok(())
}

/// The registered claims have the types the JWT RFCs give them; any other type is malformed
/// (an `iss` array must never pass for the issuer, a numeric `sub` for a user id).
fn claim_types_ok(claims: &Map<String, Value>) -> bool {
    let typed = |names: &[&str], ok: fn(&Value) -> bool| {
        names.iter().all(|n| claims.get(*n).is_none_or(ok))
    };
    typed(&["iss", "sub", "jti", "sid"], Value::is_string)
        && typed(&["exp", "nbf", "iat"], Value::is_number)
}

/// The JOSE header: `alg`, `kid`, `typ`, and whether `crit` is there. Read by the strict
/// reader (an object, no name twice); the members jsonwebtoken's `Header` types are
/// type-checked the same way (a token it refused stays refused) without building its
/// `Header`; `jwk` is never used, so any value is ignored.
pub(crate) struct LightHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Typ,
    /// A `crit` member is present.
    pub crit: bool,
}

pub(crate) fn light_header(token: &str) -> Result<LightHeader, DenyReason> {
    use std::borrow::Cow;
    type Text<'a> = Option<Cow<'a, str>>;
    #[derive(serde::Deserialize)]
    #[allow(dead_code)] // `cty` to `nonce` are read only to type-check them.
    struct Raw<'a> {
        #[serde(borrow)]
        alg: Cow<'a, str>,
        #[serde(borrow, default)]
        kid: Text<'a>,
        #[serde(borrow, default)]
        cty: Text<'a>,
        #[serde(borrow, default)]
        jku: Text<'a>,
        #[serde(borrow, default)]
        x5u: Text<'a>,
        #[serde(borrow, default)]
        x5c: Option<Vec<Cow<'a, str>>>,
        #[serde(borrow, default)]
        x5t: Text<'a>,
        #[serde(borrow, default, rename = "x5t#S256")]
        x5t_s256: Text<'a>,
        #[serde(borrow, default)]
        enc: Text<'a>,
        #[serde(borrow, default)]
        zip: Text<'a>,
        #[serde(borrow, default)]
        url: Text<'a>,
        #[serde(borrow, default)]
        nonce: Text<'a>,
    }
    let segment = token.split('.').next().ok_or(DenyReason::MalformedToken)?;
    let members = Value::Object(json::segment(segment).map_err(|_| DenyReason::MalformedToken)?);
    let raw = Raw::deserialize(&members).map_err(|_| DenyReason::MalformedToken)?;
    let present = |name: &str| members.get(name).is_some();
    // RFC 7797 (unencoded payload): not implemented, so refused whatever its value.
    if present("b64") {
        return Err(DenyReason::MalformedToken);
    }
    // `none`, `None`, `HS1`...: not an algorithm gatepass knows.
    let alg = Algorithm::from_str(&raw.alg).map_err(|_| DenyReason::AlgorithmNotAllowed)?;
    Ok(LightHeader {
        alg,
        kid: raw.kid.map(|k| k.into_owned()),
        typ: Typ::of(members.get("typ")),
        crit: present("crit"),
    })
}

fn map_error(kind: &ErrorKind) -> DenyReason {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => DenyReason::BadSignature,
        ErrorKind::ExpiredSignature => DenyReason::Expired,
        ErrorKind::ImmatureSignature => DenyReason::NotYetValid,
        ErrorKind::InvalidIssuer => DenyReason::WrongIssuer,
        ErrorKind::InvalidAudience => DenyReason::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            DenyReason::MissingClaim
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => DenyReason::AlgorithmNotAllowed,
        _ => DenyReason::MalformedToken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A claim value of every shape a token can put there (`None`: absent).
    fn claim(now: i64) -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            // Well inside or well outside a 30 s leeway, never on its edge.
            prop_oneof![Just(-3600i64), Just(-10), Just(10), Just(3600)]
                .prop_map(move |d| Some(json!(now + d))),
            Just(Some(json!((now + 3600) as f64 + 0.4))),
            Just(Some(json!(-5))),
            Just(Some(json!("https://i"))),
            Just(Some(json!("https://other"))),
            Just(Some(json!(["x", "https://i"]))),
            Just(Some(json!(["x", 1]))),
            Just(Some(json!([]))),
            Just(Some(json!({"a": 1}))),
        ]
    }

    /// A verifier with one HS256 issuer (`https://t.test`) and a runtime to call it on.
    struct TestVerifier {
        verifier: Verifier,
        rt: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
    }

    impl TestVerifier {
        fn block_on_verify(&self, token: &str) -> Result<Verified, DenyReason> {
            self.rt.block_on(self.verifier.verify_uncached(token))
        }
    }

    fn verifier(secret: &str) -> TestVerifier {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("hs.key");
        std::fs::write(&key, secret).unwrap();
        let text = format!(
            "[[issuers]]\nname = \"t\"\nissuer = \"https://t.test\"\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\n",
            key.display()
        );
        let config = Config::parse(&text).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let verifier = rt.block_on(async { Verifier::new(&config, &Metrics::new()).unwrap() });
        TestVerifier {
            verifier,
            rt,
            _dir: dir,
        }
    }

    proptest! {
        /// The registered-claim checks decide as `jsonwebtoken::decode` does with the same
        /// `Validation`, for every shape of `exp`, `nbf`, `iss` and `aud`.
        #[test]
        fn registered_claims_decide_as_jsonwebtoken(
            exp in claim(now_secs() as i64),
            nbf in claim(now_secs() as i64),
            iss in claim(now_secs() as i64),
            aud in claim(now_secs() as i64),
            with_aud in any::<bool>(),
        ) {
            let mut claims = Map::new();
            for (name, v) in [("exp", exp), ("nbf", nbf), ("iss", iss), ("aud", aud)] {
                if let Some(v) = v {
                    claims.insert(name.into(), v);
                }
            }
            let mut rules = Validation::new(Algorithm::HS256);
            rules.leeway = 30;
            rules.validate_nbf = true;
            rules.set_issuer(&["https://i"]);
            if with_aud {
                rules.set_audience(&["https://i"]);
                rules.set_required_spec_claims(&["exp", "iss", "aud"]);
            } else {
                rules.validate_aud = false;
                rules.set_required_spec_claims(&["exp", "iss"]);
            }
            let secret = b"0123456789abcdef0123456789abcdef";
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
            )
            .unwrap();
            let key = jsonwebtoken::DecodingKey::from_secret(secret).unwrap();
            let theirs = match jsonwebtoken::decode::<Map<String, Value>>(&token, &key, &rules) {
                Ok(_) => Ok(()),
                // An array or object as `exp`/`nbf` derails jsonwebtoken's whole claims parse
                // ("malformed token"); here it is that claim that is malformed.
                Err(e) if matches!(e.kind(), ErrorKind::Json(_)) => Err(DenyReason::MissingClaim),
                Err(e) => Err(map_error(e.kind())),
            };
            prop_assert_eq!(check_registered(&claims, &rules, now_secs()), theirs, "{:?}", claims);
        }
    }

    /// A JSON value as text with `{"k":A,"k":B}` (or, for the control, `"k"` and `"k2"`)
    /// nested `depth` levels deep in arrays and objects.
    fn nested_pair(repeat: bool) -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<i16>().prop_map(|n| n.to_string()),
            "[a-z]{0,3}".prop_map(|s| format!("\"{s}\"")),
            Just("[]".to_string()),
            Just("{}".to_string()),
        ];
        let second = if repeat { "k" } else { "k2" };
        (
            leaf.clone(),
            leaf,
            proptest::collection::vec(any::<bool>(), 0..4),
        )
            .prop_map(move |(a, b, wrappers)| {
                let mut doc = format!(r#"{{"k":{a},"{second}":{b}}}"#);
                for array in wrappers {
                    doc = if array {
                        format!("[1,{doc}]")
                    } else {
                        format!(r#"{{"w":{doc}}}"#)
                    };
                }
                doc
            })
    }

    proptest! {
        /// SPEC §3.9: any document with a repeated member name at any depth, placed in the
        /// JOSE header or in the claims set of a well-signed token, is refused as malformed;
        /// the same document without the repeat passes.
        #[test]
        fn repeated_names_anywhere_in_a_token_are_refused(
            (repeat, doc) in any::<bool>().prop_flat_map(|r| (Just(r), nested_pair(r))),
            in_header in any::<bool>(),
        ) {
            let secret = "proptest-secret-0123456789abcdef0123";
            let now = now_secs();
            let claims = format!(r#"{{"sub":"u","iss":"https://t.test","exp":{}"#, now + 600);
            let (header, payload) = if in_header {
                (format!(r#"{{"alg":"HS256","ext":{doc}}}"#), format!("{claims}}}"))
            } else {
                (r#"{"alg":"HS256"}"#.to_string(), format!(r#"{claims},"ext":{doc}}}"#))
            };
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&header),
                URL_SAFE_NO_PAD.encode(&payload)
            );
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
            let sig = aws_lc_rs::hmac::sign(&key, message.as_bytes());
            let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
            let got = verifier(secret).block_on_verify(&token);
            if repeat {
                prop_assert_eq!(got.err(), Some(DenyReason::MalformedToken), "{} {}", header, payload);
            } else {
                prop_assert!(got.is_ok(), "{} {}: {:?}", header, payload, got.err());
            }
        }
    }

    #[test]
    fn hmac_signatures_decide_as_jsonwebtoken() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        let key = VerifyKey {
            kid: None,
            key: jsonwebtoken::DecodingKey::from_secret(secret).unwrap(),
            validation,
            hmac: Some(keys::HmacKeys::new(secret)),
        };
        // A key verifies only the algorithms it is allowed, whatever the caller asks.
        let hs256_only = VerifyKey {
            validation: Validation::new(Algorithm::HS256),
            ..key.clone()
        };
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(alg),
                &json!({"sub": "u"}),
                &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
            )
            .unwrap();
            let (message, sig) = token.rsplit_once('.').unwrap();
            let want = if alg == Algorithm::HS256 {
                Ok(())
            } else {
                Err(DenyReason::AlgorithmNotAllowed)
            };
            assert_eq!(
                signature_ok(&hs256_only, alg, message, sig),
                want,
                "{alg:?}"
            );
            let other = if sig.starts_with('A') { "B" } else { "A" };
            let long = "A".repeat(200);
            for (sig, want) in [
                (sig.to_string(), Some(Ok(()))),
                (
                    format!("{other}{}", &sig[1..]),
                    Some(Err(DenyReason::BadSignature)),
                ),
                (String::new(), Some(Err(DenyReason::BadSignature))),
                (long, Some(Err(DenyReason::BadSignature))),
                (format!("{sig}="), Some(Err(DenyReason::MalformedToken))),
                (sig[..sig.len() - 4].to_string(), None),
                (sig[..sig.len() - 1].to_string(), None),
            ] {
                let theirs =
                    match jsonwebtoken::crypto::verify(&sig, message.as_bytes(), &key.key, alg) {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(DenyReason::BadSignature),
                        Err(e) => Err(map_error(e.kind())),
                    };
                if let Some(want) = want {
                    assert_eq!(theirs, want, "{alg:?} {sig}");
                }
                assert_eq!(
                    signature_ok(&key, alg, message, &sig),
                    theirs,
                    "{alg:?} {sig}"
                );
            }
        }
    }
}
