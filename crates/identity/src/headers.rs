//! Identity header names. Every other crate takes them from here.

/// Stable user id.
pub const USER_ID: &str = "x-user-id";
/// Display name.
pub const USER_USERNAME: &str = "x-user-username";
/// Role (first role when the token carries several).
pub const USER_ROLE: &str = "x-user-role";
/// Comma-separated, individually encoded permissions.
pub const USER_PERMISSIONS: &str = "x-user-permissions";
/// Token expiry, Unix seconds.
pub const USER_EXPIRES: &str = "x-user-expires";
/// Compact JWS signed by gatepass binding the identity to the target host.
pub const USER_ASSERTION: &str = "x-user-assertion";

/// The identity headers every allow carries, in this order.
pub const IDENTITY: [&str; 5] = [
    USER_ID,
    USER_USERNAME,
    USER_ROLE,
    USER_PERMISSIONS,
    USER_EXPIRES,
];

/// Every header name gatepass sets; Traefik must protect all of them (the shipped config uses
/// `authResponseHeadersRegex: ^X-User-`).
pub const ALL: [&str; 6] = [
    USER_ID,
    USER_USERNAME,
    USER_ROLE,
    USER_PERMISSIONS,
    USER_EXPIRES,
    USER_ASSERTION,
];

/// True for a header name a client might use to forge identity: `X-User-*` or the
/// underscore alias `X_User_*`, in any case.
pub fn is_identity_like(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 7
        && b[0].eq_ignore_ascii_case(&b'x')
        && (b[1] == b'-' || b[1] == b'_')
        && b[2..6].eq_ignore_ascii_case(b"user")
        && (b[6] == b'-' || b[6] == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_like_names() {
        for n in [
            "x-user-id",
            "X-User-Role",
            "X_User_Role",
            "x_user-role",
            "X-USER-ANYTHING",
        ] {
            assert!(is_identity_like(n), "{n}");
        }
        for n in [
            "x-user",
            "x-userid",
            "x-forwarded-user",
            "user-id",
            "x-users-id",
        ] {
            assert!(!is_identity_like(n), "{n}");
        }
    }
}
