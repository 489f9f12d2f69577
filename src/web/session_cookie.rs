//! The session cookies of the dashboard (`omi_admin`) and the customer portal (`omi_portal`):
//! one token format, one parser, one `Set-Cookie` shape (HttpOnly, SameSite=Strict, Secure
//! over https, scoped to its path), and one CSRF comparison, so the two cannot drift apart.

use axum::http::{HeaderMap, HeaderValue, header};

/// A session or sign-in token: this many random bytes, in hex.
pub const TOKEN_BYTES: usize = 32;

/// A fresh random token, or `None` when the system has no randomness to give.
pub fn new_token() -> Option<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// Whether `token` has the shape of one [`new_token`] makes (anything else is never looked up).
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_BYTES * 2 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a form carries the session's CSRF token (compared in constant time).
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// A form whose only field is the session's CSRF token (sign-out, revoke, ...).
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// A session cookie: its name and the path it is sent to.
pub struct SessionCookie {
    pub name: &'static str,
    pub path: &'static str,
}

impl SessionCookie {
    /// The token the `Cookie` headers carry under this cookie's name, if well-formed.
    pub fn token<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.name)
            .map(|(_, value)| value)
            .filter(|value| well_formed(value))
    }

    /// The `Set-Cookie` value for `value`, living `max_age_secs` (0 ends it); `secure` when the
    /// gateway is served over https. `None` only for a value no header may carry.
    pub fn set(&self, value: &str, max_age_secs: u64, secure: bool) -> Option<HeaderValue> {
        let cookie = format!(
            "{}={value}; Path={}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
            self.name,
            self.path,
            if secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&cookie).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: SessionCookie = SessionCookie { name: "omi_admin", path: "/admin" };

    #[test]
    fn a_session_cookie_is_read_only_under_its_own_name_and_when_well_formed() {
        let mut headers = HeaderMap::new();
        let token = "ab".repeat(TOKEN_BYTES);
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("omi_portal={token}")).expect("value"));
        assert_eq!(ADMIN.token(&headers), None, "another cookie's token");
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("x=1; omi_admin={token}")).expect("value"));
        assert_eq!(ADMIN.token(&headers), Some(token.as_str()));
        headers.insert(header::COOKIE, HeaderValue::from_static("omi_admin=zz"));
        assert_eq!(ADMIN.token(&headers), None, "not a token's shape");
        assert!(new_token().is_some_and(|t| well_formed(&t)));
    }

    #[test]
    fn the_set_cookie_is_http_only_strict_scoped_and_secure_over_https() {
        let set = |secure| ADMIN.set("v", 60, secure).expect("header").to_str().expect("ascii").to_owned();
        assert_eq!(set(false), "omi_admin=v; Path=/admin; Max-Age=60; HttpOnly; SameSite=Strict");
        assert_eq!(set(true), "omi_admin=v; Path=/admin; Max-Age=60; HttpOnly; SameSite=Strict; Secure");
        assert!(csrf_matches("abc", "abc") && !csrf_matches("abc", "abd") && !csrf_matches("abc", ""));
    }
}
