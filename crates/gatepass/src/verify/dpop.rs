//! Sender-constrained tokens (SPEC §10): DPoP proofs (RFC 9449) checked against the request
//! Traefik describes, the RFC 7638 key thumbprint, stateless nonces, and the certificate
//! thumbprint of mTLS-bound tokens (RFC 8705).
//!
//! A proof is checked in two halves so that the cheap checks answer first: [`Dpop::inspect`]
//! (parsing, header, key, claims, method, URL, time, `ath`, nonce: no signature) runs before
//! the token is verified; [`Dpop::confirm`] (the binding to the token's `cnf.jkt`, the
//! issuer's algorithms, the signature, then the one shared-state call for `jti`) after.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::{hmac, signature};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use gatepass_service::digest::sha256;
use gatepass_service::state::RedisState;
use serde_json::{Map, Value};

use crate::config::{Binding, Config, ConfigError, IssuerConfig};
use crate::policy::deny::DenyReason;
use crate::verify::json;
use crate::verify::replay::Replays;
use crate::verify::typ::Typ;
use crate::verify::verified::Cnf;

/// The longest `jti` a proof may carry (SPEC §10).
pub const MAX_JTI: usize = 256;

/// How many proof `jti`s one process remembers (the Redis backend has no such bound).
const LOCAL_JTIS: usize = 1_000_000;

/// A proof signature algorithm (asymmetric only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofAlg {
    Es256,
    Es384,
    EdDsa,
    Ed25519,
    Ps256,
    Ps384,
    Ps512,
    Rs256,
    Rs384,
    Rs512,
}

impl ProofAlg {
    const ALL: [ProofAlg; 10] = [
        ProofAlg::Es256,
        ProofAlg::Es384,
        ProofAlg::EdDsa,
        ProofAlg::Ed25519,
        ProofAlg::Ps256,
        ProofAlg::Ps384,
        ProofAlg::Ps512,
        ProofAlg::Rs256,
        ProofAlg::Rs384,
        ProofAlg::Rs512,
    ];

    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            ProofAlg::Es256 => "ES256",
            ProofAlg::Es384 => "ES384",
            ProofAlg::EdDsa => "EdDSA",
            ProofAlg::Ed25519 => "Ed25519",
            ProofAlg::Ps256 => "PS256",
            ProofAlg::Ps384 => "PS384",
            ProofAlg::Ps512 => "PS512",
            ProofAlg::Rs256 => "RS256",
            ProofAlg::Rs384 => "RS384",
            ProofAlg::Rs512 => "RS512",
        }
    }

    pub fn parse(name: &str) -> Option<ProofAlg> {
        ProofAlg::ALL.into_iter().find(|a| a.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// The key type (and curve) a key for this algorithm must have.
    fn family(self) -> Family {
        match self {
            ProofAlg::Es256 => Family::Ec("P-256", 32),
            ProofAlg::Es384 => Family::Ec("P-384", 48),
            ProofAlg::EdDsa | ProofAlg::Ed25519 => Family::Okp,
            _ => Family::Rsa,
        }
    }
}

enum Family {
    /// Curve name and coordinate length.
    Ec(&'static str, usize),
    /// Ed25519.
    Okp,
    Rsa,
}

/// A set of proof algorithms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlgSet(u16);

impl AlgSet {
    /// The set of the names the config validated (unknown names are left out).
    pub fn of(names: &[&str]) -> AlgSet {
        AlgSet(
            names
                .iter()
                .filter_map(|n| ProofAlg::parse(n))
                .fold(0, |set, a| set | a.bit()),
        )
    }

    pub fn contains(self, alg: ProofAlg) -> bool {
        self.0 & alg.bit() != 0
    }

    pub fn union(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 | other.0)
    }

    /// The names, space-separated (a challenge's `algs`).
    pub fn names(self) -> String {
        ProofAlg::ALL
            .into_iter()
            .filter(|a| self.contains(*a))
            .map(ProofAlg::name)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// An issuer's binding settings (SPEC §10).
#[derive(Debug, Clone, Copy, Default)]
pub struct BindingPolicy {
    pub dpop: Binding,
    pub mtls: Binding,
    /// The algorithms its tokens' proofs may use.
    pub dpop_algs: AlgSet,
}

impl BindingPolicy {
    pub fn of(ic: &IssuerConfig) -> BindingPolicy {
        BindingPolicy {
            dpop: ic.dpop,
            mtls: ic.mtls_bound,
            dpop_algs: match ic.dpop {
                Binding::Off => AlgSet::default(),
                _ => AlgSet::of(&ic.dpop_algorithms()),
            },
        }
    }

    /// What the token's own `cnf` allows, whatever the request: a binding the issuer's
    /// settings are off for is refused (never downgraded to a bearer token), and so is a
    /// missing one they require.
    pub fn check(&self, cnf: &Cnf) -> Result<(), DenyReason> {
        let off = |b: Binding| b == Binding::Off;
        if cnf.unknown
            || (cnf.jkt.is_some() && off(self.dpop))
            || (cnf.x5t_s256.is_some() && off(self.mtls))
        {
            return Err(DenyReason::BindingNotAccepted);
        }
        if self.dpop == Binding::Required && cnf.jkt.is_none() {
            return Err(DenyReason::DpopUnbound);
        }
        if self.mtls == Binding::Required && cnf.x5t_s256.is_none() {
            return Err(DenyReason::CertificateRequired);
        }
        Ok(())
    }
}

/// The request a proof must name: its method and its normalised URL ([`normalize_htu`]).
pub struct Target<'a> {
    pub method: &'a str,
    pub url: String,
}

impl<'a> Target<'a> {
    /// `<proto>://<host><path>` of the request (query dropped); `None` when it is no URL.
    pub fn of(method: &'a str, proto: &str, host: &str, path: &str) -> Option<Target<'a>> {
        let url = normalize_htu(&format!("{proto}://{host}{path}"))?;
        Some(Target { method, url })
    }
}

/// A proof header that passed its checks: its algorithm, its key ready to verify with, and
/// the key's RFC 7638 thumbprint. Kept per header text: a client's proofs all carry the same
/// header (`typ`, `alg`, `jwk`), so it is parsed and its key decoded once.
struct ProofKey {
    alg: ProofAlg,
    key: VerifyingKey,
    jkt: String,
}

enum VerifyingKey {
    /// EC and Ed25519 keys, parsed once by aws-lc.
    Parsed(signature::ParsedPublicKey),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

/// Checked proof headers, by their base64url text.
type HeaderCache = quick_cache::sync::Cache<
    String,
    Arc<ProofKey>,
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

/// How many distinct proof headers (client keys) one process keeps parsed.
const HEADERS: usize = 10_000;

/// A proof that passed the cheap checks; its signature and `jti` are not checked yet.
pub struct Proof<'a> {
    key: Arc<ProofKey>,
    /// `header.payload`, what the signature covers.
    message: &'a str,
    signature: &'a str,
    /// Digest of the key's thumbprint and the `jti` (the value itself is never stored).
    jti: [u8; 32],
}

impl Proof<'_> {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key.
    pub fn jkt(&self) -> &str {
        &self.key.jkt
    }
}

/// Stateless nonces: an HMAC of the time step, good for that step and the next.
struct Nonces {
    key: hmac::Key,
    step: u64,
}

impl Nonces {
    fn at(&self, step: u64) -> String {
        let tag = hmac::sign(&self.key, &step.to_be_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..18])
    }

    fn current(&self, now: u64) -> String {
        self.at(now / self.step)
    }

    fn valid(&self, nonce: &str, now: u64) -> bool {
        let step = now / self.step;
        [step, step.saturating_sub(1)].into_iter().any(|s| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                self.at(s).as_bytes(),
                nonce.as_bytes(),
            )
            .is_ok()
        })
    }
}

/// DPoP proof checking, built when any issuer has `dpop` on.
pub struct Dpop {
    /// Every issuer's algorithms: what a proof may use before its token is known.
    algs: AlgSet,
    /// `algs`, as a challenge names them.
    pub algs_text: Arc<str>,
    /// `iat_window`, in seconds.
    window: u64,
    nonces: Option<Nonces>,
    replays: Arc<Replays>,
    headers: HeaderCache,
}

impl Dpop {
    /// `None` when no issuer accepts DPoP-bound tokens. `kept`: the used `jti`s of the
    /// state this one replaces.
    pub fn new(
        config: &Config,
        redis: Option<Arc<RedisState>>,
        kept: Option<Arc<Replays>>,
    ) -> Result<Option<Dpop>, ConfigError> {
        if !config.dpop_enabled() {
            return Ok(None);
        }
        let algs = config
            .issuers
            .iter()
            .map(|i| BindingPolicy::of(i).dpop_algs)
            .fold(AlgSet::default(), AlgSet::union);
        let nonces = match (&config.dpop.nonce, &config.dpop.nonce_secret_file) {
            (true, Some(file)) => {
                let secret = config.read_secret("dpop.nonce_secret_file", file, 32)?;
                Some(Nonces {
                    key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
                    step: config.dpop.nonce_step.0.as_secs().max(1),
                })
            }
            _ => None,
        };
        let window = config.dpop.iat_window.0.as_secs();
        let remember = Duration::from_secs(2 * window);
        Ok(Some(Dpop {
            algs,
            algs_text: algs.names().into(),
            window,
            nonces,
            replays: kept.unwrap_or_else(|| {
                Arc::new(Replays::new(
                    redis, "dpop-jti", "dpop_jti", remember, LOCAL_JTIS,
                ))
            }),
            headers: HeaderCache::with(
                HEADERS,
                HEADERS as u64,
                quick_cache::UnitWeighter,
                foldhash::fast::RandomState::default(),
                Default::default(),
            ),
        }))
    }

    /// The used `jti`s, to keep across a reload.
    pub fn replays(&self) -> Arc<Replays> {
        self.replays.clone()
    }

    /// The nonce to hand out now (`DPoP-Nonce`), when nonces are on.
    pub fn nonce(&self, now: u64) -> Option<String> {
        self.nonces.as_ref().map(|n| n.current(now))
    }

    /// The checks that need no signature, in the order that answers cheapest first: the
    /// header (`typ`, `alg`, a public `jwk` that fits `alg`), the claims, `htm`, `htu`,
    /// `iat`, `ath`, and the nonce.
    pub fn inspect<'p>(
        &self,
        proof: &'p str,
        token: &str,
        target: &Target<'_>,
        now: u64,
    ) -> Result<Proof<'p>, DenyReason> {
        if !crate::verify::token::is_jws(proof) {
            return Err(DenyReason::DpopProofMalformed);
        }
        let (message, signature) = proof
            .rsplit_once('.')
            .ok_or(DenyReason::DpopProofMalformed)?;
        let (header, payload) = message
            .split_once('.')
            .ok_or(DenyReason::DpopProofMalformed)?;
        let key = match self.headers.get(header) {
            Some(k) => k,
            None => {
                let k = Arc::new(self.header_key(header)?);
                self.headers.insert(header.to_owned(), k.clone());
                k
            }
        };

        let claims = object(payload)?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let (Some(jti), Some(htm), Some(htu), Some(iat)) = (
            text("jti"),
            text("htm"),
            text("htu"),
            claims.get("iat").and_then(Value::as_u64),
        ) else {
            return Err(DenyReason::DpopProofClaims);
        };
        if jti.is_empty() || jti.chars().count() > MAX_JTI {
            return Err(DenyReason::DpopProofClaims);
        }
        if htm != target.method {
            return Err(DenyReason::DpopProofMethod);
        }
        if normalize_htu(htu).as_deref() != Some(target.url.as_str()) {
            return Err(DenyReason::DpopProofUrl);
        }
        if iat.abs_diff(now) > self.window {
            return Err(DenyReason::DpopProofTime);
        }
        // Compared decoded: no encoding of the digest per request.
        let mut ath = [0u8; 32];
        let decoded = text("ath").and_then(|a| URL_SAFE_NO_PAD.decode_slice(a, &mut ath).ok());
        if decoded != Some(32) || ath != sha256(token.as_bytes()) {
            return Err(DenyReason::DpopProofAth);
        }
        if let Some(nonces) = &self.nonces {
            if !text("nonce").is_some_and(|n| nonces.valid(n, now)) {
                return Err(DenyReason::DpopNonceRequired);
            }
        }
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        digest.update(key.jkt.as_bytes());
        digest.update(b"\n");
        digest.update(jti.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.finish().as_ref());
        Ok(Proof {
            key,
            message,
            signature,
            jti: id,
        })
    }

    /// The header's checks (`typ`, no `crit`, `alg` among every issuer's, a public `jwk` that
    /// fits `alg`) and its key, ready to verify with.
    fn header_key(&self, header: &str) -> Result<ProofKey, DenyReason> {
        let header = object(header)?;
        if Typ::of(header.get("typ")) != Typ::DpopJwt {
            return Err(DenyReason::DpopProofType);
        }
        // RFC 7515 §4.1.11: no extension is implemented.
        if header.contains_key("crit") {
            return Err(DenyReason::DpopProofMalformed);
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(ProofAlg::parse)
            .filter(|a| self.algs.contains(*a))
            .ok_or(DenyReason::DpopProofAlgorithm)?;
        let jwk = header
            .get("jwk")
            .and_then(Value::as_object)
            .ok_or(DenyReason::DpopProofKey)?;
        let (key, jkt) = public_key(jwk, alg).ok_or(DenyReason::DpopProofKey)?;
        Ok(ProofKey { alg, key, jkt })
    }

    /// The rest, once the token is verified: the proof's key is the one the token is bound
    /// to, its algorithm is one the token's issuer accepts, the signature holds, and its
    /// `jti` was never used in the cluster (remembered for 2 × `iat_window`).
    pub async fn confirm(
        &self,
        proof: &Proof<'_>,
        cnf: &Cnf,
        issuer_algs: AlgSet,
    ) -> Result<(), DenyReason> {
        let Some(jkt) = &cnf.jkt else {
            return Err(DenyReason::DpopUnbound);
        };
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            jkt.as_bytes(),
            proof.key.jkt.as_bytes(),
        )
        .is_err()
        {
            return Err(DenyReason::DpopKeyMismatch);
        }
        if !issuer_algs.contains(proof.key.alg) {
            return Err(DenyReason::DpopProofAlgorithm);
        }
        if !proof.signature_ok() {
            return Err(DenyReason::DpopProofSignature);
        }
        let remember = Duration::from_secs(2 * self.window);
        match self.replays.first_use(&proof.jti, remember, true).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(DenyReason::DpopProofReplayed),
            Err(_) => Err(DenyReason::StateUnavailable),
        }
    }
}

impl Proof<'_> {
    fn signature_ok(&self) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(self.signature) else {
            return false;
        };
        let msg = self.message.as_bytes();
        match &self.key.key {
            VerifyingKey::Parsed(k) => k.verify_sig(msg, &sig).is_ok(),
            VerifyingKey::Rsa { n, e } => {
                let params: &signature::RsaParameters = match self.key.alg {
                    ProofAlg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    ProofAlg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    ProofAlg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    ProofAlg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    ProofAlg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, &sig)
                    .is_ok()
            }
        }
    }
}

/// A proof's header or claims, by the strict reader (no repeated names, non-negative times).
fn object(segment: &str) -> Result<Map<String, Value>, DenyReason> {
    json::segment(segment)
        .ok()
        .filter(json::times_ok)
        .ok_or(DenyReason::DpopProofMalformed)
}

/// Members only a private (or symmetric) key has.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The public key of a proof's `jwk` and its RFC 7638 thumbprint; `None` when the key has a
/// private member, does not fit `alg` (`kty`, `crv`, sizes), or is not base64url.
fn public_key(jwk: &Map<String, Value>, alg: ProofAlg) -> Option<(VerifyingKey, String)> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return None;
    }
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| text(name).and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
    let kty = text("kty")?;
    // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
    let (key, canonical) = match alg.family() {
        Family::Ec(crv, len) => {
            if kty != "EC" || text("crv")? != crv {
                return None;
            }
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != len || y.len() != len {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let canonical = format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                text("x")?,
                text("y")?
            );
            let verify: &'static dyn signature::VerificationAlgorithm = match alg {
                ProofAlg::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
                _ => &signature::ECDSA_P256_SHA256_FIXED,
            };
            let parsed = signature::ParsedPublicKey::new(verify, &point).ok()?;
            (VerifyingKey::Parsed(parsed), canonical)
        }
        Family::Okp => {
            if kty != "OKP" || text("crv")? != "Ed25519" {
                return None;
            }
            let x = bytes("x")?;
            if x.len() != 32 {
                return None;
            }
            let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, text("x")?);
            let parsed = signature::ParsedPublicKey::new(&signature::ED25519, &x).ok()?;
            (VerifyingKey::Parsed(parsed), canonical)
        }
        Family::Rsa => {
            let (n, e) = (bytes("n")?, bytes("e")?);
            // 2048 bits at least, as the verification itself demands.
            if kty != "RSA" || n.len() < 256 || e.is_empty() {
                return None;
            }
            let canonical = format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                text("e")?,
                text("n")?
            );
            (VerifyingKey::Rsa { n, e }, canonical)
        }
    };
    Some((key, thumbprint(&canonical)))
}

/// The SHA-256 thumbprint (base64url) of a JWK's canonical form.
fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(canonical.as_bytes()))
}

/// RFC 3986 §6.2.2 normalisation of an `htu` (and of the request's URL) for comparison:
/// query and fragment dropped, scheme and host lower-cased (`ws`/`wss` are `http`/`https`),
/// the default port dropped, percent-encoding normalised (upper-case hex, unreserved
/// characters decoded), dot-segments removed, an empty path is `/`. `None` for anything that
/// is not an absolute http(s) URL without user info.
pub fn normalize_htu(url: &str) -> Option<String> {
    let url = &url[..url.find(['?', '#']).unwrap_or(url.len())];
    let (scheme, rest) = url.split_once("://")?;
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ("http", 80),
        "https" | "wss" => ("https", 443),
        _ => return None,
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (&authority[..h.len() + 2], after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => {
            let p: u32 = p.parse().ok()?;
            (p != default_port).then_some(p)
        }
        Some(_) => return None,
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(&host.to_ascii_lowercase());
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p.to_string());
    }
    out.push_str(&remove_dot_segments(&normalize_percent(path)?));
    Some(out)
}

/// Percent-encoding normalised: hex digits upper-cased, unreserved characters decoded.
/// `None` for a `%` without two hex digits, or a byte that has no place in a URI.
fn normalize_percent(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
                let byte = (hex(i + 1)? << 4 | hex(i + 2)?) as u8;
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(byte as char);
                } else {
                    out.push_str(&format!("%{byte:02X}"));
                }
                i += 3;
            }
            c if c.is_ascii_graphic() => {
                out.push(c as char);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// RFC 3986 §5.2.4 for an absolute path (an empty one is `/`).
fn remove_dot_segments(path: &str) -> String {
    let Some(rest) = path.strip_prefix('/') else {
        return "/".into();
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *s {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        // A final `.` or `..` leaves the path ending in `/`.
        if last {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

/// The SHA-256 thumbprint (base64url) of the leaf of the certificate chain Traefik passes in
/// `X-Forwarded-Tls-Client-Cert`: each entry base64 DER, URL-escaped (Traefik query-escapes
/// `+`, `/` and `=`), leaf first, entries comma-separated; PEM armour tolerated. `None` when
/// the leaf is not base64.
pub fn certificate_thumbprint(header: &str) -> Option<String> {
    let leaf = header.split(',').next()?.trim();
    let leaf = percent_encoding::percent_decode_str(leaf)
        .decode_utf8()
        .ok()?;
    let leaf = leaf.trim();
    let leaf = leaf
        .strip_prefix("-----BEGIN CERTIFICATE-----")
        .and_then(|l| l.strip_suffix("-----END CERTIFICATE-----"))
        .unwrap_or(leaf);
    let b64: String = leaf.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(b64).ok().filter(|d| !d.is_empty())?;
    Some(URL_SAFE_NO_PAD.encode(sha256(&der)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 7638 §3.1's own example: an RSA key and its thumbprint.
    #[test]
    fn thumbprint_of_the_rfc_example() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let mut jwk = Map::new();
        jwk.insert("kty".into(), "RSA".into());
        jwk.insert("n".into(), n.into());
        jwk.insert("e".into(), "AQAB".into());
        jwk.insert("alg".into(), "RS256".into());
        jwk.insert("kid".into(), "2011-04-29".into());
        let (_, jkt) = public_key(&jwk, ProofAlg::Rs256).unwrap();
        assert_eq!(jkt, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        // Any private member refuses the key, whatever its value.
        for m in PRIVATE_MEMBERS {
            let mut k = jwk.clone();
            k.insert((*m).into(), "AQAB".into());
            assert!(public_key(&k, ProofAlg::Rs256).is_none(), "{m}");
        }
        // The key fits only its own family.
        assert!(public_key(&jwk, ProofAlg::Es256).is_none());
        assert!(public_key(&jwk, ProofAlg::EdDsa).is_none());
    }

    /// Keys must fit their algorithm exactly: curve, coordinate lengths, base64url.
    #[test]
    fn keys_must_fit_their_algorithm() {
        use aws_lc_rs::signature::KeyPair;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let p256 = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .unwrap();
        let point = p256.public_key().as_ref().to_vec();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..]),
        );
        let ec = |crv: &str, x: &str, y: &str| {
            let mut m = Map::new();
            m.insert("kty".into(), "EC".into());
            m.insert("crv".into(), crv.into());
            m.insert("x".into(), x.into());
            m.insert("y".into(), y.into());
            m
        };
        assert!(public_key(&ec("P-256", &x, &y), ProofAlg::Es256).is_some());
        assert!(public_key(&ec("P-384", &x, &y), ProofAlg::Es256).is_none());
        assert!(public_key(&ec("P-256", &x, &y), ProofAlg::Es384).is_none());
        assert!(public_key(&ec("P-256", &x, "AAAA"), ProofAlg::Es256).is_none());
        assert!(public_key(&ec("P-256", &format!("{x}="), &y), ProofAlg::Es256).is_none());
        // Right lengths, but not a point on the curve.
        assert!(public_key(&ec("P-256", &x, &x), ProofAlg::Es256).is_none());
        let ed = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(ed.public_key().as_ref());
        let mut okp = Map::new();
        okp.insert("kty".into(), "OKP".into());
        okp.insert("crv".into(), "Ed25519".into());
        okp.insert("x".into(), x.as_str().into());
        let (_, jkt) = public_key(&okp, ProofAlg::EdDsa).unwrap();
        assert_eq!(
            jkt,
            thumbprint(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#))
        );
        okp.insert("crv".into(), "Ed448".into());
        assert!(public_key(&okp, ProofAlg::EdDsa).is_none());
        // A small RSA modulus is refused before any signature check.
        let mut rsa = Map::new();
        rsa.insert("kty".into(), "RSA".into());
        rsa.insert("n".into(), URL_SAFE_NO_PAD.encode([0xC5u8; 128]).into());
        rsa.insert("e".into(), "AQAB".into());
        assert!(public_key(&rsa, ProofAlg::Rs256).is_none());
    }

    #[test]
    fn htu_normalisation() {
        let n = |u: &str| normalize_htu(u);
        let same = [
            ("https://app.test/api", "HTTPS://APP.test:443/api"),
            ("https://app.test/api", "wss://app.test/api?x=1#f"),
            ("http://app.test/", "ws://app.test:80"),
            ("http://app.test:8080/a/c", "http://app.test:8080/a/b/../c"),
            ("http://app.test/a/~b", "http://app.test/a/%7eb"),
            ("http://app.test/a%2Fb", "http://app.test/a%2fb"),
            ("http://app.test/a/", "http://app.test/a/."),
            ("http://[::1]:8080/x", "http://[::1]:8080/x"),
            ("http://[::1]/x", "http://[::1]:80/x"),
        ];
        for (a, b) in same {
            assert_eq!(n(a), n(b), "{a} vs {b}");
            assert!(n(a).is_some(), "{a}");
        }
        assert_eq!(n("HTTP://App.Test:80").as_deref(), Some("http://app.test/"));
        let different = [
            ("https://app.test/api", "http://app.test/api"),
            ("https://app.test/api", "https://app.test:8443/api"),
            ("https://app.test/api", "https://other.test/api"),
            ("https://app.test/api", "https://app.test/API"),
            ("https://app.test/a%2Fb", "https://app.test/a/b"),
        ];
        for (a, b) in different {
            assert_ne!(n(a), n(b), "{a} vs {b}");
        }
        for bad in [
            "ftp://app.test/",
            "//app.test/",
            "https://user@app.test/",
            "https:///x",
            "https://app.test:port/",
            "https://app.test/%zz",
            "https://app.test/a b",
            "https://app.test:999999/",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }

    #[test]
    fn nonces_last_their_step_and_the_next() {
        let n = Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, &[1u8; 32]),
            step: 60,
        };
        let issued = n.current(600);
        assert!(n.valid(&issued, 600));
        assert!(n.valid(&issued, 719));
        assert!(!n.valid(&issued, 720));
        assert!(!n.valid(&issued, 599));
        let other = Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, &[2u8; 32]),
            step: 60,
        };
        assert!(!other.valid(&issued, 600));
        assert!(!n.valid("", 600));
    }

    #[test]
    fn certificate_thumbprint_of_the_leaf() {
        let leaf = STANDARD.encode(b"leaf-der");
        let chain = format!("{leaf},{}", STANDARD.encode(b"ca-der"));
        let want = URL_SAFE_NO_PAD.encode(sha256(b"leaf-der"));
        assert_eq!(
            certificate_thumbprint(&leaf).as_deref(),
            Some(want.as_str())
        );
        assert_eq!(
            certificate_thumbprint(&chain).as_deref(),
            Some(want.as_str())
        );
        let pem = format!("-----BEGIN CERTIFICATE-----{leaf}-----END CERTIFICATE-----");
        assert_eq!(certificate_thumbprint(&pem).as_deref(), Some(want.as_str()));
        // As Traefik sends it: query-escaped.
        let escaped = STANDARD.encode([0xfb, 0xff, 0xbf, 0x01]);
        assert!(escaped.contains('+') && escaped.contains('/'));
        let want_escaped = URL_SAFE_NO_PAD.encode(sha256(&[0xfb, 0xff, 0xbf, 0x01]));
        let traefik = escaped
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(
            certificate_thumbprint(&format!("{traefik},{}", STANDARD.encode(b"ca"))).as_deref(),
            Some(want_escaped.as_str())
        );
        assert_eq!(certificate_thumbprint("not base64!"), None);
        assert_eq!(certificate_thumbprint(""), None);
    }

    /// A URL from parts the strategies vary.
    fn url_parts() -> impl Strategy<Value = (String, String, Vec<String>)> {
        (
            prop::sample::select(vec!["http", "https"]),
            "[a-z][a-z0-9-]{0,8}(\\.[a-z]{2,5}){1,2}",
            prop::collection::vec("[A-Za-z0-9._~-]{1,6}", 0..4),
        )
            .prop_map(|(s, h, p)| (s.to_string(), h, p))
    }

    /// A segment with some unreserved characters percent-encoded (in either case).
    fn encode_some(seg: &str, mask: u64) -> String {
        seg.bytes()
            .enumerate()
            .map(|(i, b)| match (mask >> (i % 64)) & 3 {
                1 => format!("%{b:02X}"),
                2 => format!("%{b:02x}"),
                _ => (b as char).to_string(),
            })
            .collect()
    }

    proptest! {
        /// Case, default port, encoded unreserved characters, query and fragment never change
        /// the normalised URL; the result normalises to itself.
        #[test]
        fn equivalent_spellings_normalise_alike(
            (scheme, host, path) in url_parts(),
            upper in any::<u64>(),
            mask in any::<u64>(),
            port in any::<bool>(),
            query in "[a-z=&]{0,8}",
        ) {
            let base = format!("{scheme}://{host}/{}", path.join("/"));
            let flip = |s: &str| s.chars().enumerate().map(|(i, c)| {
                if (upper >> (i % 64)) & 1 == 1 { c.to_ascii_uppercase() } else { c }
            }).collect::<String>();
            let default = if scheme == "http" { ":80" } else { ":443" };
            let variant = format!(
                "{}://{}{}/{}?{query}#frag",
                flip(&scheme),
                flip(&host),
                if port { default } else { "" },
                path.iter().map(|s| encode_some(s, mask)).collect::<Vec<_>>().join("/"),
            );
            let a = normalize_htu(&base);
            prop_assert!(a.is_some());
            prop_assert_eq!(&a, &normalize_htu(&variant));
            prop_assert_eq!(&a, &normalize_htu(a.as_deref().unwrap()));
        }

        /// A different path, host or scheme is a different URL.
        #[test]
        fn different_urls_stay_different(
            (scheme, host, path) in url_parts(),
            extra in "[a-z0-9]{1,6}",
        ) {
            let base = format!("{scheme}://{host}/{}", path.join("/"));
            let longer = format!("{base}/{extra}");
            let other_host = format!("{scheme}://{extra}.{host}/{}", path.join("/"));
            let other_scheme = base.replacen(&scheme, if scheme == "http" { "https" } else { "http" }, 1);
            for other in [longer, other_host, other_scheme] {
                prop_assert_ne!(normalize_htu(&base), normalize_htu(&other));
            }
        }
    }
}
