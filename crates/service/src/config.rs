//! Configuration file helpers shared by gatepass and mcp-status, so both read durations and
//! report config errors the same way: one line naming the key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration problem, displayed as one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {message}")]
pub struct ConfigError {
    /// The dotted key (`issuers[0].algorithms`), or the file for read errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A duration written as `500ms`, `30s`, `5m`, `1h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// `s` seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    /// Parses `500ms`, `30s`, `5m`, `1h`, `1d`.
    pub fn parse(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m, h or d)"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration like 30s"))?;
        let mult_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("`{s}` has an unknown unit (use ms, s, m, h or d)")),
        };
        n.checked_mul(mult_ms)
            .map(|ms| Dur(Duration::from_millis(ms)))
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            let s = ms / 1000;
            if s != 0 && s.is_multiple_of(86_400) {
                write!(f, "{}d", s / 86_400)
            } else if s != 0 && s.is_multiple_of(3600) {
                write!(f, "{}h", s / 3600)
            } else if s != 0 && s.is_multiple_of(60) {
                write!(f, "{}m", s / 60)
            } else {
                write!(f, "{s}s")
            }
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads a config file; returns its text and the directory its relative paths resolve against.
pub fn read_file(path: &Path) -> Result<(String, PathBuf), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read: {e}")))?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((text, base))
}

/// Resolves a configured path: absolute as is, relative against `base`.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Parses TOML into `T`, mapping errors to one line naming the key.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| toml_error(text, &e))
}

/// A service's config file: validated after parsing, its relative paths resolved against the
/// file's directory.
pub trait ConfigFile: serde::de::DeserializeOwned {
    /// Sets the directory relative paths resolve against.
    fn set_base_dir(&mut self, dir: PathBuf);
    /// Checks the parsed values; the first problem found.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Parses and validates TOML text; relative paths resolve against the current directory.
pub fn parse<T: ConfigFile>(text: &str) -> Result<T, ConfigError> {
    let mut config: T = from_toml(text)?;
    config.set_base_dir(PathBuf::from("."));
    config.validate()?;
    Ok(config)
}

/// Reads, parses and validates a config file; relative paths resolve against its directory.
pub fn load<T: ConfigFile>(path: &Path) -> Result<T, ConfigError> {
    let (text, base_dir) = read_file(path)?;
    let mut config: T = parse(&text)?;
    config.set_base_dir(base_dir);
    Ok(config)
}

/// Turns a TOML/serde error into one line naming the key at the error's position.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e
        .message()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .to_string();
    match e.span() {
        Some(span) => {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            let key = match line.split_once('=') {
                Some((k, _)) if !line.starts_with('[') => k.trim().to_string(),
                _ => line.to_string(),
            };
            ConfigError::new(format!("{key} (line {line_no})"), message)
        }
        None => ConfigError::new("config", message),
    }
}

/// The URL with any user/password replaced, for printing.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://<redacted>@{host}"),
            None => url.to_string(),
        },
        None => "<redacted>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("30s").unwrap().0, Duration::from_secs(30));
        assert_eq!(Dur::parse("5m").unwrap().0, Duration::from_secs(300));
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("24h").unwrap().to_string(), "1d");
        assert_eq!(Dur::parse("90s").unwrap().to_string(), "90s");
        assert!(Dur::parse("30").is_err());
        assert!(Dur::parse("x s").is_err());
        assert!(Dur::parse("5y").is_err());
    }
}
