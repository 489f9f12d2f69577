//! Model prices and the cost of a request, in integer nano-dollars (1e-9 USD) so sums over
//! millions of requests stay exact. Prices are quoted in USD per million tokens, so a price
//! of $0.15/M is 150 nano-dollars per token: exact for prices with up to three decimals.

use crate::config::ModelPrice;
use crate::events::TokenUsage;
use std::collections::HashMap;

/// Built-in prices, USD per million tokens (input, cached input, output); standard tier.
/// Sources: OpenAI's pricing page as mirrored in ../shared/contracts.md §6.7 and public copies.
const BUILT_IN: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.075, 0.60),
    ("gpt-4o", 2.50, 1.25, 10.00),
    ("gpt-4.1", 2.00, 0.50, 8.00),
    ("gpt-4.1-mini", 0.40, 0.10, 1.60),
    ("gpt-4.1-nano", 0.10, 0.025, 0.40),
    ("o3-mini", 1.10, 0.55, 4.40),
    ("o4-mini", 1.10, 0.275, 4.40),
    ("gpt-3.5-turbo", 0.50, 0.50, 1.50),
];

/// More tokens in one request than any model's context window holds (the largest, 10M,
/// counts prompt and answer together): such usage is an upstream bug or a lie, flagged as
/// suspicious rather than trusted (see `suspicious_usage`).
pub const LARGEST_CONTEXT_TOKENS: u64 = 10_000_000;

/// Prompt plus completion tokens, saturating.
pub fn total_tokens(usage: &TokenUsage) -> u64 {
    usage.prompt_tokens.saturating_add(usage.completion_tokens)
}

/// Usage no model could have produced in one request (beyond [`LARGEST_CONTEXT_TOKENS`]).
pub fn suspicious_usage(usage: &TokenUsage) -> bool {
    total_tokens(usage) > LARGEST_CONTEXT_TOKENS || usage.cached_tokens > LARGEST_CONTEXT_TOKENS
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NanoPrice {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

impl NanoPrice {
    fn from_per_million(input: f64, cached_input: f64, output: f64) -> NanoPrice {
        let nano = |usd_per_million: f64| (usd_per_million * 1000.0).round().max(0.0) as u64;
        NanoPrice { input: nano(input), cached_input: nano(cached_input), output: nano(output) }
    }

    /// (prompt − cached)·input + cached·cached_input + completion·output, in nano-dollars,
    /// saturating at `u64::MAX`: absurd upstream usage must cost the most, never wrap to $0.
    pub fn cost(&self, usage: &TokenUsage) -> u64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        (usage.prompt_tokens - cached)
            .saturating_mul(self.input)
            .saturating_add(cached.saturating_mul(self.cached_input))
            .saturating_add(usage.completion_tokens.saturating_mul(self.output))
    }
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: HashMap<String, NanoPrice>,
}

impl PriceTable {
    pub fn new(overrides: &std::collections::BTreeMap<String, ModelPrice>) -> PriceTable {
        let mut prices: HashMap<String, NanoPrice> = BUILT_IN
            .iter()
            .map(|&(model, i, c, o)| (model.to_string(), NanoPrice::from_per_million(i, c, o)))
            .collect();
        for (model, p) in overrides {
            prices.insert(
                model.clone(),
                NanoPrice::from_per_million(p.input, p.cached_input.unwrap_or(p.input), p.output),
            );
        }
        PriceTable { prices }
    }

    /// The price of a model, also for dated snapshots (`gpt-4o-mini-2024-07-18`).
    pub fn get(&self, model: &str) -> Option<NanoPrice> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        let base = strip_snapshot_date(model)?;
        self.prices.get(base).copied()
    }

    pub fn built_in_models() -> Vec<&'static str> {
        BUILT_IN.iter().map(|(m, ..)| *m).collect()
    }
}

/// `name-YYYY-MM-DD` → `name`.
fn strip_snapshot_date(model: &str) -> Option<&str> {
    let (base, date) = model.split_at_checked(model.len().checked_sub(11)?)?;
    let date = date.strip_prefix('-')?;
    let ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    ok.then_some(base)
}

/// Nano-dollars as a USD amount for display (6 decimals is below a cent's ten-thousandth).
pub fn nano_to_usd(nano: i128) -> f64 {
    nano as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_for_the_documented_prices() {
        let table = PriceTable::new(&Default::default());
        let mini = table.get("gpt-4o-mini").expect("built in");
        // 1,000 prompt (200 cached) + 500 completion at $0.15 / $0.075 / $0.60 per million:
        // 800·150 + 200·75 + 500·600 = 120,000 + 15,000 + 300,000 nano-dollars = $0.000435.
        let usage = TokenUsage { prompt_tokens: 1000, cached_tokens: 200, completion_tokens: 500 };
        assert_eq!(mini.cost(&usage), 435_000);
        let four_o = table.get("gpt-4o-2024-08-06").expect("snapshot resolves to its family");
        assert_eq!(
            four_o.cost(&TokenUsage { prompt_tokens: 1_000_000, cached_tokens: 0, completion_tokens: 1_000_000 }),
            12_500_000_000
        );
        assert!(table.get("unknown-model").is_none());
    }

    #[test]
    fn absurd_usage_saturates_instead_of_wrapping() {
        let mini = PriceTable::new(&Default::default()).get("gpt-4o-mini").expect("built in");
        let max = TokenUsage { prompt_tokens: u64::MAX, cached_tokens: u64::MAX, completion_tokens: u64::MAX };
        assert_eq!(mini.cost(&max), u64::MAX);
        let huge_answer = TokenUsage { prompt_tokens: 1, cached_tokens: 0, completion_tokens: u64::MAX / 2 };
        assert_eq!(mini.cost(&huge_answer), u64::MAX, "wrapping would have booked a few nano-dollars");
        assert_eq!(total_tokens(&max), u64::MAX);
        assert!(suspicious_usage(&max) && suspicious_usage(&huge_answer));
        let largest =
            TokenUsage { prompt_tokens: LARGEST_CONTEXT_TOKENS - 10, cached_tokens: 0, completion_tokens: 10 };
        assert!(!suspicious_usage(&largest), "a full context window is plausible");
        assert!(suspicious_usage(&TokenUsage { completion_tokens: 11, ..largest }));
    }

    #[test]
    fn overrides_replace_built_ins() {
        let mut overrides = std::collections::BTreeMap::new();
        overrides.insert("gpt-4o-mini".to_string(), ModelPrice { input: 1.0, cached_input: None, output: 2.0 });
        let table = PriceTable::new(&overrides);
        assert_eq!(table.get("gpt-4o-mini"), Some(NanoPrice { input: 1000, cached_input: 1000, output: 2000 }));
    }
}
