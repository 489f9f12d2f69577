//! Where a request comes from, as the edge reports it: the firewall's country rules, the
//! configuration that lists countries and the events that carry a request's country all
//! speak this one type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A country code in the configuration that is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid country code {0:?}: expected two characters like `RU`, `T1` (Tor) or `XX` (unknown)")]
pub struct InvalidCountry(pub String);

/// A Cloudflare country code: ISO 3166-1 alpha-2, plus `T1` (Tor) and `XX`
/// (unknown). Stored as two bytes so it is `Copy` and free to compare.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country([u8; 2]);

impl Country {
    pub const UNKNOWN: Country = Country(*b"XX");
    pub const TOR: Country = Country(*b"T1");

    /// Strict parse of an exact code (`"RU"`, `"T1"`); anything else is `None`.
    pub fn from_code(code: &str) -> Option<Country> {
        match *code.as_bytes() {
            // Digits are only allowed second, which admits `T1` and nothing real
            // collides with it.
            [a @ b'A'..=b'Z', b @ (b'A'..=b'Z' | b'0'..=b'9')] => Some(Country([a, b])),
            _ => None,
        }
    }

    /// A `CF-IPCountry` value from a trusted proxy. Malformed values become
    /// `XX` rather than being dropped, so that an allow-list can never be
    /// passed by sending garbage.
    pub(crate) fn from_header(value: &[u8]) -> Country {
        std::str::from_utf8(value).ok().and_then(Country::from_code).unwrap_or(Country::UNKNOWN)
    }

    pub fn as_str(&self) -> &str {
        // Both bytes were checked to be ASCII on construction.
        std::str::from_utf8(&self.0).unwrap_or("XX")
    }
}

/// Lenient for configuration: surrounding spaces and lower case are accepted.
impl FromStr for Country {
    type Err = InvalidCountry;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Country::from_code(&s.trim().to_ascii_uppercase()).ok_or_else(|| InvalidCountry(s.to_owned()))
    }
}

impl TryFrom<String> for Country {
    type Error = InvalidCountry;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Country> for String {
    fn from(c: Country) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Option<Country> {
        Country::from_code(code)
    }

    #[test]
    fn strict_codes() {
        assert_eq!(c("RU").map(|c| c.to_string()), Some("RU".into()));
        assert_eq!(c("T1"), Some(Country::TOR));
        assert_eq!(c("XX"), Some(Country::UNKNOWN));
        for bad in ["ru", "R", "RUS", "1A", "", " RU", "R-", "ÄÖ"] {
            assert_eq!(c(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn header_values_never_fail() {
        assert_eq!(Country::from_header(b"DE"), Country(*b"DE"));
        assert_eq!(Country::from_header(b"de"), Country::UNKNOWN);
        assert_eq!(Country::from_header(b"\xff\xfe"), Country::UNKNOWN);
        assert_eq!(Country::from_header(b""), Country::UNKNOWN);
    }

    #[test]
    fn config_parse_is_lenient_but_validated() {
        assert_eq!(" ru ".parse::<Country>().ok(), c("RU"));
        let err = "Russia".parse::<Country>().unwrap_err();
        assert!(err.to_string().contains("Russia"), "{err}");
    }

    #[test]
    fn serde_as_string() {
        use serde::de::IntoDeserializer;
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = "kp".into_deserializer();
        let v = Country::deserialize(de).expect("valid code");
        assert_eq!(v, Country(*b"KP"));
        assert_eq!(String::from(v), "KP");
    }
}
