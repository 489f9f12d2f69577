//! Fuzzing the Lemon Squeezy parser with proptest, bounded to run in about a second as part of
//! the normal test run: arbitrary bytes, and valid deliveries of every kind mutated (values
//! swapped for any JSON, fields removed, bytes flipped, inserted, deleted, the body cut short).
//! The parser must never panic, and must either parse or say which field is wrong.

use super::{Change, Delivery, Ignored, LedgerEntry, ParseError, parse};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

/// Every event name the parser knows, and one it does not: mutations swap them around so a
/// body meets the branches of the other kinds.
const EVENT_NAMES: [&str; 16] = [
    "order_created",
    "order_refunded",
    "subscription_created",
    "subscription_updated",
    "subscription_cancelled",
    "subscription_resumed",
    "subscription_expired",
    "subscription_paused",
    "subscription_unpaused",
    "subscription_payment_success",
    "subscription_payment_failed",
    "subscription_payment_recovered",
    "subscription_payment_refunded",
    "license_key_created",
    "affiliate_activated",
    "",
];

const AT: &str = "2025-11-27T21:34:06.000000Z";

/// One valid delivery of each kind the parser acts on (contracts.md §1.7, §1.8).
fn valid_bodies() -> Vec<Value> {
    let order = json!({
        "meta": {"event_name": "order_created", "test_mode": false, "webhook_id": "b1d6c0f4", "custom_data": {"user_id": "42"}},
        "data": {"type": "orders", "id": "6922210", "attributes": {
            "store_id": 249054, "customer_id": 7238231, "user_name": "Ada Example", "user_email": "ada@example.com",
            "status": "paid", "total_usd": 999, "refunded": false, "refunded_amount_usd": 0, "refunded_at": null,
            "first_order_item": {"order_id": 6922210, "variant_id": 1115451, "price": 999},
            "created_at": AT, "updated_at": AT, "test_mode": false}}
    });
    let mut refund = order.clone();
    refund["meta"]["event_name"] = json!("order_refunded");
    refund["data"]["attributes"]["status"] = json!("refunded");
    refund["data"]["attributes"]["refunded"] = json!(true);
    refund["data"]["attributes"]["refunded_amount_usd"] = json!(999);
    refund["data"]["attributes"]["refunded_at"] = json!(AT);
    let subscription = json!({
        "meta": {"event_name": "subscription_cancelled", "test_mode": true},
        "data": {"type": "subscriptions", "id": "1674641", "attributes": {
            "order_id": 6922210, "variant_id": 1115451, "customer_id": 7238231, "user_email": "ada@example.com",
            "status": "cancelled", "cancelled": true, "ends_at": AT, "renews_at": AT, "created_at": AT, "updated_at": AT}}
    });
    let invoice = json!({
        "meta": {"event_name": "subscription_payment_success", "test_mode": false},
        "data": {"type": "subscription-invoices", "id": "9001", "attributes": {
            "subscription_id": 1674641, "customer_id": 7238231, "user_email": "ada@example.com",
            "billing_reason": "renewal", "status": "paid", "total_usd": 999, "created_at": AT, "updated_at": AT}}
    });
    let unknown = json!({"meta": {"event_name": "affiliate_activated"}, "data": {"type": "affiliates", "id": "5", "attributes": {}}});
    vec![order, refund, subscription, invoice, unknown]
}

/// Any JSON value, biased towards the strings and numbers the parser looks at.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::from),
        prop::sample::select(&EVENT_NAMES[..]).prop_map(Value::from),
        prop::sample::select(
            &[
                "orders",
                "subscriptions",
                "subscription-invoices",
                "paid",
                "refunded",
                "expired",
                "initial",
                "12",
                "-1",
                "ada@example.com",
                "not an email",
                AT,
                "2025-13-45T99:99:99Z",
                "1970-01-01T00:00:00Z",
            ][..]
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A change to a body's JSON tree: the node at `at` (counted over every node, wrapping) is
/// replaced, or removed from its parent.
#[derive(Debug, Clone)]
enum TreeEdit {
    Replace { at: usize, with: Value },
    Remove { at: usize },
}

/// A change to a body's bytes, at `at` (wrapping).
#[derive(Debug, Clone)]
enum ByteEdit {
    Flip { at: usize, mask: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize },
    Truncate { at: usize },
}

fn tree_edit() -> impl Strategy<Value = TreeEdit> {
    prop_oneof![
        (any::<usize>(), any_json()).prop_map(|(at, with)| TreeEdit::Replace { at, with }),
        any::<usize>().prop_map(|at| TreeEdit::Remove { at }),
    ]
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX).prop_map(|(at, mask)| ByteEdit::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| ByteEdit::Insert { at, byte }),
        any::<usize>().prop_map(|at| ByteEdit::Delete { at }),
        any::<usize>().prop_map(|at| ByteEdit::Truncate { at }),
    ]
}

/// How many nodes are below `value`, itself included.
fn node_count(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(node_count).sum(),
        Value::Object(fields) => fields.values().map(node_count).sum(),
        _ => 0,
    }
}

/// Applies `edit` to node number `target` in pre-order below `value` (`target` > 0: the root is
/// never replaced or removed here, so a tree edit always leaves an object at the top).
fn apply_tree_edit(value: &mut Value, target: usize, edit: &TreeEdit) {
    let mut seen = 1;
    let children: Vec<(Option<String>, usize)> = match value {
        Value::Array(items) => (0..items.len()).map(|i| (None, i)).collect(),
        Value::Object(fields) => fields.keys().cloned().map(|k| (Some(k), 0)).collect(),
        _ => return,
    };
    for (key, index) in children {
        let child_nodes = {
            let child = match (&key, &*value) {
                (Some(k), Value::Object(fields)) => fields.get(k),
                (None, Value::Array(items)) => items.get(index),
                _ => None,
            };
            child.map_or(0, node_count)
        };
        if target == seen {
            match (edit, &key, &mut *value) {
                (TreeEdit::Replace { with, .. }, Some(k), Value::Object(fields)) => {
                    fields.insert(k.clone(), with.clone());
                }
                (TreeEdit::Replace { with, .. }, None, Value::Array(items)) => items[index] = with.clone(),
                (TreeEdit::Remove { .. }, Some(k), Value::Object(fields)) => {
                    fields.remove(k);
                }
                (TreeEdit::Remove { .. }, None, Value::Array(items)) => {
                    items.remove(index);
                }
                _ => {}
            }
            return;
        }
        if target < seen + child_nodes {
            let child = match (&key, &mut *value) {
                (Some(k), Value::Object(fields)) => fields.get_mut(k),
                (None, Value::Array(items)) => items.get_mut(index),
                _ => None,
            };
            if let Some(child) = child {
                apply_tree_edit(child, target - seen, edit);
            }
            return;
        }
        seen += child_nodes;
    }
}

fn mutate(body: &Value, tree_edits: &[TreeEdit], byte_edits: &[ByteEdit]) -> Vec<u8> {
    let mut tree = body.clone();
    for edit in tree_edits {
        let at = match edit {
            TreeEdit::Replace { at, .. } | TreeEdit::Remove { at } => *at,
        };
        let nodes = node_count(&tree);
        if nodes > 1 {
            apply_tree_edit(&mut tree, 1 + at % (nodes - 1), edit);
        }
    }
    let mut bytes = serde_json::to_vec(&tree).unwrap_or_default();
    for edit in byte_edits {
        let len = bytes.len();
        match *edit {
            ByteEdit::Flip { at, mask } if len > 0 => bytes[at % len] ^= mask,
            ByteEdit::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
            ByteEdit::Delete { at } if len > 0 => {
                bytes.remove(at % len);
            }
            ByteEdit::Truncate { at } => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
    bytes
}

/// Money is never negative, whatever the body says.
fn ledger_is_sane(entry: &LedgerEntry) -> bool {
    entry.amount_cents >= 0
}

/// What must hold of any parse result: a delivery that agrees with its body, or an error that
/// says what is wrong.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match parse(bytes) {
        Ok(delivery) => check_delivery(bytes, delivery),
        Err(error) => {
            let message = error.to_string();
            let is_json = serde_json::from_slice::<Value>(bytes).is_ok();
            match &error {
                ParseError::NotJson(detail) => prop_assert!(!detail.is_empty() && !is_json, "{message}"),
                ParseError::Field(field) => prop_assert!(!field.is_empty() && is_json, "{message}"),
            }
            Ok(())
        }
    }
}

fn check_delivery(bytes: &[u8], delivery: Delivery) -> Result<(), TestCaseError> {
    let body: Value =
        serde_json::from_slice(bytes).map_err(|e| TestCaseError::fail(format!("parsed non-JSON: {e}")))?;
    prop_assert_eq!(Some(delivery.event_name.as_str()), body["meta"]["event_name"].as_str());
    prop_assert_eq!(delivery.test_mode, body["meta"]["test_mode"].as_bool().unwrap_or(false));
    prop_assert!(delivery.dedupe_key().starts_with(&delivery.event_name));
    match &delivery.change {
        Change::Purchase { payment, buyer, .. } => {
            prop_assert!(payment.as_ref().is_none_or(ledger_is_sane));
            prop_assert!(buyer.email.as_str().contains('@'));
        }
        Change::Invoice { ledger, .. } => prop_assert!(ledger.as_ref().is_none_or(ledger_is_sane)),
        Change::Refund { ledger, .. } => prop_assert!(ledger_is_sane(ledger)),
        Change::Ignored(_) => {}
    }
    // The test-mode policy never lets a test-mode delivery act, whatever it parsed to.
    let test_mode = delivery.test_mode;
    let policed = delivery.under_test_mode_policy(false);
    prop_assert!(!test_mode || matches!(policed.change, Change::Ignored(Ignored::TestMode)));
    Ok(())
}

/// Bounded so the whole module runs in about a second in a debug build; no regression files.
fn bounded(cases: u32) -> Config {
    Config { cases, failure_persistence: None, ..Config::default() }
}

#[test]
fn the_unmutated_bodies_parse() {
    for body in valid_bodies() {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        assert!(parse(&bytes).is_ok(), "{body}");
        assert!(check(&bytes).is_ok());
    }
}

proptest! {
    #![proptest_config(bounded(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes)?;
    }

    #[test]
    fn mutated_deliveries_parse_or_name_the_field(
        which in 0..5usize,
        tree_edits in prop::collection::vec(tree_edit(), 0..4),
        byte_edits in prop::collection::vec(byte_edit(), 0..2),
    ) {
        let bodies = valid_bodies();
        let bytes = mutate(&bodies[which % bodies.len()], &tree_edits, &byte_edits);
        check(&bytes)?;
    }
}
