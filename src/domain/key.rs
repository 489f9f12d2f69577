//! Customer API keys: `omi_` + 32 base62 characters of OS randomness + a 6-character
//! checksum. Only the SHA-256 of a key is ever stored; the plaintext lives in an
//! [`ApiKey`], whose `Debug` is redacted and which is never serialized.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;

const PREFIX: &str = "omi_";
const BODY_LEN: usize = 32; // 32 * log2(62) = 190 bits of entropy
const CHECKSUM_LEN: usize = 6;
const KEY_LEN: usize = PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
/// Characters of the key shown in listings: enough to tell keys apart, far too few to guess.
const DISPLAY_PREFIX_LEN: usize = PREFIX.len() + 8;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("API keys start with `omi_`")]
    WrongPrefix,
    #[error("API key has the wrong length")]
    WrongLength,
    #[error("API key contains characters that are not base62")]
    BadCharacters,
    #[error("API key checksum does not match (typo or truncated key)")]
    BadChecksum,
    #[error("the operating system's random number generator failed: {0}")]
    Randomness(String),
}

/// A well-formed customer key. Cannot be built from a string that fails the checksum,
/// so a malformed key is refused before any cache or database lookup.
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn generate() -> Result<ApiKey, KeyError> {
        let mut body = String::with_capacity(KEY_LEN);
        body.push_str(PREFIX);
        let mut pool = [0u8; 64];
        while body.len() < PREFIX.len() + BODY_LEN {
            getrandom::fill(&mut pool).map_err(|e| KeyError::Randomness(e.to_string()))?;
            // Rejection sampling: 248 = 4 * 62, so accepted bytes map uniformly onto base62.
            for &b in pool.iter().filter(|&&b| b < 248) {
                if body.len() == PREFIX.len() + BODY_LEN {
                    break;
                }
                body.push(BASE62[usize::from(b % 62)] as char);
            }
        }
        let checksum = checksum(&body[PREFIX.len()..]);
        body.push_str(&checksum);
        Ok(ApiKey(SecretString::from(body)))
    }

    pub fn parse(candidate: &str) -> Result<ApiKey, KeyError> {
        let rest = candidate.strip_prefix(PREFIX).ok_or(KeyError::WrongPrefix)?;
        if candidate.len() != KEY_LEN {
            return Err(KeyError::WrongLength);
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyError::BadCharacters);
        }
        let (body, sum) = rest.split_at(BODY_LEN);
        if checksum(body) != sum {
            return Err(KeyError::BadChecksum);
        }
        Ok(ApiKey(SecretString::from(candidate.to_owned())))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.0.expose_secret())
    }

    pub fn display_prefix(&self) -> String {
        self.0.expose_secret()[..DISPLAY_PREFIX_LEN].to_owned()
    }

    /// The plaintext, for the one place that must show it: the creation output or email.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", &self.0.expose_secret()[..DISPLAY_PREFIX_LEN])
    }
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut n = u64::from_be_bytes([0, 0, 0, digest[0], digest[1], digest[2], digest[3], digest[4]]);
    let mut out = [0u8; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// SHA-256 of a key: what the database stores and the cache is keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    fn of(plaintext: &str) -> KeyHash {
        KeyHash(Sha256::digest(plaintext.as_bytes()).into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<KeyHash> {
        <[u8; 32]>::try_from(bytes).ok().map(KeyHash)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", hex::encode(&self.0[..6]))
    }
}

/// A key's status as `api_keys.status` holds it; `Revoked` is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Suspended,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Suspended => "suspended",
            KeyStatus::Revoked => "revoked",
        }
    }

    pub fn parse(raw: &str) -> Option<KeyStatus> {
        match raw {
            "active" => Some(KeyStatus::Active),
            "suspended" => Some(KeyStatus::Suspended),
            "revoked" => Some(KeyStatus::Revoked),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a key lifetime: use a whole number and a unit, such as 90s, 15m, 12h or 14d")]
pub struct BadLifetime(pub String);

/// A key's lifetime as operators write it: a positive whole number of seconds (`90s`), minutes
/// (`15m`), hours (`12h`) or days (`14d`), at most 100 years.
pub fn parse_lifetime(text: &str) -> Result<chrono::Duration, BadLifetime> {
    let bad = || BadLifetime(text.chars().take(20).collect());
    let text = text.trim();
    let unit = text.chars().last().ok_or_else(bad)?;
    let count: i64 = text[..text.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let seconds_per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    const LONGEST_SECS: i64 = 100 * 366 * 86_400;
    match count.checked_mul(seconds_per) {
        Some(secs) if count > 0 && secs <= LONGEST_SECS => Ok(chrono::Duration::seconds(secs)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_take_seconds_minutes_hours_and_days_and_refuse_the_rest() {
        let secs = |text| parse_lifetime(text).map(|d| d.num_seconds());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("12h"), Ok(43_200));
        assert_eq!(secs("14d"), Ok(1_209_600));
        for bad in ["", "d", "14", "14w", "-1d", "0s", "1.5h", "+", "99999999999999999d", "1é"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
        assert!(parse_lifetime("14w").unwrap_err().to_string().contains("90s, 15m, 12h or 14d"));
    }

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = ApiKey::generate().expect("key");
        let b = ApiKey::generate().expect("key");
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), KEY_LEN);
        let parsed = ApiKey::parse(a.expose()).expect("round trip");
        assert_eq!(parsed.hash(), a.hash());
        assert!(a.display_prefix().starts_with("omi_"));
        assert_eq!(a.display_prefix().len(), DISPLAY_PREFIX_LEN);
    }

    #[test]
    fn malformed_keys_are_refused_without_lookup() {
        let key = ApiKey::generate().expect("key");
        let text = key.expose().to_owned();
        assert_eq!(ApiKey::parse("sk-abc").unwrap_err(), KeyError::WrongPrefix);
        assert_eq!(ApiKey::parse(&text[..KEY_LEN - 1]).unwrap_err(), KeyError::WrongLength);
        let mut typo = text.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert_eq!(ApiKey::parse(&typo).unwrap_err(), KeyError::BadChecksum);
        let bad = format!("{}-{}", &text[..10], &text[11..]);
        assert_eq!(ApiKey::parse(&bad).unwrap_err(), KeyError::BadCharacters);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::generate().expect("key");
        let shown = format!("{key:?} {:?}", key.hash());
        assert!(!shown.contains(&key.expose()[DISPLAY_PREFIX_LEN..]));
    }
}
