//! Access rules (SPEC §3.8): first match on host, path prefix (segment boundaries, decoded,
//! dot-segments removed) and method.

use crate::config::{ConfigError, EncodedClass, PathsConfig, Policy, RuleConfig};

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    host: Option<String>,
    segments: Vec<Vec<u8>>,
    methods: Option<Vec<String>>,
    /// Encoded as in the identity headers, so checks compare bytes without decoding.
    roles: Vec<String>,
    permissions: Vec<String>,
    pub anonymous: bool,
    /// `Mcp-Method` values it matches (none: any request).
    mcp_methods: Option<Vec<String>>,
    /// `Mcp-Name` values it matches (none: any request).
    mcp_names: Option<Vec<String>>,
    /// The configured path, for logs.
    pub path: String,
}

/// The MCP operation a request names in its transport headers (MCP 2026-07-28).
#[derive(Debug, Clone, Copy, Default)]
pub struct McpOp<'a> {
    /// `Mcp-Method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name`.
    pub name: Option<&'a str>,
    /// `MCP-Protocol-Version`.
    pub version: Option<&'a str>,
}

/// The first MCP protocol revision whose servers check `Mcp-Method`/`Mcp-Name` against the
/// body: rules on those headers are only safe from it on.
pub const MCP_HEADERS_SINCE: &str = "2026-07-28";

impl McpOp<'_> {
    /// The request declares a protocol revision whose server checks the MCP headers against
    /// the body. Revisions are dates (`YYYY-MM-DD`), so they compare as text.
    pub fn version_checks_headers(&self) -> bool {
        self.version.is_some_and(|v| {
            v.len() == MCP_HEADERS_SINCE.len()
                && v.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && v >= MCP_HEADERS_SINCE
        })
    }
}

/// A rule that does not compile: the key within the rule, and what is wrong.
#[derive(Debug)]
pub struct RuleError {
    pub key: &'static str,
    pub message: String,
}

fn rule_error(key: &'static str, message: &str) -> RuleError {
    RuleError {
        key,
        message: message.into(),
    }
}

impl Rule {
    pub fn compile(c: &RuleConfig) -> Result<Rule, RuleError> {
        if !c.path.starts_with('/') {
            return Err(rule_error("path", "must start with `/`"));
        }
        if c.path.contains(['?', '#']) {
            return Err(rule_error("path", "must not contain `?` or `#`"));
        }
        if c.anonymous && (!c.roles.is_empty() || !c.permissions.is_empty()) {
            return Err(rule_error(
                "anonymous",
                "an anonymous rule cannot also require roles or permissions",
            ));
        }
        if let Some(m) = &c.methods {
            if m.is_empty()
                || m.iter()
                    .any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
            {
                return Err(rule_error("methods", "must list HTTP methods like GET"));
            }
        }
        for (key, list) in [("mcp_methods", &c.mcp_methods), ("mcp_names", &c.mcp_names)] {
            if let Some(l) = list {
                if l.is_empty()
                    || l.iter()
                        .any(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()))
                {
                    return Err(rule_error(
                        key,
                        "must list values like tools/call or set_note (visible ASCII)",
                    ));
                }
            }
        }
        if c.anonymous && (c.mcp_methods.is_some() || c.mcp_names.is_some()) {
            return Err(rule_error(
                "anonymous",
                "an anonymous rule cannot match MCP operations (nothing would check the headers)",
            ));
        }
        let host = match &c.host {
            Some(h) if h.is_empty() || h.contains(['/', ' ']) => {
                return Err(rule_error(
                    "host",
                    "must be a host name like app.example.com",
                ))
            }
            // Compared like the request's host: lower case, without one trailing dot.
            Some(h) => Some(normalize_host(h).to_ascii_lowercase()),
            None => None,
        };
        Ok(Rule {
            host,
            segments: normalize_path(&c.path),
            methods: c
                .methods
                .as_ref()
                .map(|m| m.iter().map(|s| s.to_ascii_uppercase()).collect()),
            roles: c
                .roles
                .iter()
                .map(|r| gatepass_identity::encode_value(r))
                .collect(),
            permissions: c
                .permissions
                .iter()
                .map(|p| gatepass_identity::encode_value(p))
                .collect(),
            anonymous: c.anonymous,
            mcp_methods: c.mcp_methods.clone(),
            mcp_names: c.mcp_names.clone(),
            path: c.path.clone(),
        })
    }

    fn matches(
        &self,
        host: &str,
        segments: &Segments<'_>,
        method: &str,
        mcp: &McpOp<'_>,
        fold: bool,
    ) -> bool {
        if let Some(h) = &self.host {
            if !h.eq_ignore_ascii_case(host) {
                return false;
            }
        }
        if let Some(ms) = &self.methods {
            if !ms.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                return false;
            }
        }
        // Exact, case-sensitive: MCP method and tool names are.
        let listed = |list: &Option<Vec<String>>, v: Option<&str>| match list {
            None => true,
            Some(l) => v.is_some_and(|v| l.iter().any(|x| x == v)),
        };
        if !listed(&self.mcp_methods, mcp.method) || !listed(&self.mcp_names, mcp.name) {
            return false;
        }
        segments.starts_with(&self.segments, fold)
    }

    /// The rule matches on MCP headers.
    pub fn matches_mcp(&self) -> bool {
        self.mcp_methods.is_some() || self.mcp_names.is_some()
    }

    /// The rule's permissions, space-separated (a challenge's `scope`); `None` when it needs
    /// none.
    pub fn scope(&self) -> Option<String> {
        (!self.permissions.is_empty()).then(|| {
            self.permissions
                .iter()
                .map(|p| gatepass_identity::decode_value(p).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ")
        })
    }

    /// Any of the rule's roles; `role` is the encoded `X-User-Role` value.
    pub fn role_ok(&self, role: &[u8]) -> bool {
        self.roles.is_empty() || self.roles.iter().any(|r| r.as_bytes() == role)
    }

    /// All of the rule's permissions; `have` is the encoded `X-User-Permissions` value.
    pub fn permissions_ok(&self, have: &[u8]) -> bool {
        self.permissions
            .iter()
            .all(|p| have.split(|b| *b == b',').any(|h| h == p.as_bytes()))
    }
}

/// An OAuth protected resource (SPEC §8): the requests under its path.
#[derive(Debug, Clone)]
pub struct Resource {
    pub config: crate::config::ResourceConfig,
    segments: Vec<Vec<u8>>,
    /// The metadata path: `/.well-known/oauth-protected-resource` + `path`.
    pub metadata_path: String,
    /// The metadata document, built once.
    pub metadata: String,
    /// A rule under (or above) its path matches on MCP headers: requests need a protocol
    /// revision whose server checks them (SPEC §10).
    pub mcp_guard: bool,
}

/// The rule set with the default policy.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    resources: Vec<Resource>,
    default_policy: Policy,
    default_rule: Rule,
    allow: AllowEncoded,
    /// `[paths] case_insensitive`: path prefixes compared ignoring ASCII case.
    fold: bool,
}

/// What applies to a request.
pub enum Matched<'a> {
    Rule(&'a Rule),
    DefaultDeny,
}

impl Rules {
    /// Compiles every rule; the first one that does not compile is an error (never skipped:
    /// a dropped rule would let its requests fall through to a weaker one).
    pub fn compile(
        configs: &[RuleConfig],
        default_policy: Policy,
        paths: &PathsConfig,
    ) -> Result<Rules, ConfigError> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Rule::compile(c)
                    .map_err(|e| ConfigError::new(format!("rules[{i}].{}", e.key), e.message))
            })
            .collect::<Result<_, _>>()?;
        Ok(Rules {
            rules,
            resources: Vec::new(),
            default_policy,
            allow: AllowEncoded::new(&paths.allow_encoded),
            fold: paths.case_insensitive,
            default_rule: Rule {
                host: None,
                segments: Vec::new(),
                methods: None,
                roles: Vec::new(),
                permissions: Vec::new(),
                anonymous: false,
                mcp_methods: None,
                mcp_names: None,
                path: "(default)".into(),
            },
        })
    }

    /// Adds the protected resources (validated by the config); `dpop` gives the DPoP members
    /// of a resource's metadata from its authorization servers (SPEC §10).
    pub fn with_resources(
        mut self,
        resources: &[crate::config::ResourceConfig],
        dpop: impl Fn(&[String]) -> Option<DpopMetadata>,
    ) -> Rules {
        let resources = resources
            .iter()
            .map(|c| {
                let path = c.path.trim_end_matches('/');
                let segments = normalize_path(path);
                let mcp_guard = self.rules.iter().any(|r| {
                    r.matches_mcp() && {
                        let n = r.segments.len().min(segments.len());
                        r.segments[..n] == segments[..n]
                    }
                });
                let mut metadata = serde_json::json!({
                    "resource": c.resource,
                    "authorization_servers": c.authorization_servers,
                    "scopes_supported": c.scopes_supported,
                    "bearer_methods_supported": ["header"],
                });
                if let Some(d) = dpop(&c.authorization_servers) {
                    metadata["dpop_signing_alg_values_supported"] = d.algorithms.into();
                    metadata["dpop_bound_access_tokens_required"] = d.required.into();
                }
                Resource {
                    segments,
                    metadata_path: format!("/.well-known/oauth-protected-resource{path}"),
                    metadata: metadata.to_string(),
                    config: c.clone(),
                    mcp_guard,
                }
            })
            .collect();
        self.resources = resources;
        self
    }

    /// The protected resource `uri` belongs to (its path prefix, on segment boundaries).
    pub fn resource_for(&self, uri: &str) -> Option<&Resource> {
        if self.resources.is_empty() {
            return None;
        }
        let segments = Segments::of(path_of(uri));
        self.resources
            .iter()
            .find(|r| segments.starts_with(&r.segments, self.fold))
    }

    /// The resource whose metadata lives at `path`.
    pub fn resource_metadata(&self, path: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.metadata_path == path)
    }

    /// The permissions the rule for this request requires, space-separated (a challenge's
    /// `scope`).
    pub fn required_scope(
        &self,
        host: &str,
        uri: &str,
        method: &str,
        mcp: &McpOp<'_>,
    ) -> Option<String> {
        match self.find_op(host, uri, method, mcp) {
            Matched::Rule(r) => r.scope(),
            Matched::DefaultDeny => None,
        }
    }

    /// True when the path of `uri` may be read differently by a backend (SPEC §3.8).
    pub fn ambiguous(&self, uri: &str) -> bool {
        ambiguous_path(path_of(uri), self.allow)
    }

    /// First matching rule; `host` may carry a port, `uri` is the raw `X-Forwarded-Uri`.
    pub fn find(&self, host: &str, uri: &str, method: &str) -> Matched<'_> {
        self.find_op(host, uri, method, &McpOp::default())
    }

    /// [`Rules::find`] for a request that may name an MCP operation.
    pub fn find_op(&self, host: &str, uri: &str, method: &str, mcp: &McpOp<'_>) -> Matched<'_> {
        let host = normalize_host(host);
        let segments = Segments::of(path_of(uri));
        match self
            .rules
            .iter()
            .find(|r| r.matches(host, &segments, method, mcp, self.fold))
        {
            Some(r) => Matched::Rule(r),
            None if self.default_policy == Policy::Deny => Matched::DefaultDeny,
            None => Matched::Rule(&self.default_rule),
        }
    }
}

/// The DPoP members of a resource's metadata.
pub struct DpopMetadata {
    /// `dpop_signing_alg_values_supported`.
    pub algorithms: Vec<String>,
    /// `dpop_bound_access_tokens_required`.
    pub required: bool,
}

/// A request path split into segments. Most paths need no decoding and no dot-segment
/// removal: those are compared in place, without allocating.
pub enum Segments<'a> {
    Plain(&'a str),
    Decoded(Vec<Vec<u8>>),
}

impl<'a> Segments<'a> {
    pub fn of(path: &'a str) -> Segments<'a> {
        if path.contains('%') || path.split('/').any(|s| s == "." || s == "..") {
            Segments::Decoded(normalize_path(path))
        } else {
            Segments::Plain(path)
        }
    }

    /// Whether the path begins with the segments of `prefix`; `fold`: ignoring ASCII case.
    fn starts_with(&self, prefix: &[Vec<u8>], fold: bool) -> bool {
        let same = |a: &[u8], b: &[u8]| match fold {
            true => a.eq_ignore_ascii_case(b),
            false => a == b,
        };
        match self {
            Segments::Plain(p) => {
                let mut it = p.split('/').filter(|s| !s.is_empty());
                prefix
                    .iter()
                    .all(|seg| it.next().is_some_and(|s| same(s.as_bytes(), seg)))
            }
            Segments::Decoded(v) => {
                v.len() >= prefix.len() && v.iter().zip(prefix).all(|(a, b)| same(a, b))
            }
        }
    }
}

/// The path part of a request target (no query, no fragment).
pub fn path_of(uri: &str) -> &str {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    &uri[..end]
}

/// The query part of a request target, without `?`.
pub fn query_of(uri: &str) -> Option<&str> {
    let start = uri.find('?')? + 1;
    let end = uri[start..].find('#').map_or(uri.len(), |e| start + e);
    Some(&uri[start..end])
}

/// Host as Traefik's `Host()` matches it: without `:port` and without one trailing dot
/// (`admin.example.` is `admin.example`).
pub fn normalize_host(host: &str) -> &str {
    let h = strip_port(host);
    h.strip_suffix('.').unwrap_or(h)
}

/// The encoded classes `[paths] allow_encoded` re-allows.
#[derive(Debug, Clone, Copy, Default)]
struct AllowEncoded {
    slash: bool,
    backslash: bool,
    semicolon: bool,
    question_mark: bool,
    hash: bool,
    percent: bool,
}

impl AllowEncoded {
    fn new(classes: &[EncodedClass]) -> AllowEncoded {
        let has = |c| classes.contains(&c);
        AllowEncoded {
            slash: has(EncodedClass::Slash),
            backslash: has(EncodedClass::Backslash),
            semicolon: has(EncodedClass::Semicolon),
            question_mark: has(EncodedClass::QuestionMark),
            hash: has(EncodedClass::Hash),
            percent: has(EncodedClass::Percent),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A path that a backend may split or decode differently from the rule matcher: encoded
/// `/ \ ; ? # %`, raw `\` or `;`, control bytes raw or encoded, a `%` not followed by two
/// hex digits, or bytes that are not UTF-8 once decoded (overlong forms included). Scans
/// without allocating unless the path encodes non-ASCII bytes.
fn ambiguous_path(path: &str, allow: AllowEncoded) -> bool {
    let b = path.as_bytes();
    let mut high = false;
    let mut i = 0;
    while i < b.len() {
        let (byte, encoded) = match b[i] {
            b'%' => {
                let decoded = match (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => h << 4 | l,
                    _ => return true,
                };
                i += 3;
                (decoded, true)
            }
            raw => {
                i += 1;
                (raw, false)
            }
        };
        let refused = match byte {
            0x00..=0x1F | 0x7F => true,
            b'\\' => !allow.backslash,
            b';' => !allow.semicolon,
            b'/' => encoded && !allow.slash,
            b'?' => encoded && !allow.question_mark,
            b'#' => encoded && !allow.hash,
            b'%' => encoded && !allow.percent,
            0x80.. => {
                high = true;
                false
            }
            _ => false,
        };
        if refused {
            return true;
        }
    }
    high && percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .is_err()
}

/// Host without `:port` (handles `[v6]:port`).
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// Splits on `/`, percent-decodes each segment on its own (so a decoded `%2F` never acts as
/// a separator), and removes `.`/`..` segments, decoded ones included.
pub fn normalize_path(path: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut parts = path.split('/');
    // A leading "/" yields an empty first part.
    if path.starts_with('/') {
        parts.next();
    }
    for raw in parts {
        let seg: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
        match seg.as_slice() {
            b"." => {}
            b".." => {
                out.pop();
            }
            // Empty segments from `//` or a trailing `/` do not change which prefix matches.
            b"" => {}
            _ => out.push(seg),
        }
    }
    out
}

/// Origin allow-list: exact (case-insensitive) match, or `*`.
pub use gatepass_identity::origin_allowed;

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str) -> RuleConfig {
        RuleConfig {
            host: None,
            path: path.into(),
            methods: None,
            roles: vec![],
            permissions: vec![],
            anonymous: false,
            mcp_methods: None,
            mcp_names: None,
        }
    }

    fn compile(c: &[RuleConfig], policy: Policy) -> Rules {
        Rules::compile(c, policy, &PathsConfig::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn segs(p: &str) -> Vec<String> {
        normalize_path(p)
            .into_iter()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .collect()
    }

    #[test]
    fn normalization() {
        assert_eq!(segs("/a/b/../c"), ["a", "c"]);
        assert_eq!(segs("/a/./b/"), ["a", "b"]);
        assert_eq!(segs("/a%2Fb"), ["a/b"]);
        assert_eq!(segs("/x/%2e%2e/admin"), ["admin"]);
        assert_eq!(segs("/../../etc"), ["etc"]);
        assert_eq!(segs("/a;b"), ["a;b"]);
    }

    #[test]
    fn prefix_on_segment_boundaries() {
        let mut c = rule("/api/v1/mcps");
        c.roles = vec!["admin".into()];
        let rules = compile(&[c], Policy::Deny);
        let hit = |uri: &str| matches!(rules.find("h", uri, "GET"), Matched::Rule(r) if r.path == "/api/v1/mcps");
        assert!(hit("/api/v1/mcps"));
        assert!(hit("/api/v1/mcps/x?y=1"));
        assert!(hit("/api/v1/mcps/"));
        assert!(hit("/api/v1/other/../mcps"));
        assert!(hit("/api/v1/%6Dcps"));
        assert!(!hit("/api/v1/mcpsX"));
        assert!(!hit("/api/v1%2Fmcps"));
        assert!(!hit("/api/v1"));
    }

    #[test]
    fn host_and_methods() {
        let mut c = rule("/");
        c.host = Some("App.Example.com".into());
        c.methods = Some(vec!["post".into()]);
        let rules = compile(&[c], Policy::Deny);
        assert!(matches!(
            rules.find("app.example.COM:8443", "/x", "POST"),
            Matched::Rule(_)
        ));
        assert!(matches!(
            rules.find("app.example.com", "/x", "GET"),
            Matched::DefaultDeny
        ));
        assert!(matches!(
            rules.find("other.example.com", "/x", "POST"),
            Matched::DefaultDeny
        ));
    }

    /// Issue 8 A: Traefik's `Host(`admin.example`)` also routes `admin.example.`; the rule
    /// must match it too, or the request falls through to a weaker rule.
    #[test]
    fn host_rule_matches_one_trailing_dot() {
        let mut admin = rule("/");
        admin.host = Some("admin.example".into());
        admin.roles = vec!["admin".into()];
        let rules = compile(&[admin], Policy::Authenticated);
        for host in [
            "admin.example",
            "admin.example.",
            "ADMIN.example.:8443",
            "admin.example:80",
        ] {
            assert!(
                matches!(rules.find(host, "/x", "GET"), Matched::Rule(r) if !r.role_ok(b"viewer")),
                "{host}"
            );
        }
        // Only one dot is Traefik's; two are another name.
        assert!(
            matches!(rules.find("admin.example..", "/x", "GET"), Matched::Rule(r) if r.role_ok(b"viewer"))
        );
        // A rule written with the dot matches the name without it.
        let mut dotted = rule("/");
        dotted.host = Some("admin.example.".into());
        dotted.roles = vec!["admin".into()];
        let rules = compile(&[dotted], Policy::Authenticated);
        assert!(
            matches!(rules.find("admin.example", "/x", "GET"), Matched::Rule(r) if !r.role_ok(b"viewer"))
        );
    }

    /// Issue 8 B: every class SPEC §3.8 lists is refused, in either case, raw or encoded as
    /// listed; ordinary encodings are not.
    #[test]
    fn ambiguous_paths_are_refused() {
        let rules = compile(&[], Policy::Authenticated);
        for p in [
            "/public/..%2Fadmin/secret.txt",
            "/%2fadmin/x",
            "/a%5Cb",
            "/a%5cb",
            "/a%3Bb",
            "/a%3bb",
            "/a%3Fb",
            "/a%3fb",
            "/a%23b",
            "/a%25b",
            "/a\\b",
            "/a;b",
            "/a;jsessionid=1",
            "/a%00",
            "/a%1F",
            "/a%1f",
            "/a%7F",
            "/a\tb",
            "/a%",
            "/a%4",
            "/a%zz",
            // Not UTF-8 once decoded: a lone continuation byte, an overlong `/` and `.`.
            "/a%80",
            "/a%C0%AF",
            "/%C0%AE%C0%AE/admin",
            "/a%E0%80%AF",
            "/a%FF",
        ] {
            assert!(rules.ambiguous(p), "{p:?} must be refused");
        }
        for p in [
            "/",
            "/api/v1/mcps",
            "/a%20b",
            "/%6Dcps",
            "/x/%2E%2E/admin",
            "/caf%C3%A9",
            "/a?x=%2F;y",
            "/a?q=1#frag",
            "/a:b@c!$&'()*+,=",
        ] {
            assert!(!rules.ambiguous(p), "{p:?} is not ambiguous");
        }
    }

    /// `[paths] allow_encoded` re-allows one class at a time; the decoded character stays
    /// inside its segment.
    #[test]
    fn allow_encoded_reallows_a_class_inside_its_segment() {
        let mut admin = rule("/admin");
        admin.roles = vec!["admin".into()];
        let mut public = rule("/public");
        public.anonymous = true;
        let paths = PathsConfig {
            allow_encoded: vec![EncodedClass::Slash, EncodedClass::Semicolon],
            ..PathsConfig::default()
        };
        let rules = Rules::compile(&[admin, public], Policy::Authenticated, &paths).unwrap();
        assert!(!rules.ambiguous("/public/..%2Fadmin/secret.txt"));
        assert!(!rules.ambiguous("/a;b"));
        assert!(rules.ambiguous("/a%5Cb"));
        assert!(rules.ambiguous("/a%00"));
        // `..%2Fadmin` is one segment: the `..` before it is not a dot-segment of its own.
        assert!(
            matches!(rules.find("h", "/public/..%2Fadmin/secret.txt", "GET"), Matched::Rule(r) if r.anonymous)
        );
        assert!(
            matches!(rules.find("h", "/%2Fadmin/x", "GET"), Matched::Rule(r) if r.path == "(default)")
        );
    }

    /// Issue 20: paths match case-sensitively (as Traefik routes); `[paths]
    /// case_insensitive` folds ASCII case for rules and resources alike.
    #[test]
    fn paths_match_case_sensitively_unless_folded() {
        let mut admin = rule("/Admin");
        admin.roles = vec!["admin".into()];
        let resource = crate::config::ResourceConfig {
            resource: "https://mcp.test/mcp".into(),
            path: "/mcp".into(),
            authorization_servers: vec!["https://auth.test".into()],
            scopes_supported: vec![],
            allowed_origins: vec![],
        };
        let strict = compile(&[admin.clone()], Policy::Authenticated)
            .with_resources(std::slice::from_ref(&resource), |_| None);
        let is_admin = |r: &Rules, p: &str| matches!(r.find("h", p, "GET"), Matched::Rule(r) if r.path == "/Admin");
        assert!(is_admin(&strict, "/Admin/x"));
        assert!(!is_admin(&strict, "/admin/x"));
        assert!(!is_admin(&strict, "/ADMIN"));
        assert!(strict.resource_for("/mcp/x").is_some());
        assert!(strict.resource_for("/MCP").is_none());
        let paths = PathsConfig {
            case_insensitive: true,
            ..PathsConfig::default()
        };
        let folded = Rules::compile(&[admin], Policy::Authenticated, &paths)
            .unwrap()
            .with_resources(&[resource], |_| None);
        for p in ["/admin/x", "/ADMIN", "/aDmIn%2e/../admin", "/%41dmin"] {
            assert!(is_admin(&folded, p), "{p}");
        }
        assert!(folded.resource_for("/MCP").is_some());
        assert!(folded.resource_for("/Mcp/tools").is_some());
        assert!(folded.resource_for("/mcpx").is_none());
    }

    /// Issue 8 item 6: a rule that does not compile is an error, never skipped.
    #[test]
    fn a_rule_that_does_not_compile_is_an_error() {
        let mut bad = rule("/admin");
        bad.methods = Some(vec!["GET /".into()]);
        let err = Rules::compile(
            &[rule("/ok"), bad],
            Policy::Authenticated,
            &PathsConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "config error: rules[1].methods: must list HTTP methods like GET"
        );
    }

    #[test]
    fn first_match_wins_and_default() {
        let mut a = rule("/healthz");
        a.anonymous = true;
        let b = rule("/");
        let rules = compile(&[a, b], Policy::Authenticated);
        assert!(matches!(rules.find("h", "/healthz", "GET"), Matched::Rule(r) if r.anonymous));
        assert!(matches!(rules.find("h", "/x", "GET"), Matched::Rule(r) if !r.anonymous));
        let rules = compile(&[], Policy::Authenticated);
        assert!(matches!(rules.find("h", "/x", "GET"), Matched::Rule(r) if r.path == "(default)"));
    }

    #[test]
    fn roles_and_permissions_compare_encoded_values() {
        let mut c = rule("/");
        c.roles = vec!["data team".into()];
        c.permissions = vec!["a,b".into(), "x".into()];
        let r = Rule::compile(&c).unwrap_or_else(|e| panic!("{}", e.message));
        assert!(r.role_ok(b"data%20team"));
        assert!(!r.role_ok(b"data"));
        assert!(r.permissions_ok(b"x,a%2Cb"));
        // The raw permissions "a" and "b" are not the permission "a,b".
        assert!(!r.permissions_ok(b"a,b,x"));
        assert!(!r.permissions_ok(b""));
    }

    #[test]
    fn ports_and_origins() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.b"), "a.b");
        assert!(crate::config::is_origin("http://127.0.0.1:8080"));
        assert!(!crate::config::is_origin("http://a/b"));
        assert!(!crate::config::is_origin("a.b"));
        assert!(origin_allowed(&["HTTP://A.b".into()], "http://a.b"));
        assert!(!origin_allowed(&["http://a.b".into()], "http://a.b.evil"));
        assert_eq!(query_of("/p?a=1&b=2#f"), Some("a=1&b=2"));
        assert_eq!(path_of("/p?a"), "/p");
    }
}
