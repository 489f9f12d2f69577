//! The models a plan sells (`[[plans]] models = ["gpt-4o-mini", "anthropic/*"]`), parsed once
//! when the configuration loads. A pattern is a model name in which `*` stands for any run of
//! characters (`/` included); no other character is special.
//!
//! What a pattern is matched against: a request (or a `[fallbacks]` entry) names a model, and the
//! gateway routes it to a provider and the model sent upstream. The candidate is allowed when a
//! pattern matches the name as it was asked for, or `provider/model` as it goes upstream. So
//! `anthropic/*` admits `claude-haiku-4-5` routed to the provider `anthropic`, and
//! `gpt-4o-mini` admits that name but not `other/gpt-4o-mini` (write `*/gpt-4o-mini` for every
//! provider's).

use serde::{Deserialize, Serialize};

/// A pattern a plan's `models` cannot hold; the message says which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("an empty list allows no model at all; leave `models` out to allow every routed model")]
    NoPatterns,
    #[error("a pattern is empty")]
    Empty,
    #[error("`{0}` has a space or control character, which no model name has")]
    Whitespace(String),
    #[error("`{pattern}`: `{wildcard}` is not supported; only `*` is a wildcard")]
    UnsupportedWildcard { pattern: String, wildcard: char },
}

/// One `models` entry: the literal runs between its `*`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPattern {
    text: String,
    /// `text` split at `*`: one piece is an exact name; otherwise the first piece starts the
    /// name, the last ends it and the others occur in order between.
    pieces: Vec<String>,
}

impl ModelPattern {
    pub fn parse(text: &str) -> Result<ModelPattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError::Whitespace(text.to_owned()));
        }
        if let Some(wildcard) = text.chars().find(|c| matches!(c, '?' | '[' | ']' | '{' | '}' | '!')) {
            return Err(PatternError::UnsupportedWildcard { pattern: text.to_owned(), wildcard });
        }
        Ok(ModelPattern { text: text.to_owned(), pieces: text.split('*').map(str::to_owned).collect() })
    }

    /// Whether `name` is this pattern with each `*` replaced by some run of characters.
    pub fn matches(&self, name: &str) -> bool {
        let [first, middle @ .., last] = self.pieces.as_slice() else { return name == self.text };
        let Some(mut tail) = name.strip_prefix(first.as_str()) else { return false };
        // Leftmost matches of the middle pieces leave the most room for the others: with `*`
        // the only wildcard this never misses a match.
        for piece in middle {
            match tail.find(piece.as_str()) {
                Some(at) => tail = &tail[at + piece.len()..],
                None => return false,
            }
        }
        tail.ends_with(last.as_str())
    }
}

/// A plan's `models`: at least one pattern.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct AllowedModels(Vec<ModelPattern>);

impl TryFrom<Vec<String>> for AllowedModels {
    type Error = PatternError;

    fn try_from(patterns: Vec<String>) -> Result<AllowedModels, PatternError> {
        if patterns.is_empty() {
            return Err(PatternError::NoPatterns);
        }
        patterns.iter().map(|p| ModelPattern::parse(p)).collect::<Result<_, _>>().map(AllowedModels)
    }
}

impl From<AllowedModels> for Vec<String> {
    fn from(allowed: AllowedModels) -> Vec<String> {
        allowed.0.into_iter().map(|p| p.text).collect()
    }
}

impl AllowedModels {
    /// Whether a candidate may be called: `asked` is the model as the customer (or
    /// `[fallbacks]`) named it, `provider` and `upstream_model` where it is routed.
    pub fn admits(&self, asked: &str, provider: &str, upstream_model: &str) -> bool {
        if self.0.iter().any(|pattern| pattern.matches(asked)) {
            return true;
        }
        let routed = format!("{provider}/{upstream_model}");
        routed != asked && self.0.iter().any(|pattern| pattern.matches(&routed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> ModelPattern {
        ModelPattern::parse(text).expect("a valid pattern")
    }

    #[test]
    fn an_exact_name_matches_only_itself() {
        let exact = pattern("gpt-4o-mini");
        assert!(exact.matches("gpt-4o-mini"));
        for other in ["gpt-4o", "gpt-4o-mini-2024", "x-gpt-4o-mini", "openai/gpt-4o-mini", ""] {
            assert!(!exact.matches(other), "{other}");
        }
    }

    #[test]
    fn a_provider_prefix_glob_matches_that_providers_models_only() {
        let anthropic = pattern("anthropic/*");
        assert!(anthropic.matches("anthropic/claude-haiku-4-5"));
        assert!(anthropic.matches("anthropic/"), "`*` may stand for nothing");
        for other in ["claude-haiku-4-5", "anthropic", "openai/gpt-4o", "xanthropic/claude", "anthropic-2/claude"] {
            assert!(!anthropic.matches(other), "{other}");
        }
    }

    #[test]
    fn a_star_matches_every_name_and_stars_match_in_the_middle_and_across_slashes() {
        let all = pattern("*");
        assert!(["gpt-4o", "anthropic/claude-sonnet-4-5", ""].iter().all(|name| all.matches(name)));
        let middle = pattern("gpt-*-mini");
        assert!(middle.matches("gpt-4o-mini") && middle.matches("gpt-4.1-mini") && middle.matches("gpt--mini"));
        assert!(!middle.matches("gpt-4o") && !middle.matches("gpt-mini"), "the pieces may not overlap");
        let any_provider = pattern("*/gpt-4o-mini");
        assert!(any_provider.matches("backup/gpt-4o-mini") && any_provider.matches("a/b/gpt-4o-mini"));
        assert!(!any_provider.matches("gpt-4o-mini"));
        let several = pattern("a*b*b");
        assert!(several.matches("abb") && several.matches("a-b-b-b") && !several.matches("ab"));
    }

    #[test]
    fn a_candidate_is_admitted_by_its_asked_name_or_where_it_is_routed() {
        let allowed = AllowedModels::try_from(vec!["gpt-4o-mini".to_string(), "anthropic/*".to_string()])
            .expect("valid patterns");
        assert!(allowed.admits("gpt-4o-mini", "openai", "gpt-4o-mini"));
        assert!(allowed.admits("claude-haiku-4-5", "anthropic", "claude-haiku-4-5"), "routed to anthropic");
        assert!(allowed.admits("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"));
        assert!(!allowed.admits("gpt-4o", "openai", "gpt-4o"));
        assert!(!allowed.admits("openai/gpt-4o-mini", "openai", "gpt-4o-mini"), "as asked: not the bare name");
        assert!(!allowed.admits("claude-haiku-4-5", "bedrock", "claude-haiku-4-5"), "another provider's");
        let as_configured = serde_json::to_value(&allowed).expect("serializes");
        assert_eq!(as_configured, serde_json::json!(["gpt-4o-mini", "anthropic/*"]), "serialized as configured");
    }

    #[test]
    fn patterns_that_could_not_mean_what_they_say_are_refused() {
        let parse =
            |patterns: &[&str]| AllowedModels::try_from(patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        assert_eq!(parse(&[]), Err(PatternError::NoPatterns));
        assert_eq!(parse(&["gpt-4o", ""]), Err(PatternError::Empty));
        assert_eq!(parse(&["gpt 4o"]), Err(PatternError::Whitespace("gpt 4o".into())));
        assert_eq!(
            parse(&["gpt-4?"]),
            Err(PatternError::UnsupportedWildcard { pattern: "gpt-4?".into(), wildcard: '?' })
        );
        assert!(matches!(parse(&["claude-[3-4]*"]), Err(PatternError::UnsupportedWildcard { wildcard: '[', .. })));
        let message = parse(&["{a,b}"]).expect_err("braces").to_string();
        assert_eq!(message, "`{a,b}`: `{` is not supported; only `*` is a wildcard");
    }
}
