use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::FirewallError;

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
    type Err = FirewallError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Country::from_code(&s.trim().to_ascii_uppercase()).ok_or_else(|| FirewallError::InvalidCountry(s.to_owned()))
    }
}

impl TryFrom<String> for Country {
    type Error = FirewallError;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Block,
    Allow,
}

/// Which countries may use the gateway. An unknown country (no header, an
/// untrusted peer, or a malformed header) is treated as `XX`, so list `XX`
/// to block unknowns, or leave it out of an allow-list to refuse them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountryPolicy {
    mode: Mode,
    /// Sorted and deduplicated for binary search.
    countries: Vec<Country>,
}

impl Default for CountryPolicy {
    /// Allows everyone: an empty block list.
    fn default() -> Self {
        CountryPolicy { mode: Mode::Block, countries: Vec::new() }
    }
}

impl CountryPolicy {
    /// Block the listed countries, e.g. `"RU,KP,T1,XX"`; an empty list blocks nobody.
    pub fn block_list(list: &str) -> Result<Self, FirewallError> {
        Ok(CountryPolicy { mode: Mode::Block, countries: parse_list(list)? })
    }

    /// Only the listed countries pass. An empty list is refused because it
    /// would silently lock everyone out.
    pub fn allow_list(list: &str) -> Result<Self, FirewallError> {
        let countries = parse_list(list)?;
        if countries.is_empty() {
            return Err(FirewallError::EmptyAllowList);
        }
        Ok(CountryPolicy { mode: Mode::Allow, countries })
    }

    pub fn allows(&self, country: Option<Country>) -> bool {
        let listed = self.countries.binary_search(&country.unwrap_or(Country::UNKNOWN)).is_ok();
        match self.mode {
            Mode::Block => !listed,
            Mode::Allow => listed,
        }
    }
}

fn parse_list(list: &str) -> Result<Vec<Country>, FirewallError> {
    let mut countries = list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<Country>, _>>()?;
    countries.sort_unstable();
    countries.dedup();
    Ok(countries)
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

    #[test]
    fn block_list() {
        let p = CountryPolicy::block_list("RU, KP,T1,xx,RU").expect("valid list");
        assert!(!p.allows(c("RU")));
        assert!(!p.allows(c("KP")));
        assert!(!p.allows(Some(Country::TOR)));
        assert!(!p.allows(None), "unknown is XX, which is blocked");
        assert!(!p.allows(Some(Country::UNKNOWN)));
        assert!(p.allows(c("DE")));
        assert!(p.allows(c("US")));
    }

    #[test]
    fn block_list_without_xx_lets_unknown_through() {
        let p = CountryPolicy::block_list("RU").expect("valid list");
        assert!(p.allows(None));
        assert!(!p.allows(c("RU")));
    }

    #[test]
    fn allow_list() {
        let p = CountryPolicy::allow_list("DE,FR,US").expect("valid list");
        assert!(p.allows(c("DE")));
        assert!(p.allows(c("US")));
        assert!(!p.allows(c("RU")));
        assert!(!p.allows(None), "unknown is XX, which is not listed");
        assert!(!p.allows(Some(Country::TOR)));

        let with_unknown = CountryPolicy::allow_list("DE,XX").expect("valid list");
        assert!(with_unknown.allows(None));
    }

    #[test]
    fn default_allows_everyone_and_bad_lists_fail() {
        let p = CountryPolicy::default();
        assert!(p.allows(None) && p.allows(c("RU")));
        assert_eq!(CountryPolicy::block_list(" , ").expect("empty is fine"), p);
        assert!(matches!(CountryPolicy::allow_list(""), Err(FirewallError::EmptyAllowList)));
        assert!(matches!(
            CountryPolicy::block_list("RU,Germany"),
            Err(FirewallError::InvalidCountry(s)) if s == "Germany"
        ));
    }
}
