//! Monthly cost budgets and token quotas per customer. Spend is counted in the database
//! (`usage_counters`, one atomic upsert per finished request), so every instance sees the
//! same total: replicas can overspend a cap only by the requests in flight. Plans without
//! limits cost no database work at all.

use crate::config::{Config, PlanConfig, UnpricedModels};
use crate::events::{Event, EventBus};
use crate::keys::VerifiedKey;
use crate::store::Store;
use crate::web::error::ApiError;
use chrono::{DateTime, Datelike, Utc};
use tokio::task::JoinHandle;

pub fn month_key(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

fn limits<'a>(config: &'a Config, plan: &str) -> Option<&'a PlanConfig> {
    config.plan(plan).filter(|p| capped(p))
}

/// Whether a plan has a monthly budget or token quota.
fn capped(plan: &PlanConfig) -> bool {
    plan.monthly_budget_usd.is_some() || plan.monthly_token_quota.is_some()
}

/// Refuses the request when the customer's plan cap for this month is reached.
pub async fn check(config: &Config, store: &Store, key: &VerifiedKey) -> Result<(), ApiError> {
    let Some(plan) = limits(config, &key.plan) else { return Ok(()) };
    let (cost_nano, tokens) = store.month_to_date(key.customer_id, &month_key(Utc::now())).await.map_err(|e| {
        tracing::error!(error = %e, "budget lookup failed");
        ApiError::unavailable("Usage limits cannot be checked right now; retry shortly.")
    })?;
    if let Some(budget) = plan.monthly_budget_usd
        && cost_nano as f64 >= budget * 1e9
    {
        return Err(ApiError::quota_exceeded(format!(
            "Your plan's monthly budget of ${budget:.2} is used up; it resets on the 1st (UTC)."
        )));
    }
    if let Some(quota) = plan.monthly_token_quota
        && u64::try_from(tokens).unwrap_or(0) >= quota
    {
        return Err(ApiError::quota_exceeded(format!(
            "Your plan's monthly quota of {quota} tokens is used up; it resets on the 1st (UTC)."
        )));
    }
    Ok(())
}

/// Refuses a model without a price on a prepaid plan, and on a capped plan (unless
/// `unpriced_models = "allow"`):
/// its cost would be unknown, counted as nothing, and the budget would never stop it. A
/// customer's own key costs the house nothing, so BYOK requests pass (their tokens still
/// count against a quota).
pub fn admit_model(
    config: &Config,
    plan: &str,
    upstream_model: &str,
    priced: bool,
    byok: bool,
) -> Result<(), ApiError> {
    // Prepaid credit draws the selling price of the cost: an unknown cost would be free use,
    // whatever `unpriced_models` says.
    let counted =
        config.is_prepaid(plan) || (config.unpriced_models != UnpricedModels::Allow && limits(config, plan).is_some());
    if priced || byok || !counted {
        return Ok(());
    }
    Err(ApiError::model_not_allowed(format!(
        "The model `{upstream_model}` has no price on this gateway, so your plan's limits cannot count it; use a priced model."
    )))
}

/// Adds each finished request's cost and tokens to its customer's month, for capped plans;
/// `None` when no plan is capped (nothing to count, so no request event is queued for it).
pub fn spawn_counter(
    events: &EventBus,
    store: Store,
    config: std::sync::Arc<Config>,
    prices: crate::billing::prices::PriceTable,
) -> Option<JoinHandle<()>> {
    if !config.plans.iter().any(capped) {
        return None;
    }
    let mut rx = events.subscribe("budgets", 65_536);
    Some(crate::tasks::owned(async move {
        while let Some(event) = rx.recv().await {
            let Event::Request(request) = &*event else { continue };
            let Some(plan) = request.plan.as_deref() else { continue };
            if limits(&config, plan).is_none() {
                continue;
            }
            let Some(record) = super::record_of(request, &prices) else { continue };
            let tokens = record.prompt_tokens.saturating_add(record.completion_tokens);
            let cost = record.cost_nano.unwrap_or(0);
            if tokens == 0 && cost == 0 {
                continue;
            }
            if let Err(e) = store.add_to_month(record.customer_id, &month_key(record.at), cost, tokens).await {
                tracing::warn!(error = %e, "could not count usage against the budget");
            }
        }
    }))
}
