//! Limits per API key, set by plan or for one key (`[rate_limits]` in omi.toml): requests
//! and tokens a minute. They need the verified key, so unlike the per-IP limit they run
//! after authentication, in the handlers.
//!
//! Tokens are known only once the answer is in, so they are spent in two steps: the
//! prompt's estimate (4 bytes a token) before the request goes upstream, refused if it does
//! not fit; the completion tokens when the request is booked, as far as the budget goes.
//! A request is therefore admitted while budget is left, and may overrun it once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::guard::{LimiterFactory, Named, Origin};
use super::{FirewallError, LimitKey};
use crate::events::{Event, EventBus, FirewallKind};
use crate::web::error::ApiError;

/// `[rate_limits]`: limits on top of the per-IP one, each counted per key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// By plan name (`[rate_limits.plans.pro]`): every key on the plan gets these.
    pub plans: BTreeMap<String, KeyLimit>,
    /// By key id (`[rate_limits.keys."<uuid>"]`): replaces its plan's limits; 0 = unlimited.
    pub keys: BTreeMap<Uuid, KeyLimit>,
}

impl RateLimits {
    /// The limits a key is held to, as `GET /v1/key` shows them: per unit its own entry, else
    /// its plan's (as the limiters pick them); 0 or unset is `None`, unlimited.
    pub fn for_key(&self, key_id: Uuid, plan: &str) -> KeyLimit {
        let pick = |unit: fn(&KeyLimit) -> Option<u32>| {
            self.keys
                .get(&key_id)
                .and_then(unit)
                .or_else(|| self.plans.get(plan).and_then(unit))
                .filter(|&per_minute| per_minute > 0)
        };
        KeyLimit {
            requests_per_minute: pick(|l| l.requests_per_minute),
            tokens_per_minute: pick(|l| l.tokens_per_minute),
        }
    }
}

/// Unset means "not limited here" (a key entry then falls back to its plan's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimit {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    fn scope(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Unit::Requests => "requests a minute for this key",
            Unit::Tokens => "tokens a minute for this key",
        }
    }
}

#[derive(Default)]
struct Pair {
    requests: Option<Named>,
    tokens: Option<Named>,
}

impl Pair {
    fn get(&self, unit: Unit) -> Option<&Named> {
        match unit {
            Unit::Requests => self.requests.as_ref(),
            Unit::Tokens => self.tokens.as_ref(),
        }
    }

    fn slot(&mut self, unit: Unit) -> &mut Option<Named> {
        match unit {
            Unit::Requests => &mut self.requests,
            Unit::Tokens => &mut self.tokens,
        }
    }
}

#[derive(Default)]
pub(super) struct KeyLimits {
    plans: HashMap<String, Pair>,
    keys: HashMap<Uuid, Pair>,
}

#[derive(Clone)]
enum Owner {
    Plan(String),
    Key(Uuid),
}

impl KeyLimits {
    pub(super) async fn build(config: &RateLimits, factory: &LimiterFactory<'_>) -> Result<KeyLimits, FirewallError> {
        let owners = config
            .plans
            .iter()
            .map(|(plan, limit)| (Owner::Plan(plan.clone()), format!("plan:{plan}"), limit))
            .chain(config.keys.iter().map(|(key, limit)| (Owner::Key(*key), format!("key:{key}"), limit)));
        let mut specs = Vec::new();
        for (owner, scope, limit) in owners {
            for (unit, per_minute) in
                [(Unit::Requests, limit.requests_per_minute), (Unit::Tokens, limit.tokens_per_minute)]
            {
                if let Some(per_minute) = per_minute {
                    specs.push((owner.clone(), unit, format!("{scope}:{}", unit.scope()), per_minute));
                }
            }
        }
        // Concurrently: against an unreachable Redis each limiter waits out its connect timeout.
        let limiters =
            try_join_all(specs.iter().map(|(_, _, scope, per_minute)| factory.make(scope, *per_minute))).await?;
        let mut built = KeyLimits::default();
        for ((owner, unit, _, _), named) in specs.into_iter().zip(limiters) {
            let pair = match owner {
                Owner::Plan(plan) => built.plans.entry(plan).or_default(),
                Owner::Key(key) => built.keys.entry(key).or_default(),
            };
            *pair.slot(unit) = Some(named);
        }
        Ok(built)
    }

    /// The key's own entry wins over its plan's, per unit.
    fn pick(&self, key_id: Uuid, plan: &str, unit: Unit) -> Option<&Named> {
        self.keys.get(&key_id).and_then(|p| p.get(unit)).or_else(|| self.plans.get(plan).and_then(|p| p.get(unit)))
    }

    pub(super) fn limiters(&self) -> impl Iterator<Item = &Named> {
        self.plans.values().chain(self.keys.values()).flat_map(|p| [p.requests.as_ref(), p.tokens.as_ref()]).flatten()
    }

    fn meters_tokens(&self) -> bool {
        self.plans.values().chain(self.keys.values()).any(|p| p.tokens.is_some())
    }

    /// Spends `amount` of the key's budget, or refuses (reported as a firewall event).
    pub(super) async fn admit(
        &self,
        key_id: Uuid,
        plan: &str,
        unit: Unit,
        amount: u32,
        origin: &Origin,
    ) -> Result<(), ApiError> {
        let Some(named) = self.pick(key_id, plan, unit) else {
            return Ok(());
        };
        let decision = named.limiter.check_n(bucket(key_id), amount).await;
        if decision.allowed {
            return Ok(());
        }
        origin.report(FirewallKind::RateLimited, Some(named.name.clone()));
        Err(ApiError::rate_limited(decision, unit.describe()))
    }

    /// Spends tokens already used, down to an empty budget at most: they cannot be refused.
    async fn debit(&self, key_id: Uuid, plan: &str, tokens: u32) {
        let Some(named) = self.pick(key_id, plan, Unit::Tokens) else {
            return;
        };
        let decision = named.limiter.check_n(bucket(key_id), tokens).await;
        if !decision.allowed && decision.remaining > 0 {
            named.limiter.check_n(bucket(key_id), decision.remaining).await;
        }
    }
}

fn bucket(key_id: Uuid) -> LimitKey {
    LimitKey::from_raw(key_id.as_u128())
}

/// Spends each booked request's completion tokens; `None` when no token limit is set.
/// Off the request path: a subscriber like any agent, ending when the bus closes.
pub(super) fn spawn_token_debits(limits: Arc<KeyLimits>, events: &EventBus) -> Option<JoinHandle<()>> {
    if !limits.meters_tokens() {
        return None;
    }
    let mut rx = events.subscribe("token_limits", 16_384);
    Some(crate::tasks::owned(async move {
        while let Some(event) = rx.recv().await {
            if let Event::Request(request) = &*event
                && let (Some(key_id), Some(plan), Some(usage)) = (request.key_id, &request.plan, request.usage)
            {
                let tokens = u32::try_from(usage.completion_tokens).unwrap_or(u32::MAX);
                limits.debit(key_id, plan, tokens).await;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{FallbackPolicy, LimiterSettings, RateLimiter};

    #[test]
    fn the_table_parses_and_rejects_typos() {
        let parsed: RateLimits = toml_from(
            r#"
            [plans.pro]
            requests_per_minute = 600
            tokens_per_minute = 200000
            [keys."0192f5e4-0000-7000-8000-000000000001"]
            requests_per_minute = 0
            "#,
        )
        .expect("valid table");
        assert_eq!(parsed.plans["pro"], KeyLimit { requests_per_minute: Some(600), tokens_per_minute: Some(200_000) });
        let key: Uuid = "0192f5e4-0000-7000-8000-000000000001".parse().expect("uuid");
        assert_eq!(parsed.keys[&key].requests_per_minute, Some(0));
        assert!(toml_from("[plans.pro]\nrequests_per_min = 5").is_err(), "unknown fields are errors");
        assert!(toml_from("[keys.not-a-uuid]\nrequests_per_minute = 5").is_err());
    }

    fn toml_from(text: &str) -> Result<RateLimits, String> {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(text)).extract().map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_key_entry_overrides_its_plan_per_unit() {
        let key: Uuid = "0192f5e4-0000-7000-8000-000000000001".parse().expect("uuid");
        let other = Uuid::nil();
        let config = RateLimits {
            plans: [("pro".to_owned(), KeyLimit { requests_per_minute: Some(2), tokens_per_minute: Some(100) })].into(),
            keys: [(key, KeyLimit { requests_per_minute: Some(0), tokens_per_minute: None })].into(),
        };
        let in_process =
            LimiterSettings { redis_url: None, redis_prefix: String::new(), fallback: FallbackPolicy::Local };
        let limits = KeyLimits::build(&config, &LimiterFactory::new(&in_process)).await.expect("limits");
        assert_eq!(
            limits.pick(key, "pro", Unit::Requests).map(|n| &*n.name),
            Some("key:0192f5e4-0000-7000-8000-000000000001:requests")
        );
        assert_eq!(limits.pick(key, "pro", Unit::Tokens).map(|n| &*n.name), Some("plan:pro:tokens"));
        assert_eq!(limits.pick(other, "pro", Unit::Requests).map(|n| &*n.name), Some("plan:pro:requests"));
        assert!(limits.pick(other, "free", Unit::Requests).is_none());
        assert_eq!(config.for_key(key, "pro"), KeyLimit { requests_per_minute: None, tokens_per_minute: Some(100) });
        assert_eq!(
            config.for_key(other, "pro"),
            KeyLimit { requests_per_minute: Some(2), tokens_per_minute: Some(100) }
        );
        assert_eq!(config.for_key(other, "free"), KeyLimit::default());
        assert_eq!(limits.limiters().count(), 3);
        assert!(limits.meters_tokens());

        // Spending more than is left drains the budget instead of being ignored.
        limits.debit(other, "pro", 70).await;
        limits.debit(other, "pro", 70).await;
        let tokens = &limits.pick(other, "pro", Unit::Tokens).expect("tokens").limiter;
        assert_eq!(tokens.check_n(bucket(other), 0).await.remaining, 0);
        assert!(matches!(limits.pick(key, "pro", Unit::Requests).map(|n| &n.limiter), Some(RateLimiter::Off)));
    }
}
