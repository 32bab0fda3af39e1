//! The one JSON reader for what issuers and callers send (SPEC §3.9): JOSE headers, claims
//! sets, logout tokens and introspection answers. Objects only where an object is required,
//! no member name twice at any depth (RFC 8259 lets a parser keep either; two readers of one
//! token must never see two different tokens), and times that are non-negative numbers.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A document the strict reader refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed JSON document")]
pub struct Malformed;

/// A base64url (unpadded) segment of a compact JWS, read as one [`object`].
pub fn segment(b64: &str) -> Result<Map<String, Value>, Malformed> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| Malformed)?;
    object(&bytes)
}

/// Parses `bytes` as one JSON object with no repeated member name at any depth.
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, Malformed> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(map))) => Ok(map),
        _ => Err(Malformed),
    }
}

/// The `exp`, `nbf` and `iat` members, when present, are non-negative numbers (RFC 7519
/// NumericDate; JSON has no non-finite numbers, and one too large for a double fails to parse).
pub fn times_ok(claims: &Map<String, Value>) -> bool {
    ["exp", "nbf", "iat"].iter().all(|name| {
        claims
            .get(*name)
            .is_none_or(|v| v.as_f64().is_none_or(|f| f >= 0.0))
    })
}

/// A JSON value built like `serde_json::Value`, refusing a repeated member name.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without repeated member names")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
        let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(v)) = a.next_element()? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
        let mut map = Map::new();
        while let Some(name) = a.next_key::<String>()? {
            let Strict(value) = a.next_value()?;
            match map.entry(name) {
                serde_json::map::Entry::Vacant(e) => {
                    e.insert(value);
                }
                serde_json::map::Entry::Occupied(_) => {
                    return Err(de::Error::custom("a member name is repeated"))
                }
            }
        }
        Ok(Strict(Value::Object(map)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn objects_only_and_no_repeats_at_any_depth() {
        assert_eq!(
            object(br#"{"a":1,"b":{"c":[1,{"d":null}]}}"#),
            Ok(json!({"a":1,"b":{"c":[1,{"d":null}]}})
                .as_object()
                .cloned()
                .unwrap())
        );
        for bad in [
            &br#"["HS256"]"#[..],
            br#""x""#,
            br#"1"#,
            br#"null"#,
            br#"{"a":1,"a":1}"#,
            br#"{"realm_access":{"roles":["viewer"],"roles":["admin"]}}"#,
            br#"{"x":[{"k":1,"k":2}]}"#,
            br#"{"a":1} {"b":2}"#,
            br#"{"a":1e400}"#,
            b"{\"a\":\"\xff\"}",
        ] {
            assert_eq!(
                object(bad),
                Err(Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn times_are_non_negative_numbers() {
        let ok = |v: Value| times_ok(v.as_object().unwrap());
        assert!(ok(json!({"exp": 1, "nbf": 0, "iat": 1.5})));
        assert!(ok(json!({"exp": "soon"})), "types are checked elsewhere");
        for bad in [
            json!({"iat": -5}),
            json!({"iat": -1e300}),
            json!({"exp": -1}),
            json!({"nbf": -0.5}),
        ] {
            assert!(!ok(bad.clone()), "{bad}");
        }
    }

    /// A JSON value as text, with objects whose member names may repeat.
    fn text(depth: u32) -> BoxedStrategy<String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<i32>().prop_map(|n| n.to_string()),
            "[a-z]{0,4}".prop_map(|s| format!("\"{s}\"")),
        ];
        leaf.prop_recursive(depth, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec(("[ab]", inner), 0..4).prop_map(|members| {
                    let body: Vec<String> = members
                        .iter()
                        .map(|(k, v)| format!("\"{k}\":{v}"))
                        .collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
        .boxed()
    }

    /// Whether `v` (serde_json's own last-wins reading) came from text with no repeated
    /// name: re-serialising it loses the repeats, so the lengths differ exactly then.
    fn has_repeat(text: &str) -> bool {
        let v: Value = serde_json::from_str(text).unwrap();
        fn count_members(text: &str) -> usize {
            // Member names are `"a"` or `"b"` followed by `:`; strings never hold a colon.
            text.matches("\":").count()
        }
        count_members(text) != count_members(&v.to_string())
    }

    proptest! {
        /// Any document with a repeated member name at any depth, as a header or claims set,
        /// is refused; the same document without repeats reads as serde_json reads it.
        #[test]
        fn repeated_names_are_refused_at_any_depth(inner in text(4), name in "[ab]") {
            let doc = format!("{{\"{name}\":{inner}}}");
            let want = !has_repeat(&doc);
            prop_assert_eq!(object(doc.as_bytes()).is_ok(), want, "{}", doc);
            if want {
                let theirs: Value = serde_json::from_str(&doc).unwrap();
                prop_assert_eq!(Value::Object(object(doc.as_bytes()).unwrap()), theirs);
            }
        }
    }
}
