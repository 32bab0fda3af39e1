//! Sealing with the session keys (`[signin] key_file`): AES-256-GCM (aws-lc-rs) with a random
//! 96-bit nonce, for the flow cookie and the tokens a session keeps at rest. A sealed value is
//! base64url of `key id (4) || nonce (12) || ciphertext || tag (16)`; the key id is the first
//! four bytes of the key's SHA-256, so a value sealed with an older key (a later line of the
//! file) still opens after a rotation. The associated data binds a value to its purpose (a
//! cookie name, a session), so one can't be swapped for another.

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// Why the key file can't be used (the config error names `signin.key_file`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("line {0} is not one base64 32-byte key")]
    BadLine(usize),
    #[error("holds no key (one base64 32-byte key a line; `openssl rand -base64 32` makes one)")]
    Empty,
}

/// The session keys: the first seals, every one opens.
pub struct SealKeys {
    keys: Vec<([u8; 4], RandomizedNonceKey)>,
}

impl std::fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKeys")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl SealKeys {
    /// Reads the key file's text: one base64 (standard or url-safe, padded or not) 32-byte key
    /// a line; empty lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<SealKeys, KeyFileError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let trimmed = line.trim_end_matches('=');
            let bytes = STANDARD
                .decode(line)
                .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
                .map_err(|_| KeyFileError::BadLine(i + 1))?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| KeyFileError::BadLine(i + 1))?;
            let id = gatepass_service::digest::sha256(&key);
            let sealing = RandomizedNonceKey::new(&AES_256_GCM, &key)
                .map_err(|_| KeyFileError::BadLine(i + 1))?;
            keys.push(([id[0], id[1], id[2], id[3]], sealing));
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty);
        }
        Ok(SealKeys { keys })
    }

    /// `plaintext` sealed with the first key, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> String {
        let (id, key) = &self.keys[0];
        let mut buf = Vec::with_capacity(4 + NONCE_LEN + plaintext.len() + 16);
        buf.extend_from_slice(id);
        buf.extend_from_slice(&[0u8; NONCE_LEN]);
        let mut body = plaintext.to_vec();
        // AES-GCM sealing fails only for inputs of gigabytes; then nothing opens it either.
        match key.seal_in_place_append_tag(Aad::from(aad), &mut body) {
            Ok(nonce) => buf[4..4 + NONCE_LEN].copy_from_slice(nonce.as_ref()),
            Err(_) => body.clear(),
        }
        buf.extend_from_slice(&body);
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// What [`SealKeys::seal`] sealed for `aad`, with any key; `None` for anything else
    /// (another key, another purpose, a changed byte, not base64url).
    pub fn open(&self, aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < 4 + NONCE_LEN + 16 {
            return None;
        }
        let (id, rest) = raw.split_at(4);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let (_, key) = self.keys.iter().find(|(k, _)| k == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(aad), &mut body).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_line(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn round_trip_rotation_and_tampering() {
        let old = SealKeys::parse(&key_line(1)).unwrap();
        let sealed = old.seal(b"purpose", b"secret tokens");
        assert_eq!(
            old.open(b"purpose", &sealed).as_deref(),
            Some(&b"secret tokens"[..])
        );
        assert!(!sealed.contains("secret"));
        // Another purpose, or a changed byte, opens nothing.
        assert_eq!(old.open(b"other", &sealed), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(old.open(b"purpose", &URL_SAFE_NO_PAD.encode(bytes)), None);
        assert_eq!(old.open(b"purpose", "not base64!"), None);
        assert_eq!(old.open(b"purpose", ""), None);
        // Rotation: a new first key seals, the old one still opens what it sealed.
        let rotated =
            SealKeys::parse(&format!("# new\n{}\n\n{}\n", key_line(2), key_line(1))).unwrap();
        assert_eq!(
            rotated.open(b"purpose", &sealed).as_deref(),
            Some(&b"secret tokens"[..])
        );
        let new = rotated.seal(b"purpose", b"x");
        assert_eq!(old.open(b"purpose", &new), None, "sealed with the new key");
        // Two seals of one plaintext differ (random nonces).
        assert_ne!(old.seal(b"p", b"same"), old.seal(b"p", b"same"));
        // URL-safe keys, with or without padding, are read too.
        let url = URL_SAFE_NO_PAD.encode([3u8; 32]);
        assert!(SealKeys::parse(&url).is_ok());
    }

    #[test]
    fn bad_key_files() {
        assert_eq!(SealKeys::parse("").unwrap_err(), KeyFileError::Empty);
        assert_eq!(
            SealKeys::parse("# only a comment\n").unwrap_err(),
            KeyFileError::Empty
        );
        let short = STANDARD.encode([1u8; 16]);
        assert_eq!(
            SealKeys::parse(&format!("{}\n{short}", key_line(1))).unwrap_err(),
            KeyFileError::BadLine(2)
        );
        assert_eq!(
            SealKeys::parse("not base64 at all").unwrap_err(),
            KeyFileError::BadLine(1)
        );
    }
}
