use super::FirewallError;
use crate::domain::country::Country;

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
    use crate::domain::country::InvalidCountry;

    fn c(code: &str) -> Option<Country> {
        Country::from_code(code)
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
            Err(FirewallError::InvalidCountry(InvalidCountry(s))) if s == "Germany"
        ));
    }
}
