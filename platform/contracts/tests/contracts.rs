//! The contracts against their committed snapshot (`contracts.snapshot.json`), so a breaking change cannot
//! reach main without a version bump.
//!
//! The surface is every type that crosses a deployment boundary, recorded by the JSON shape of an example
//! value (field names and JSON types) and, for enums, the set of their wire names:
//! - each event type with its `VERSION` and aggregate: a breaking change to its payload needs that
//!   event's `VERSION` bumped;
//! - the site contract (cart API, reservation API, payment API, manifest, `ApiError`, value types): a
//!   breaking change needs `CONTRACT_VERSION` bumped.
//!
//! Breaking: a field removed or changed in type, an enum value added or removed. Compatible: a field
//! added (readers ignore unknown fields). Either way the snapshot must then be recorded again:
//! `TESSERA_UPDATE_CONTRACTS=1 cargo test -p tessera-contracts --test contracts` (it refuses to record a
//! breaking change without the bump), and the new snapshot is committed with the change.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use tessera_contracts::descriptor::{EventContract, FragmentDescriptor, NavEntry, SigningKey};
use tessera_contracts::domain::{Money, OrderId, Quantity, ReservationId, Role, ServiceName, Sku};
use tessera_contracts::events::{
    Event, OrderCancelConfirmed, OrderCancelRefused, OrderCancelRequested, OrderCancelled, OrderFulfilled, OrderPaid, OrderShort, ProductChanged, StockChanged,
};
use tessera_contracts::inventory::{ExtendRequest, InsufficientStock, Line, Reservation, ReservationStatus, ReserveRequest, Shortage};
use tessera_contracts::manifest::{AssetKind, FragmentManifest, ManifestAsset};
use tessera_contracts::payments::{CancelRequest, CreatePayment, Payment, PaymentStatus, RefundRequest, WebhookEvent, WebhookKind};
use tessera_contracts::{cart::CartSummary, ApiError, CONTRACT_VERSION};

/// The JSON shape of a value: objects keep their keys, arrays the shape of their first element, scalars
/// their JSON type.
fn shape(value: &Value) -> Value {
    match value {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => json!([items.first().map(shape).unwrap_or(json!("empty"))]),
        Value::Object(fields) => Value::Object(fields.iter().map(|(key, value)| (key.clone(), shape(value))).collect()),
    }
}

fn of<T: Serialize>(value: &T) -> Value {
    shape(&serde_json::to_value(value).expect("serialisable"))
}

fn names<T: Serialize>(values: &[T]) -> Value {
    let mut names: Vec<Value> = values.iter().map(|value| serde_json::to_value(value).expect("serialisable")).collect();
    names.sort_by_key(|name| name.to_string());
    Value::Array(names)
}

fn event<E: Event>(example: E) -> (String, Value) {
    (E::TYPE.to_owned(), json!({ "version": E::VERSION, "aggregate": E::AGGREGATE, "payload": of(&example) }))
}

fn sku() -> Sku {
    Sku::parse("MUG-STN-01").unwrap()
}

fn order() -> OrderId {
    OrderId::parse("0a1b").unwrap()
}

fn reservation() -> ReservationId {
    ReservationId::parse("2c3d").unwrap()
}

fn line() -> Line {
    Line { sku: sku(), quantity: Quantity::parse(2).unwrap() }
}

fn shortage() -> Shortage {
    Shortage { sku: sku(), requested: 3, available: 1 }
}

fn payment() -> Payment {
    Payment {
        id: "pay_1".into(),
        status: PaymentStatus::Succeeded,
        reference: "order-1".into(),
        amount_minor: 1450,
        currency: "EUR".into(),
        pay_url: "/sandbox-pay/pay/pay_1".into(),
        created_at_ms: 1,
    }
}

/// Everything that crosses a deployment boundary, as it is now.
fn surface() -> Value {
    let events: BTreeMap<String, Value> = [
        event(StockChanged { sku: sku(), on_hand: 3, available: 2 }),
        event(OrderPaid { order_id: order(), reservation_id: reservation(), lines: vec![line()] }),
        event(OrderCancelled { order_id: order(), reservation_id: reservation() }),
        event(OrderCancelRequested { order_id: order(), reservation_id: reservation() }),
        event(OrderCancelConfirmed { order_id: order() }),
        event(OrderCancelRefused { order_id: order(), reason: "shipped".into() }),
        event(OrderFulfilled { order_id: order(), reservation_id: reservation() }),
        event(OrderShort { order_id: order(), shortages: vec![shortage()] }),
        event(ProductChanged { product_id: "p".into(), name: "Mug".into(), price_minor: 1450, currency: "EUR".into(), skus: vec![sku()] }),
    ]
    .into_iter()
    .collect();
    let asset = ManifestAsset { kind: AssetKind::Js, path: "pkg/x.js".into(), integrity: "sha384-x".into(), bytes: 1 };
    let site = json!({
        "cart.CartSummary": of(&CartSummary { item_count: 1, message: Some("held".into()) }),
        "domain.Money": of(&Money { minor: 100, currency: "EUR".into() }),
        "inventory.ReserveRequest": of(&ReserveRequest { idempotency_key: "k".into(), owner: "o".into(), lines: vec![line()], ttl_seconds: 60, replaces: vec![reservation()] }),
        "inventory.ExtendRequest": of(&ExtendRequest { ttl_seconds: 60 }),
        "inventory.Reservation": of(&Reservation { id: reservation(), status: ReservationStatus::Soft, owner: "o".into(), order_id: Some(order()), lines: vec![line()], created_at_ms: 1, expires_at_ms: 2, replayed: true }),
        "inventory.InsufficientStock": of(&InsufficientStock::new(vec![shortage()])),
        "manifest.FragmentManifest": of(&FragmentManifest { name: "n".into(), version: "1".into(), build_id: "b".into(), route_prefix: "/n".into(), contract_version: 1, profile: "dev".into(), assets: vec![asset] }),
        "payments.CreatePayment": of(&CreatePayment { idempotency_key: "k".into(), reference: "r".into(), amount_minor: 1, currency: "EUR".into(), description: "d".into(), return_url: "/".into() }),
        "payments.Payment": of(&payment()),
        "payments.RefundRequest": of(&RefundRequest { idempotency_key: "k".into(), reason: "r".into() }),
        "payments.CancelRequest": of(&CancelRequest { reason: "r".into() }),
        "payments.WebhookEvent": of(&WebhookEvent { id: "e".into(), kind: WebhookKind::PaymentSucceeded, created_at_ms: 1, payment: payment(), message: Some("m".into()) }),
        "descriptor.FragmentDescriptor": of(&FragmentDescriptor {
            nav: Some(NavEntry { label: "Stock".into(), role: Some(Role::InventoryAdmin) }),
            build_id: Some("b".into()),
            assets: vec!["pkg/n-1.js".into()],
            publishes: vec![EventContract { event_type: "n.changed".into(), version: 1 }],
            consumes: vec![EventContract { event_type: "m.changed".into(), version: 1 }],
            signing_keys: vec![SigningKey { kid: "k".into(), ed25519: "p".into() }],
            ..FragmentDescriptor::named(ServiceName::of("n"), "/n")
        }),
        "enum domain.Role": names(&Role::ALL),
        "ApiError": of(&ApiError::BadRequest("m".into())),
        "enum ApiError.kind": names(&[
            ApiError::BadRequest(String::new()), ApiError::Unauthorized, ApiError::Forbidden(String::new()), ApiError::NotFound(String::new()),
            ApiError::Conflict(String::new()), ApiError::Unavailable(String::new()), ApiError::Internal,
        ].iter().map(|error| serde_json::to_value(error).unwrap()["kind"].clone()).collect::<Vec<_>>()),
        "enum inventory.ReservationStatus": names(&ReservationStatus::ALL),
        "enum payments.PaymentStatus": names(&[PaymentStatus::RequiresPaymentMethod, PaymentStatus::RequiresAction, PaymentStatus::Succeeded, PaymentStatus::Refunded, PaymentStatus::Canceled]),
        "enum payments.WebhookKind": names(&[WebhookKind::PaymentSucceeded, WebhookKind::PaymentFailed, WebhookKind::PaymentRefunded, WebhookKind::PaymentCanceled]),
        "enum manifest.AssetKind": names(&[AssetKind::Js, AssetKind::Wasm]),
    });
    json!({ "contract_version": CONTRACT_VERSION, "site": site, "events": events })
}

/// How `new` breaks readers of `old` (at `path`), if it does.
fn breaks(path: &str, old: &Value, new: &Value, found: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(old_fields), Value::Object(new_fields)) => {
            for (key, old_value) in old_fields {
                match new_fields.get(key) {
                    Some(new_value) => breaks(&format!("{path}.{key}"), old_value, new_value, found),
                    None => found.push(format!("{path}.{key} was removed")),
                }
            }
        }
        (Value::Array(old_items), Value::Array(new_items)) if path.contains("enum ") && old_items != new_items => {
            found.push(format!("{path} changed from {old} to {new}"));
        }
        (Value::Array(_), Value::Array(_)) if path.contains("enum ") => {}
        (Value::Array(old_items), Value::Array(new_items)) => match (old_items.first(), new_items.first()) {
            (Some(old_item), Some(new_item)) => breaks(&format!("{path}[]"), old_item, new_item, found),
            _ if old_items != new_items => found.push(format!("{path} changed from {old} to {new}")),
            _ => {}
        },
        _ if old != new => found.push(format!("{path} changed from {old} to {new}")),
        _ => {}
    }
}

/// Breaking changes from `committed` to `current` that come without the version bump they need.
fn unbumped_breaks(committed: &Value, current: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut site = Vec::new();
    breaks("site", &committed["site"], &current["site"], &mut site);
    if !site.is_empty() && committed["contract_version"] == current["contract_version"] {
        problems.extend(site.into_iter().map(|change| format!("{change}: a breaking change to the site contract needs CONTRACT_VERSION bumped")));
    }
    for (event_type, old) in committed["events"].as_object().into_iter().flatten() {
        let Some(new) = current["events"].get(event_type) else {
            problems.push(format!("event {event_type} was removed: its consumers still read it"));
            continue;
        };
        let mut changes = Vec::new();
        breaks(event_type, &old["payload"], &new["payload"], &mut changes);
        if old["aggregate"] != new["aggregate"] {
            changes.push(format!("{event_type}'s aggregate changed from {} to {}", old["aggregate"], new["aggregate"]));
        }
        if !changes.is_empty() && old["version"] == new["version"] {
            problems.extend(changes.into_iter().map(|change| format!("{change}: bump {event_type}'s VERSION")));
        }
    }
    problems
}

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contracts.snapshot.json");

#[test]
fn the_contracts_match_their_committed_snapshot() {
    let current = surface();
    let update = std::env::var_os("TESSERA_UPDATE_CONTRACTS").is_some();
    let committed: Value = match std::fs::read_to_string(SNAPSHOT) {
        Ok(text) => serde_json::from_str(&text).expect("a JSON snapshot"),
        Err(_) if update => json!({ "contract_version": CONTRACT_VERSION, "site": {}, "events": {} }),
        Err(error) => panic!("{SNAPSHOT}: {error} (it is committed beside the crate)"),
    };
    let problems = unbumped_breaks(&committed, &current);
    assert!(problems.is_empty(), "breaking contract changes without a version bump:\n  {}", problems.join("\n  "));
    if committed != current {
        if update {
            std::fs::write(SNAPSHOT, serde_json::to_string_pretty(&current).unwrap() + "\n").unwrap();
            return;
        }
        panic!(
            "the contracts changed (compatibly, or with their version bumped); record the new snapshot and commit it:\n  \
             TESSERA_UPDATE_CONTRACTS=1 cargo test -p tessera-contracts --test contracts\ncurrent:\n{}",
            serde_json::to_string_pretty(&current).unwrap()
        );
    }
}

#[test]
fn the_check_tells_breaking_changes_from_compatible_ones() {
    let committed = surface();
    // A field removed from an event, without and with its version bumped.
    let mut removed = committed.clone();
    removed["events"]["inventory.stock_changed"]["payload"].as_object_mut().unwrap().remove("available");
    assert_eq!(unbumped_breaks(&committed, &removed), ["inventory.stock_changed.available was removed: bump inventory.stock_changed's VERSION"]);
    removed["events"]["inventory.stock_changed"]["version"] = json!(2);
    assert!(unbumped_breaks(&committed, &removed).is_empty());
    // A field's type changed in the site contract, without and with CONTRACT_VERSION bumped.
    let mut retyped = committed.clone();
    retyped["site"]["cart.CartSummary"]["item_count"] = json!("string");
    assert_eq!(unbumped_breaks(&committed, &retyped).len(), 1);
    retyped["contract_version"] = json!(CONTRACT_VERSION + 1);
    assert!(unbumped_breaks(&committed, &retyped).is_empty());
    // A new enum value breaks old readers; a new field does not.
    let mut widened = committed.clone();
    widened["site"]["enum inventory.ReservationStatus"].as_array_mut().unwrap().push(json!("on_hold"));
    assert_eq!(unbumped_breaks(&committed, &widened).len(), 1);
    let mut added = committed.clone();
    added["site"]["payments.Payment"]["captured_at_ms"] = json!("number");
    added["events"]["cart.order_paid"]["payload"]["note"] = json!("string");
    assert!(unbumped_breaks(&committed, &added).is_empty());
    // A removed event breaks its consumers.
    let mut gone = committed.clone();
    gone["events"].as_object_mut().unwrap().remove("catalog.product_changed");
    assert_eq!(unbumped_breaks(&committed, &gone).len(), 1);
}
