//! Lemon Squeezy webhooks: signature check over the raw body, then parsing a delivery into
//! a [`Change`] the store applies in one transaction. Pure code: no I/O here.

use crate::customers::EmailAddress;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// HMAC-SHA256 of the raw body with the signing secret, lowercase hex in `X-Signature`,
/// compared in constant time.
pub fn signature_is_valid(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("missing or invalid field `{0}`")]
    Field(&'static str),
}

/// What every delivery is recorded with, whatever its name.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_name: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub resource_updated_at: Option<String>,
    pub test_mode: bool,
    pub change: Change,
}

impl Delivery {
    /// A test-mode delivery is recorded and acknowledged but changes nothing, unless the
    /// operator accepts test mode (`LEMONSQUEEZY_TEST_MODE=accept`, while setting up a store).
    pub fn under_test_mode_policy(mut self, accept_test_mode: bool) -> Delivery {
        if self.test_mode && !accept_test_mode {
            self.change = Change::Ignored(Ignored::TestMode);
        }
        self
    }

    /// Same event about the same resource version = same delivery (retries and resends).
    pub fn dedupe_key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.event_name,
            self.resource_type.as_deref().unwrap_or(""),
            self.resource_id.as_deref().unwrap_or(""),
            self.resource_updated_at.as_deref().unwrap_or("")
        )
    }
}

/// The buyer of a purchase, as Lemon Squeezy reports them.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub email: EmailAddress,
    pub name: Option<String>,
    pub ls_customer_id: Option<i64>,
    pub custom_data: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    Payment,
    Refund,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerSource {
    Order,
    Invoice,
}

#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub kind: LedgerKind,
    pub source: LedgerSource,
    pub source_id: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub occurred_at: DateTime<Utc>,
}

/// A subscription's state as of `updated_at` (applied only if newer than what is stored).
#[derive(Debug, Clone)]
pub struct SubscriptionState {
    pub subscription_id: i64,
    pub status: String,
    pub ends_at: Option<DateTime<Utc>>,
    /// When a subscription `on_trial` stops being free; its key expires then.
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// Lemon Squeezy's signed links for the customer (`urls.customer_portal`,
    /// `urls.update_payment_method`); only `https://` ones are kept (they end up in a page).
    pub customer_portal_url: Option<String>,
    pub update_payment_url: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentSignal {
    Failed,
    Succeeded,
}

#[derive(Debug, Clone)]
pub enum Change {
    /// An order or subscription event: the purchase is recorded (whatever arrives first) and
    /// its state updated; `vend` (order_created, subscription_created) issues its key once.
    Purchase {
        order_id: i64,
        variant_id: Option<i64>,
        buyer: Buyer,
        subscription: Option<Box<SubscriptionState>>,
        payment: Option<LedgerEntry>,
        paid: bool,
        vend: bool,
    },
    /// `subscription_payment_*` (invoice) events.
    Invoice {
        subscription_id: i64,
        signal: Option<PaymentSignal>,
        updated_at: DateTime<Utc>,
        ledger: Option<LedgerEntry>,
    },
    /// `order_refunded`: revoke the purchase's key and book the refund.
    Refund { order_id: i64, ledger: LedgerEntry, full: bool },
    /// Acknowledged and recorded; nothing to do.
    Ignored(Ignored),
}

/// The recorded outcome of a refund or invoice whose purchase is not known yet: it waits,
/// and is applied when the purchase arrives (Lemon Squeezy does not promise delivery order).
pub const WAITING_FOR_PURCHASE: &str = "waiting_for_purchase";

/// Why a delivery changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// An event name omi does not act on (Lemon Squeezy adds events over time).
    UnknownEvent,
    /// A test-mode event while the operator does not accept test mode: a test checkout must
    /// never vend a working key, nor suspend or revoke one.
    TestMode,
}

impl Ignored {
    /// The outcome recorded in `webhook_events` (and shown on the dashboard).
    pub fn outcome(self) -> &'static str {
        match self {
            Ignored::UnknownEvent => "ignored",
            Ignored::TestMode => "test_mode_ignored",
        }
    }
}

/// A delivery's envelope, read by hand from the JSON tree: serde's derive would also take a
/// JSON array for an object, and null is "absent" for every optional field.
struct Envelope {
    event_name: String,
    test_mode: bool,
    custom_data: Option<Map<String, Value>>,
    resource: Option<Resource>,
}

struct Resource {
    kind: String,
    id: String,
    attributes: Map<String, Value>,
}

fn envelope(json: Value) -> Result<Envelope, ParseError> {
    let Value::Object(mut top) = json else { return Err(ParseError::Field("meta")) };
    let Some(Value::Object(mut meta)) = top.remove("meta") else { return Err(ParseError::Field("meta")) };
    let Some(Value::String(event_name)) = meta.remove("event_name") else {
        return Err(ParseError::Field("meta.event_name"));
    };
    let test_mode = match meta.remove("test_mode") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(on)) => on,
        Some(_) => return Err(ParseError::Field("meta.test_mode")),
    };
    let custom_data = match meta.remove("custom_data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(data)) => Some(data),
        Some(_) => return Err(ParseError::Field("meta.custom_data")),
    };
    let resource = match top.remove("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(mut data)) => {
            let Some(Value::String(kind)) = data.remove("type") else { return Err(ParseError::Field("data.type")) };
            let Some(Value::String(id)) = data.remove("id") else { return Err(ParseError::Field("data.id")) };
            let attributes = match data.remove("attributes") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(attributes)) => attributes,
                Some(_) => return Err(ParseError::Field("data.attributes")),
            };
            Some(Resource { kind, id, attributes })
        }
        Some(_) => return Err(ParseError::Field("data")),
    };
    Ok(Envelope { event_name, test_mode, custom_data, resource })
}

fn int(attrs: &Map<String, Value>, field: &'static str) -> Result<i64, ParseError> {
    attrs.get(field).and_then(Value::as_i64).ok_or(ParseError::Field(field))
}

fn opt_int(attrs: &Map<String, Value>, field: &str) -> Option<i64> {
    attrs.get(field).and_then(Value::as_i64)
}

fn text<'a>(attrs: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, ParseError> {
    attrs.get(field).and_then(Value::as_str).ok_or(ParseError::Field(field))
}

fn time(attrs: &Map<String, Value>, field: &'static str) -> Result<DateTime<Utc>, ParseError> {
    opt_time(attrs, field).ok_or(ParseError::Field(field))
}

fn opt_time(attrs: &Map<String, Value>, field: &str) -> Option<DateTime<Utc>> {
    attrs.get(field).and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.to_utc())
}

fn buyer(attrs: &Map<String, Value>, custom_data: Option<Map<String, Value>>) -> Result<Buyer, ParseError> {
    let email = EmailAddress::parse(text(attrs, "user_email")?).map_err(|_| ParseError::Field("user_email"))?;
    Ok(Buyer {
        email,
        name: attrs.get("user_name").and_then(Value::as_str).map(str::to_owned),
        ls_customer_id: opt_int(attrs, "customer_id"),
        custom_data,
    })
}

fn subscription_state(id: i64, attrs: &Map<String, Value>) -> Result<SubscriptionState, ParseError> {
    Ok(SubscriptionState {
        subscription_id: id,
        status: text(attrs, "status")?.to_owned(),
        ends_at: opt_time(attrs, "ends_at"),
        trial_ends_at: opt_time(attrs, "trial_ends_at"),
        customer_portal_url: https_url(attrs, "customer_portal"),
        update_payment_url: https_url(attrs, "update_payment_method"),
        updated_at: time(attrs, "updated_at")?,
    })
}

/// `urls.<field>` when it is an `https://` URL (a link the customer is sent to: nothing else).
fn https_url(attrs: &Map<String, Value>, field: &str) -> Option<String> {
    let url = attrs.get("urls")?.get(field)?.as_str()?;
    let parsed = url::Url::parse(url).ok()?;
    (parsed.scheme() == "https" && parsed.host_str().is_some()).then(|| url.to_owned())
}

fn usd_cents(attrs: &Map<String, Value>, field: &'static str) -> Result<i64, ParseError> {
    let cents = int(attrs, field)?;
    if cents < 0 { Err(ParseError::Field(field)) } else { Ok(cents) }
}

/// Parses a signed body. Unknown event names parse to `Change::Ignored` (acknowledged, kept).
pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    // The whole body must be JSON, not only the parts read here: a typed parse skips the rest
    // unchecked, so invalid UTF-8 there would pass, and be altered when the body is stored.
    let json: Value = serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let envelope = envelope(json)?;
    let resource = envelope.resource;
    let attrs = resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
    let resource_id = resource.as_ref().map(|r| r.id.clone());
    let numeric_id = || -> Result<i64, ParseError> {
        resource_id.as_deref().and_then(|id| id.parse().ok()).ok_or(ParseError::Field("data.id"))
    };
    let expect_type = |expected: &'static str| -> Result<(), ParseError> {
        match &resource {
            Some(r) if r.kind == expected => Ok(()),
            _ => Err(ParseError::Field("data.type")),
        }
    };

    let change = match envelope.event_name.as_str() {
        "order_created" => {
            expect_type("orders")?;
            let order_id = numeric_id()?;
            let paid = text(&attrs, "status")? == "paid";
            let occurred_at = time(&attrs, "created_at")?;
            let variant_id =
                attrs.get("first_order_item").and_then(|item| item.get("variant_id")).and_then(Value::as_i64);
            Change::Purchase {
                order_id,
                variant_id,
                buyer: buyer(&attrs, envelope.custom_data.clone())?,
                subscription: None,
                payment: paid
                    .then(|| -> Result<LedgerEntry, ParseError> {
                        Ok(LedgerEntry {
                            kind: LedgerKind::Payment,
                            source: LedgerSource::Order,
                            source_id: order_id,
                            amount_cents: usd_cents(&attrs, "total_usd")?,
                            currency: "USD".into(),
                            occurred_at,
                        })
                    })
                    .transpose()?,
                paid,
                vend: true,
            }
        }
        name @ ("subscription_created"
        | "subscription_updated"
        | "subscription_cancelled"
        | "subscription_resumed"
        | "subscription_expired"
        | "subscription_paused"
        | "subscription_unpaused") => {
            expect_type("subscriptions")?;
            Change::Purchase {
                order_id: int(&attrs, "order_id")?,
                variant_id: opt_int(&attrs, "variant_id"),
                buyer: buyer(&attrs, envelope.custom_data.clone())?,
                subscription: Some(Box::new(subscription_state(numeric_id()?, &attrs)?)),
                payment: None,
                paid: true,
                vend: name == "subscription_created",
            }
        }
        name @ ("subscription_payment_success"
        | "subscription_payment_failed"
        | "subscription_payment_recovered"
        | "subscription_payment_refunded") => {
            expect_type("subscription-invoices")?;
            let invoice_id = numeric_id()?;
            let updated_at = time(&attrs, "updated_at")?;
            let entry = |kind| -> Result<LedgerEntry, ParseError> {
                Ok(LedgerEntry {
                    kind,
                    source: LedgerSource::Invoice,
                    source_id: invoice_id,
                    amount_cents: usd_cents(&attrs, "total_usd")?,
                    currency: "USD".into(),
                    occurred_at: updated_at,
                })
            };
            // The first invoice pays for the order that `order_created` already booked.
            let initial = attrs.get("billing_reason").and_then(Value::as_str) == Some("initial");
            let (signal, ledger) = match name {
                "subscription_payment_failed" => (Some(PaymentSignal::Failed), None),
                "subscription_payment_refunded" => (None, Some(entry(LedgerKind::Refund)?)),
                "subscription_payment_success" if !initial => {
                    (Some(PaymentSignal::Succeeded), Some(entry(LedgerKind::Payment)?))
                }
                _ => (Some(PaymentSignal::Succeeded), None),
            };
            Change::Invoice { subscription_id: int(&attrs, "subscription_id")?, signal, updated_at, ledger }
        }
        "order_refunded" => {
            expect_type("orders")?;
            let order_id = numeric_id()?;
            let full = attrs.get("refunded").and_then(Value::as_bool) == Some(true)
                || attrs.get("status").and_then(Value::as_str) == Some("refunded");
            Change::Refund {
                order_id,
                full,
                ledger: LedgerEntry {
                    kind: LedgerKind::Refund,
                    source: LedgerSource::Order,
                    source_id: order_id,
                    amount_cents: usd_cents(&attrs, "refunded_amount_usd")?,
                    currency: "USD".into(),
                    occurred_at: opt_time(&attrs, "refunded_at").map_or_else(|| time(&attrs, "updated_at"), Ok)?,
                },
            }
        }
        _ => Change::Ignored(Ignored::UnknownEvent),
    };
    Ok(Delivery {
        event_name: envelope.event_name,
        resource_type: resource.as_ref().map(|r| r.kind.clone()),
        resource_id,
        resource_updated_at: attrs.get("updated_at").and_then(Value::as_str).map(str::to_owned),
        test_mode: envelope.test_mode,
        change,
    })
}

/// Whether a subscription's key may be used now, from everything known about it. `over` is
/// a purchase refunded or ended for good by any fact received, whatever its age.
/// Revocation is final in the store, so `Revoked` here is never undone.
pub fn key_status_for(
    status: Option<&str>,
    ends_at: Option<DateTime<Utc>>,
    grace_until: Option<DateTime<Utc>>,
    over: bool,
    now: DateTime<Utc>,
) -> crate::domain::key::KeyStatus {
    use crate::domain::key::KeyStatus::{Active, Revoked, Suspended};
    if over || status == Some("expired") {
        return Revoked;
    }
    if status == Some("cancelled") && ends_at.is_some_and(|end| end <= now) {
        return Revoked;
    }
    if matches!(status, Some("paused" | "unpaid")) || grace_until.is_some_and(|g| g <= now) {
        return Suspended;
    }
    Active
}

/// The expiry a subscription's key should have, from its newest known state: a trial ends at
/// `trial_ends_at`; any other subscription status means a paid (or ending, which
/// [`key_status_for`] handles) term, so no expiry. `None`: no subscription, so the key keeps
/// the expiry it was made with (a plan's `trial_days`, an operator's choice).
pub fn key_expiry_for(status: Option<&str>, trial_ends_at: Option<DateTime<Utc>>) -> Option<Option<DateTime<Utc>>> {
    match status? {
        "on_trial" => trial_ends_at.map(Some),
        _ => Some(None),
    }
}

#[cfg(test)]
mod parser_fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::key::KeyStatus;

    #[test]
    fn the_documented_test_vector_verifies() {
        let body = br#"{"meta":{"event_name":"order_created"},"data":{"type":"orders","id":"1"}}"#;
        let good = "0f7291faddedf1addc20bd72006a07332d9dc6d9d3cbd7fc8c8cb0d5174644e3";
        assert!(signature_is_valid(b"whsec_test_secret", body, good));
        assert!(!signature_is_valid(b"whsec_test_secret", &body[1..], good));
        assert!(!signature_is_valid(b"other", body, good));
        assert!(!signature_is_valid(b"whsec_test_secret", body, "zz"));
        assert!(!signature_is_valid(b"whsec_test_secret", body, ""));
    }

    #[test]
    fn key_status_follows_the_subscription_lifecycle() {
        let now = Utc::now();
        let past = now - chrono::Duration::hours(1);
        let future = now + chrono::Duration::hours(1);
        let cases = [
            (Some("active"), None, None, false, KeyStatus::Active),
            (Some("on_trial"), None, None, false, KeyStatus::Active),
            (Some("cancelled"), Some(future), None, false, KeyStatus::Active),
            (Some("cancelled"), Some(past), None, false, KeyStatus::Revoked),
            (Some("expired"), None, None, false, KeyStatus::Revoked),
            (Some("paused"), None, None, false, KeyStatus::Suspended),
            (Some("unpaid"), None, None, false, KeyStatus::Suspended),
            (Some("past_due"), None, Some(future), false, KeyStatus::Active),
            (Some("active"), None, Some(past), false, KeyStatus::Suspended),
            (Some("active"), None, None, true, KeyStatus::Revoked),
            (None, None, None, false, KeyStatus::Active),
        ];
        for (status, ends_at, grace, refunded, expected) in cases {
            assert_eq!(
                key_status_for(status, ends_at, grace, refunded, now),
                expected,
                "{status:?} {ends_at:?} {grace:?}"
            );
        }
    }

    #[test]
    fn a_trial_sets_the_key_expiry_and_a_paid_term_clears_it() {
        let end = DateTime::parse_from_rfc3339("2030-01-15T00:00:00Z").expect("time").to_utc();
        assert_eq!(key_expiry_for(Some("on_trial"), Some(end)), Some(Some(end)));
        assert_eq!(key_expiry_for(Some("on_trial"), None), None, "a trial without an end changes nothing");
        assert_eq!(key_expiry_for(Some("active"), Some(end)), Some(None), "paid: no expiry");
        assert_eq!(key_expiry_for(Some("past_due"), None), Some(None));
        assert_eq!(key_expiry_for(None, Some(end)), None, "no subscription: the key's own expiry stays");
    }

    /// Found by `parser_fuzz`: serde's derive took a JSON array for the envelope's objects, and
    /// skipped invalid UTF-8 in fields it does not read.
    #[test]
    fn only_json_objects_of_valid_utf8_are_deliveries() {
        let array_meta = br#"{"meta":["order_created"],"data":{"type":"orders","id":"1","attributes":{}}}"#;
        assert_eq!(parse(array_meta).unwrap_err(), ParseError::Field("meta"));
        let array_data = br#"{"meta":{"event_name":"order_created"},"data":["orders","1",{}]}"#;
        assert_eq!(parse(array_data).unwrap_err(), ParseError::Field("data"));
        let mut bad_utf8 = br#"{"meta":{"event_name":"x","webhook_id":"AB"}}"#.to_vec();
        let at = bad_utf8.iter().position(|&b| b == b'A').expect("marker");
        bad_utf8[at] = 0xC1;
        assert!(matches!(parse(&bad_utf8), Err(ParseError::NotJson(_))));
        let null_optional = br#"{"meta":{"event_name":"x","test_mode":null,"custom_data":null},"data":null}"#;
        assert!(!parse(null_optional).expect("null is absent").test_mode);
    }

    #[test]
    fn unknown_events_are_ignored_not_errors() {
        let delivery = parse(
            br#"{"meta":{"event_name":"affiliate_activated"},"data":{"type":"affiliates","id":"9","attributes":{}}}"#,
        )
        .expect("parses");
        assert!(matches!(delivery.change, Change::Ignored(_)));
        assert!(matches!(parse(b"not json"), Err(ParseError::NotJson(_))));
        assert_eq!(
            parse(br#"{"meta":{"event_name":"order_created"},"data":{"type":"orders","id":"x","attributes":{}}}"#)
                .unwrap_err(),
            ParseError::Field("data.id")
        );
    }
}
