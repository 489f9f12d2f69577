//! Model prices and the cost of a request, in integer nano-dollars (1e-9 USD) so sums over
//! millions of requests stay exact. Prices are quoted in USD per million tokens, so a price
//! of $0.15/M is 150 nano-dollars per token: exact for prices with up to three decimals.

use crate::config::{ModelPrice, PlanConfig};
use crate::events::TokenUsage;
use std::collections::HashMap;

/// OpenAI's built-in prices, USD per million tokens (input, cached input, output); standard tier.
/// Sources: OpenAI's pricing page as mirrored in ../shared/contracts.md §6.7 and public copies
/// (embeddings: embeddingcost.com/openai, May 2026). OpenAI charges nothing extra to write its
/// prompt cache: cache writes cost the input price. Embeddings bill input only (no cache, and an
/// embedding answer has no completion tokens).
const OPENAI_BUILT_IN: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.075, 0.60),
    ("gpt-4o", 2.50, 1.25, 10.00),
    ("gpt-4.1", 2.00, 0.50, 8.00),
    ("gpt-4.1-mini", 0.40, 0.10, 1.60),
    ("gpt-4.1-nano", 0.10, 0.025, 0.40),
    ("o3-mini", 1.10, 0.55, 4.40),
    ("o4-mini", 1.10, 0.275, 4.40),
    ("gpt-3.5-turbo", 0.50, 0.50, 1.50),
    ("text-embedding-3-small", 0.02, 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.13, 0.0),
    ("text-embedding-ada-002", 0.10, 0.10, 0.0),
];

/// Anthropic's built-in prices, USD per million tokens (input, cache read, cache write, output);
/// standard tier, 5-minute cache writes (1.25× input; reads 0.1×). Source:
/// platform.claude.com/docs/en/about-claude/pricing ("Model pricing").
/// Priced, not listed by the default provider: that one is OpenAI's API, which serves no Claude.
const ANTHROPIC_BUILT_IN: &[(&str, f64, f64, f64, f64)] = &[
    ("claude-sonnet-4-5", 3.00, 0.30, 3.75, 15.00),
    ("claude-haiku-4-5", 1.00, 0.10, 1.25, 5.00),
    ("claude-opus-4-1", 15.00, 1.50, 18.75, 75.00),
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
    total_tokens(usage) > LARGEST_CONTEXT_TOKENS
        || usage.cached_tokens > LARGEST_CONTEXT_TOKENS
        || usage.cache_write_tokens > LARGEST_CONTEXT_TOKENS
}

/// Nano-dollars per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NanoPrice {
    pub input: u64,
    /// A prompt token read from the provider's cache.
    pub cached_input: u64,
    /// A prompt token written to the provider's cache.
    pub cache_write: u64,
    pub output: u64,
}

impl NanoPrice {
    fn from_per_million(input: f64, cached_input: f64, cache_write: f64, output: f64) -> NanoPrice {
        let nano = |usd_per_million: f64| (usd_per_million * 1000.0).round().max(0.0) as u64;
        NanoPrice {
            input: nano(input),
            cached_input: nano(cached_input),
            cache_write: nano(cache_write),
            output: nano(output),
        }
    }

    /// In nano-dollars: (prompt − cached − cache_write)·input + cached·cached_input +
    /// cache_write·cache_write + completion·output, saturating at `u64::MAX`: absurd upstream
    /// usage must cost the most, never wrap to $0. Inconsistent counts (cache reads and writes
    /// beyond the prompt) are clamped to the prompt, reads first: no token is billed twice.
    pub fn cost(&self, usage: &TokenUsage) -> u64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let cache_write = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        (usage.prompt_tokens - cached - cache_write)
            .saturating_mul(self.input)
            .saturating_add(cached.saturating_mul(self.cached_input))
            .saturating_add(cache_write.saturating_mul(self.cache_write))
            .saturating_add(usage.completion_tokens.saturating_mul(self.output))
    }
}

/// A plan's markup over upstream cost, in hundredths of a percent (`markup_percent = 12.5` is
/// 1,250), so that the selling price is integer arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Markup {
    basis_points: u64,
}

impl Markup {
    /// From `markup_percent` (validated by the configuration: finite, 0 to 10,000); a finer
    /// fraction than a hundredth of a percent is rounded to the nearest.
    pub fn from_percent(percent: f64) -> Markup {
        Markup { basis_points: (percent * 100.0).round().max(0.0) as u64 }
    }

    /// The selling price of `cost_nano`: cost × (10,000 + basis points) / 10,000, rounded half
    /// up to the nano-dollar (computed in u128, so it is exact), saturating at `i64::MAX` like
    /// every other amount on the books. A negative cost (none is ever booked) sells for 0.
    pub fn selling_price(self, cost_nano: i64) -> i64 {
        let Ok(cost) = u128::try_from(cost_nano) else { return 0 };
        let scaled = cost * u128::from(10_000 + self.basis_points);
        i64::try_from((scaled + 5_000) / 10_000).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: HashMap<String, NanoPrice>,
    /// Per plan; a plan not listed sells at cost.
    markups: HashMap<String, Markup>,
}

impl PriceTable {
    pub fn new(overrides: &std::collections::BTreeMap<String, ModelPrice>) -> PriceTable {
        let openai = OPENAI_BUILT_IN.iter().map(|&(model, i, c, o)| (model, NanoPrice::from_per_million(i, c, i, o)));
        let anthropic =
            ANTHROPIC_BUILT_IN.iter().map(|&(model, i, c, w, o)| (model, NanoPrice::from_per_million(i, c, w, o)));
        let mut prices: HashMap<String, NanoPrice> =
            openai.chain(anthropic).map(|(model, price)| (model.to_string(), price)).collect();
        for (model, p) in overrides {
            let (cached_input, cache_write) = (p.cached_input.unwrap_or(p.input), p.cache_write.unwrap_or(p.input));
            prices.insert(model.clone(), NanoPrice::from_per_million(p.input, cached_input, cache_write, p.output));
        }
        PriceTable { prices, markups: HashMap::new() }
    }

    /// The table with the plans' markups: what [`PriceTable::markup`] answers.
    pub fn with_markups(mut self, plans: &[PlanConfig]) -> PriceTable {
        self.markups = plans.iter().map(|p| (p.name.clone(), Markup::from_percent(p.markup_percent))).collect();
        self
    }

    /// The markup of `plan` (none for a plan without one, or not configured: sold at cost).
    pub fn markup(&self, plan: &str) -> Markup {
        self.markups.get(plan).copied().unwrap_or_default()
    }

    /// The price of a model, also for dated snapshots (`gpt-4o-mini-2024-07-18`,
    /// `claude-sonnet-4-5-20250929`).
    pub fn get(&self, model: &str) -> Option<NanoPrice> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        let base = strip_snapshot_date(model)?;
        self.prices.get(base).copied()
    }

    /// The built-in models OpenAI's API serves: what the default provider (OpenAI's API)
    /// lists. Claude models are priced but left out; an `anthropic` provider lists its own.
    pub fn openai_built_in_models() -> Vec<&'static str> {
        OPENAI_BUILT_IN.iter().map(|(m, ..)| *m).collect()
    }
}

/// `name-YYYY-MM-DD` (OpenAI's snapshots) or `name-YYYYMMDD` (Anthropic's) → `name`.
fn strip_snapshot_date(model: &str) -> Option<&str> {
    let dashed = || {
        let (base, date) = model.split_at_checked(model.len().checked_sub(11)?)?;
        let date = date.strip_prefix('-')?;
        let ok = date.len() == 10
            && date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
        ok.then_some(base)
    };
    let compact = || {
        let (base, date) = model.rsplit_once('-')?;
        (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())).then_some(base)
    };
    dashed().or_else(compact)
}

/// Nano-dollars as a USD amount for display (6 decimals is below a cent's ten-thousandth).
pub fn nano_to_usd(nano: i128) -> f64 {
    nano as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt_tokens: u64, cached_tokens: u64, cache_write_tokens: u64, completion_tokens: u64) -> TokenUsage {
        TokenUsage { prompt_tokens, cached_tokens, cache_write_tokens, completion_tokens }
    }

    #[test]
    fn cost_is_exact_for_the_documented_prices() {
        let table = PriceTable::new(&Default::default());
        let mini = table.get("gpt-4o-mini").expect("built in");
        // 1,000 prompt (200 cached) + 500 completion at $0.15 / $0.075 / $0.60 per million:
        // 800·150 + 200·75 + 500·600 = 120,000 + 15,000 + 300,000 nano-dollars = $0.000435.
        assert_eq!(mini.cost(&usage(1000, 200, 0, 500)), 435_000);
        let four_o = table.get("gpt-4o-2024-08-06").expect("snapshot resolves to its family");
        assert_eq!(four_o.cost(&usage(1_000_000, 0, 0, 1_000_000)), 12_500_000_000);
        assert!(table.get("unknown-model").is_none());
    }

    #[test]
    fn cache_writes_are_priced_at_the_cache_write_rate() {
        let table = PriceTable::new(&Default::default());
        let sonnet = table.get("claude-sonnet-4-5").expect("built in");
        // 10,000 prompt tokens: 4,000 read from the cache, 3,000 written to it, 3,000 plain; 1,000
        // completion at $3.00 / $0.30 read / $3.75 write / $15.00 per million:
        // 3,000·3,000 + 4,000·300 + 3,000·3,750 + 1,000·15,000 = 36,450,000 nano-dollars.
        assert_eq!(sonnet.cost(&usage(10_000, 4_000, 3_000, 1_000)), 36_450_000);
        // OpenAI charges nothing extra to write its cache: a write costs an input token.
        let mini = table.get("gpt-4o-mini").expect("built in");
        assert_eq!(mini.cost(&usage(1000, 200, 300, 500)), mini.cost(&usage(1000, 200, 0, 500)));
    }

    #[test]
    fn inconsistent_cache_counts_are_clamped_to_the_prompt() {
        let price = NanoPrice { input: 1, cached_input: 10, cache_write: 100, output: 1000 };
        // Reads and writes beyond the prompt: the reads fill it first, the writes take the rest.
        assert_eq!(price.cost(&usage(100, 80, 50, 0)), 80 * 10 + 20 * 100);
        assert_eq!(price.cost(&usage(100, 500, 50, 0)), 100 * 10, "no prompt token left to write");
        assert_eq!(price.cost(&usage(0, 7, 9, 1)), 1000, "no prompt: only the completion is billed");
        assert_eq!(price.cost(&usage(5, 0, u64::MAX, 0)), 5 * 100);
    }

    #[test]
    fn built_in_prices_cover_embeddings_and_claude() {
        let table = PriceTable::new(&Default::default());
        let price = |model: &str| table.get(model).unwrap_or_else(|| panic!("{model} is built in"));
        let embedding = |input| NanoPrice { input, cached_input: input, cache_write: input, output: 0 };
        assert_eq!(price("text-embedding-3-small"), embedding(20));
        assert_eq!(price("text-embedding-3-large"), embedding(130));
        assert_eq!(price("text-embedding-ada-002"), embedding(100));
        let claude = |input, cached_input, cache_write, output| NanoPrice { input, cached_input, cache_write, output };
        assert_eq!(price("claude-sonnet-4-5"), claude(3_000, 300, 3_750, 15_000));
        assert_eq!(price("claude-haiku-4-5"), claude(1_000, 100, 1_250, 5_000));
        assert_eq!(price("claude-opus-4-1"), claude(15_000, 1_500, 18_750, 75_000));
        assert_eq!(price("claude-sonnet-4-5-20250929"), price("claude-sonnet-4-5"), "a dated snapshot");
    }

    #[test]
    fn the_default_provider_lists_openai_models_only() {
        let listed = PriceTable::openai_built_in_models();
        assert!(listed.contains(&"gpt-4o-mini") && listed.contains(&"text-embedding-3-small"));
        assert!(!listed.iter().any(|m| m.starts_with("claude")), "OpenAI's API serves no Claude: {listed:?}");
    }

    #[test]
    fn absurd_usage_saturates_instead_of_wrapping() {
        let mini = PriceTable::new(&Default::default()).get("gpt-4o-mini").expect("built in");
        let max = usage(u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(mini.cost(&max), u64::MAX);
        let huge_answer = usage(1, 0, 0, u64::MAX / 2);
        assert_eq!(mini.cost(&huge_answer), u64::MAX, "wrapping would have booked a few nano-dollars");
        assert_eq!(total_tokens(&max), u64::MAX);
        assert!(suspicious_usage(&max) && suspicious_usage(&huge_answer));
        let largest = usage(LARGEST_CONTEXT_TOKENS - 10, 0, 0, 10);
        assert!(!suspicious_usage(&largest), "a full context window is plausible");
        assert!(suspicious_usage(&TokenUsage { completion_tokens: 11, ..largest }));
        let absurd_writes = TokenUsage { cache_write_tokens: LARGEST_CONTEXT_TOKENS + 1, ..largest };
        assert!(suspicious_usage(&absurd_writes), "it would wrap the cache_write token counter");
    }

    #[test]
    fn selling_prices_mark_the_cost_up_and_round_half_up() {
        let at = |percent: f64, cost: i64| Markup::from_percent(percent).selling_price(cost);
        assert_eq!(at(0.0, 435_000), 435_000, "no markup sells at cost");
        assert_eq!(at(30.0, 435_000), 565_500);
        assert_eq!(at(12.5, 1_000), 1_125);
        // 3 × 1.3333 = 3.9999 → 4; 1 × 1.3333 = 1.3333 → 1; 3 × 1.5 = 4.5 → 5 (half up).
        assert_eq!((at(33.33, 3), at(33.33, 1), at(50.0, 3)), (4, 1, 5));
        assert_eq!(at(0.004, 1_000_000_000), 1_000_000_000, "below a hundredth of a percent rounds away");
        assert_eq!(at(0.006, 1_000_000_000), 1_000_100_000, "to the nearest hundredth of a percent");
        assert_eq!(at(10_000.0, i64::MAX), i64::MAX, "saturates, never wraps");
        assert_eq!(at(30.0, -5), 0);
        let plans = [PlanConfig { name: "payg".into(), markup_percent: 30.0, ..PlanConfig::default() }];
        let table = PriceTable::new(&Default::default()).with_markups(&plans);
        assert_eq!(table.markup("payg").selling_price(100), 130);
        assert_eq!(table.markup("unknown").selling_price(100), 100, "an unknown plan sells at cost");
    }

    #[test]
    fn overrides_replace_built_ins() {
        let mut overrides = std::collections::BTreeMap::new();
        let plain = ModelPrice { input: 1.0, cached_input: None, cache_write: None, output: 2.0 };
        overrides.insert("gpt-4o-mini".to_string(), plain);
        let surcharged = ModelPrice { input: 1.0, cached_input: Some(0.1), cache_write: Some(1.25), output: 2.0 };
        overrides.insert("claude-haiku-4-5".to_string(), surcharged);
        let table = PriceTable::new(&overrides);
        let no_surcharge = NanoPrice { input: 1000, cached_input: 1000, cache_write: 1000, output: 2000 };
        assert_eq!(table.get("gpt-4o-mini"), Some(no_surcharge), "cache prices default to the input price");
        let surcharged = NanoPrice { input: 1000, cached_input: 100, cache_write: 1250, output: 2000 };
        assert_eq!(table.get("claude-haiku-4-5"), Some(surcharged));
    }
}
