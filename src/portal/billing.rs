//! The customer's billing as OMI has it on record: each purchase (plan, subscription status,
//! when it ends) and the payments and refunds of the ledger, with Lemon Squeezy's own
//! customer-portal and update-payment-method links as the newest subscription event gave them.

use super::session::CustomerSession;
use super::{Chrome, PortalError, Template, render};
use crate::admin::dashboard::format;
use crate::app::AppState;
use crate::store::{CustomerLedgerEntry, CustomerPurchase};
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;

/// More rows than a customer has; the page shows them all.
const MOST_ROWS: i64 = 200;

pub struct PurchaseRow {
    pub order_id: i64,
    pub plan: String,
    pub status: String,
    pub ends: String,
    pub bought: String,
    /// Lemon Squeezy's pages for this subscription: manage or cancel it, change the card.
    pub manage_url: Option<String>,
    pub payment_url: Option<String>,
}

impl From<CustomerPurchase> for PurchaseRow {
    fn from(p: CustomerPurchase) -> PurchaseRow {
        let status = match (p.refunded, p.ended, p.subscription_status) {
            (true, _, _) => "refunded".to_string(),
            (false, true, _) => "ended".to_string(),
            (false, false, Some(status)) => status.replace('_', " "),
            (false, false, None) => "paid".to_string(),
        };
        PurchaseRow {
            order_id: p.order_id,
            plan: p.plan,
            status: if p.test_mode { format!("{status} (test mode)") } else { status },
            ends: p.ends_at.map(format::time).unwrap_or_default(),
            bought: format::time(p.created_at),
            manage_url: p.customer_portal_url,
            payment_url: p.update_payment_url,
        }
    }
}

pub struct LedgerRow {
    pub when: String,
    pub kind: String,
    pub amount: String,
}

impl From<CustomerLedgerEntry> for LedgerRow {
    fn from(e: CustomerLedgerEntry) -> LedgerRow {
        let amount = format!("{}.{:02} {}", e.amount_cents / 100, e.amount_cents % 100, e.currency);
        LedgerRow {
            when: format::time(e.occurred_at),
            kind: if e.test_mode { format!("{} (test mode)", e.kind) } else { e.kind },
            amount,
        }
    }
}

#[derive(Template)]
#[template(path = "portal_billing.html")]
struct BillingPage {
    chrome: Chrome,
    purchases: Vec<PurchaseRow>,
    ledger: Vec<LedgerRow>,
}

pub async fn page(State(app): State<Arc<AppState>>, session: CustomerSession) -> Result<Response, PortalError> {
    let (purchases, ledger) = tokio::join!(
        app.store.customer_purchases(session.customer_id, MOST_ROWS),
        app.store.customer_ledger(session.customer_id, MOST_ROWS),
    );
    render(&BillingPage {
        chrome: Chrome::new(&app, &session, "Billing", "/portal/billing").await?,
        purchases: purchases?.into_iter().map(PurchaseRow::from).collect(),
        ledger: ledger?.into_iter().map(LedgerRow::from).collect(),
    })
}
