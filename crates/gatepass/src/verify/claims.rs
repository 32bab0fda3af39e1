//! Claims → identity (SPEC §3.2 `[claims]`): dotted paths, first present wins.

use gatepass_identity::Identity;
use serde_json::{Map, Value};

use crate::config::ClaimsConfig;

/// Compiled claim paths.
#[derive(Debug, Clone)]
pub struct ClaimMap {
    user_id: Vec<Vec<String>>,
    username: Vec<Vec<String>>,
    role: Vec<Vec<String>>,
    permissions: Vec<Vec<String>>,
}

fn compile(paths: &[String]) -> Vec<Vec<String>> {
    paths
        .iter()
        .map(|p| p.split('.').map(str::to_owned).collect())
        .collect()
}

fn lookup<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for seg in rest {
        v = v.get(seg)?;
    }
    Some(v)
}

/// A string or number; an array yields its first such element.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(a) => a.iter().find_map(|x| match x {
            Value::Array(_) => None,
            x => scalar(x),
        }),
        _ => None,
    }
}

fn list(v: &Value) -> Option<Vec<String>> {
    match v {
        // RFC 6749 §3.3: items are separated by the space character only; a tab, NBSP or
        // U+2003 is part of an item (splitting on any whitespace let `a\u{2003}b` grant `b`).
        Value::String(s) => Some(
            s.split(' ')
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| match x {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

impl ClaimMap {
    pub fn new(c: &ClaimsConfig) -> ClaimMap {
        ClaimMap {
            user_id: compile(&c.user_id),
            username: compile(&c.username),
            role: compile(&c.role),
            permissions: compile(&c.permissions),
        }
    }

    fn first<T>(
        &self,
        claims: &Map<String, Value>,
        paths: &[Vec<String>],
        f: impl Fn(&Value) -> Option<T>,
    ) -> Option<T> {
        paths.iter().find_map(|p| lookup(claims, p).and_then(&f))
    }

    /// The identity; `None` when no user id claim is present.
    pub fn identity(&self, claims: &Map<String, Value>, exp: u64) -> Option<Identity> {
        Some(Identity {
            id: self.first(claims, &self.user_id, scalar)?,
            username: self
                .first(claims, &self.username, scalar)
                .unwrap_or_default(),
            role: self.first(claims, &self.role, scalar).unwrap_or_default(),
            permissions: self
                .first(claims, &self.permissions, list)
                .unwrap_or_default(),
            expires: Some(exp),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults() {
        let m = ClaimMap::new(&ClaimsConfig::default());
        let id = m
            .identity(&map(json!({"sub": "u1", "email": "a@b", "realm_access": {"roles": ["dba", "x"]}, "scope": "mcp:read  mcp:write"})), 9)
            .unwrap();
        assert_eq!(id.id, "u1");
        assert_eq!(id.username, "a@b");
        assert_eq!(id.role, "dba");
        assert_eq!(id.permissions, vec!["mcp:read", "mcp:write"]);
        assert_eq!(id.expires, Some(9));
        let id = m
            .identity(
                &map(json!({"sub": 42, "roles": [], "role": "", "permissions": ["a", 1, "b"]})),
                9,
            )
            .unwrap();
        assert_eq!(id.id, "42");
        assert_eq!(id.username, "42");
        assert_eq!(id.role, "");
        assert_eq!(id.permissions, vec!["a", "b"]);
        assert!(m.identity(&map(json!({"name": "x"})), 9).is_none());
    }

    /// Issue 20 finding 4: only the space character separates scope items.
    #[test]
    fn scope_splits_on_the_space_character_only() {
        let m = ClaimMap::new(&ClaimsConfig::default());
        for (scope, want) in [
            (
                "mcp:read\u{2003}mcp:write",
                vec!["mcp:read\u{2003}mcp:write"],
            ),
            ("mcp:read\tmcp:write", vec!["mcp:read\tmcp:write"]),
            ("mcp:read\u{a0}mcp:write", vec!["mcp:read\u{a0}mcp:write"]),
            (" mcp:read  mcp:write ", vec!["mcp:read", "mcp:write"]),
        ] {
            let id = m
                .identity(&map(json!({"sub": "u", "scope": scope})), 9)
                .unwrap();
            assert_eq!(id.permissions, want, "{scope:?}");
        }
    }
}
