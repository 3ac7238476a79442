//! Model-based test: random sequences of every inventory operation run against the real service code on
//! a real SQLite database and against a small reference model, with the clock injected. After each step
//! the outcome, every counter and every reservation's status must match the model, and the invariant
//! checker must find nothing.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use sqlx::AnyPool;
use tessera_contracts::domain::{OrderId, Quantity, ReservationId, ServiceName, Sku};
use tessera_contracts::events::{Envelope, OrderCancelled, OrderPaid};
use tessera_contracts::inventory::{Line, ReservationStatus, ReserveRequest};
use tessera_contracts::ApiError;
use tessera_fragment::db::StoreSettings;
use tessera_fragment::outbox::Outbox;
use tessera_inventory::ledger::Cause;
use tessera_inventory::model::Counter;
use tessera_inventory::movements::{self, OpError, StaffMovement};
use tessera_inventory::reservations::{self, Applied, ValidRequest};

const SKUS: [&str; 3] = ["A-1", "B-2", "C-3"];
const START_MS: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Receive { sku: usize, quantity: i64 },
    Order { sku: usize, quantity: i64 },
    Shrink { sku: usize, quantity: i64, damaged: bool },
    Return { sku: usize, quantity: i64, damaged: bool },
    Adjust { sku: usize, counter: Counter, delta: i64 },
    Reserve { key: usize, lines: Vec<(usize, i64)>, ttl: i64 },
    Extend { reservation: usize, ttl: i64 },
    Release { reservation: usize },
    Pay { reservation: usize },
    Cancel { reservation: usize },
    Fulfil { reservation: usize },
    Advance { seconds: i64 },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    let sku = 0..SKUS.len();
    let counter = prop_oneof![Just(Counter::OnHand), Just(Counter::Unavailable), Just(Counter::SafetyStock)];
    let delta = prop_oneof![-6i64..=-1, 1i64..=6];
    prop_oneof![
        2 => (sku.clone(), 1i64..=8).prop_map(|(sku, quantity)| Op::Receive { sku, quantity }),
        1 => (sku.clone(), 1i64..=10).prop_map(|(sku, quantity)| Op::Order { sku, quantity }),
        2 => (sku.clone(), 1i64..=6, any::<bool>()).prop_map(|(sku, quantity, damaged)| Op::Shrink { sku, quantity, damaged }),
        1 => (sku.clone(), 1i64..=4, any::<bool>()).prop_map(|(sku, quantity, damaged)| Op::Return { sku, quantity, damaged }),
        2 => (sku.clone(), counter, delta).prop_map(|(sku, counter, delta)| Op::Adjust { sku, counter, delta }),
        8 => (0usize..8, prop::collection::vec((0..SKUS.len(), 1i64..=5), 1..=3), prop_oneof![Just(30i64), Just(60), 30i64..=300])
            .prop_map(|(key, lines, ttl)| Op::Reserve { key, lines, ttl }),
        2 => (0usize..12, 30i64..=300).prop_map(|(reservation, ttl)| Op::Extend { reservation, ttl }),
        2 => (0usize..12).prop_map(|reservation| Op::Release { reservation }),
        3 => (0usize..12).prop_map(|reservation| Op::Pay { reservation }),
        1 => (0usize..12).prop_map(|reservation| Op::Cancel { reservation }),
        2 => (0usize..12).prop_map(|reservation| Op::Fulfil { reservation }),
        4 => (10i64..=120).prop_map(|seconds| Op::Advance { seconds }),
        1 => Just(Op::Sweep),
    ]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    on_hand: i64,
    soft: i64,
    hard: i64,
    unavailable: i64,
    safety: i64,
    incoming: i64,
}

impl Counters {
    fn free(&self) -> i64 {
        self.on_hand - self.soft - self.hard - self.unavailable - self.safety
    }
    fn valid(&self) -> bool {
        [self.on_hand, self.soft, self.hard, self.unavailable, self.safety, self.incoming].iter().all(|v| *v >= 0)
            && self.soft + self.hard + self.unavailable <= self.on_hand
    }
}

#[derive(Debug, Clone)]
struct ModelReservation {
    id: String,
    lines: Vec<(String, i64)>,
    status: ReservationStatus,
    expires_at: i64,
    order_id: Option<String>,
}

/// The reference model: plain maps, no database, the rules written the obvious way.
#[derive(Debug, Clone)]
struct Model {
    now: i64,
    stock: BTreeMap<String, Counters>,
    reservations: Vec<ModelReservation>,
    /// Idempotency key → (fingerprint, reservation index).
    keys: HashMap<String, (String, usize)>,
}

/// What an operation answered, coarsely.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Replayed,
    Short(Vec<(String, i64)>),
    Conflict,
    NotFound,
    Nothing,
}

fn outcome_of(error: OpError) -> Outcome {
    match error {
        OpError::Short(short) => Outcome::Short(short.shortages.into_iter().map(|s| (s.sku.to_string(), s.available)).collect()),
        OpError::Api(ApiError::Conflict(_)) => Outcome::Conflict,
        OpError::Api(ApiError::NotFound(_)) => Outcome::NotFound,
        other => panic!("unexpected error: {other:?}"),
    }
}

impl Model {
    fn lapsed(&self, index: usize) -> bool {
        let r = &self.reservations[index];
        r.status == ReservationStatus::Soft && r.expires_at <= self.now
    }

    fn expire(&mut self, index: usize) {
        let lines = self.reservations[index].lines.clone();
        for (sku, quantity) in lines {
            self.stock.get_mut(&sku).unwrap().soft -= quantity;
        }
        self.reservations[index].status = ReservationStatus::Expired;
    }

    /// Holds every line (soft or hard), expiring lapsed holds on a SKU that runs short; all or nothing.
    fn hold(&mut self, lines: &[(String, i64)], hard: bool) -> Result<(), Vec<(String, i64)>> {
        let mut trial = self.clone();
        let mut short = Vec::new();
        for (sku, quantity) in lines {
            if trial.stock[sku].free() < *quantity {
                let lapsed: Vec<usize> =
                    (0..trial.reservations.len()).filter(|i| trial.lapsed(*i) && trial.reservations[*i].lines.iter().any(|(s, _)| s == sku)).collect();
                for i in lapsed {
                    trial.expire(i);
                }
            }
            let counters = trial.stock.get_mut(sku).unwrap();
            if counters.free() < *quantity {
                short.push((sku.clone(), counters.free().max(0)));
            } else if hard {
                counters.hard += quantity;
            } else {
                counters.soft += quantity;
            }
        }
        if short.is_empty() {
            *self = trial;
            Ok(())
        } else {
            Err(short)
        }
    }

    fn staff(&mut self, sku: usize, change: impl FnOnce(&mut Counters)) -> Outcome {
        let counters = self.stock.get_mut(SKUS[sku]).unwrap();
        let mut next = *counters;
        change(&mut next);
        if next.valid() {
            *counters = next;
            Outcome::Ok
        } else {
            Outcome::Conflict
        }
    }
}

/// The model's lines as the contract carries them.
fn contract_lines(lines: &[(String, i64)]) -> Vec<Line> {
    lines.iter().map(|(sku, quantity)| Line { sku: sku.parse().unwrap(), quantity: Quantity::parse(*quantity).unwrap() }).collect()
}

/// A reservation the model knows by its text (empty until the database said which it is).
fn rid(id: &str) -> ReservationId {
    ReservationId::parse(if id.is_empty() { "0" } else { id }).unwrap()
}

/// The order of the model's reservation `index` (an order id is a UUID's text: hex digits).
fn order_of(index: usize) -> String {
    format!("{index:08x}")
}

fn sorted_lines(lines: &[(usize, i64)]) -> Option<Vec<(String, i64)>> {
    let mut named: Vec<(String, i64)> = lines.iter().map(|(s, q)| (SKUS[*s].to_owned(), *q)).collect();
    named.sort();
    let distinct = named.windows(2).all(|pair| pair[0].0 != pair[1].0);
    distinct.then_some(named)
}

struct Real {
    db: AnyPool,
    outbox: Outbox,
}

fn envelope(event_type: &str, aggregate: &str, payload: serde_json::Value) -> Envelope {
    Envelope {
        id: uuid::Uuid::new_v4().to_string(),
        event_type: event_type.into(),
        version: 1,
        aggregate_type: "order".into(),
        aggregate_id: aggregate.into(),
        sequence: 1,
        occurred_at_ms: 0,
        producer: ServiceName::CART,
        payload,
    }
}

impl Real {
    async fn staff(&self, sku: usize, movement: StaffMovement, now: i64) -> Outcome {
        let sku = Sku::parse(SKUS[sku]).unwrap();
        let cause = Cause { reason: Some("model".into()), ..Cause::by("model") };
        match movements::record(&self.db, &self.outbox, &sku, "main", movement, false, cause, now).await {
            Ok(_) => Outcome::Ok,
            Err(error) => outcome_of(error),
        }
    }
}

/// Runs one step on both sides and returns (model outcome, real outcome).
async fn step(model: &mut Model, real: &Real, op: &Op) -> (Outcome, Outcome) {
    let now = model.now;
    match op.clone() {
        Op::Receive { sku, quantity } => {
            let expected = model.staff(sku, |c| {
                c.on_hand += quantity;
                c.incoming -= quantity.min(c.incoming);
            });
            (expected, real.staff(sku, StaffMovement::Receive { quantity }, now).await)
        }
        Op::Order { sku, quantity } => (model.staff(sku, |c| c.incoming += quantity), real.staff(sku, StaffMovement::Order { quantity }, now).await),
        Op::Shrink { sku, quantity, damaged } => {
            let expected = model.staff(sku, |c| {
                c.on_hand -= quantity;
                if damaged {
                    c.unavailable -= quantity;
                }
            });
            (expected, real.staff(sku, StaffMovement::Shrinkage { quantity, damaged }, now).await)
        }
        Op::Return { sku, quantity, damaged } => {
            let expected = model.staff(sku, |c| {
                c.on_hand += quantity;
                if damaged {
                    c.unavailable += quantity;
                }
            });
            (expected, real.staff(sku, StaffMovement::Return { quantity, damaged }, now).await)
        }
        Op::Adjust { sku, counter, delta } => {
            let expected = model.staff(sku, |c| match counter {
                Counter::OnHand => c.on_hand += delta,
                Counter::Unavailable => c.unavailable += delta,
                Counter::SafetyStock => c.safety += delta,
            });
            (expected, real.staff(sku, StaffMovement::Adjust { counter, delta }, now).await)
        }
        Op::Reserve { key, lines, ttl } => reserve(model, real, now, key, lines, ttl).await,
        Op::Extend { reservation, ttl } => extend(model, real, now, reservation, ttl).await,
        Op::Release { reservation } => release(model, real, now, reservation).await,
        Op::Pay { reservation } => pay(model, real, now, reservation).await,
        Op::Cancel { reservation } => cancel(model, real, now, reservation).await,
        Op::Fulfil { reservation } => fulfil(model, real, now, reservation).await,
        Op::Advance { seconds } => {
            model.now += seconds * 1000;
            (Outcome::Ok, Outcome::Ok)
        }
        Op::Sweep => {
            let lapsed: Vec<usize> = (0..model.reservations.len()).filter(|i| model.lapsed(*i)).collect();
            for i in &lapsed {
                model.expire(*i);
            }
            let swept = reservations::sweep(&real.db, &real.outbox, now, 1_000).await.unwrap();
            assert_eq!(swept, lapsed.len(), "the sweeper expires exactly the lapsed holds");
            (Outcome::Ok, Outcome::Ok)
        }
    }
}

/// A new soft reservation: all or nothing against what is available, replayed for a key used before.
async fn reserve(model: &mut Model, real: &Real, now: i64, key: usize, lines: Vec<(usize, i64)>, ttl: i64) -> (Outcome, Outcome) {
    let Some(named) = sorted_lines(&lines) else {
        return (Outcome::Nothing, Outcome::Nothing);
    };
    let key = format!("key-{key}");
    let request = ReserveRequest { idempotency_key: key.clone(), owner: "model".into(), lines: contract_lines(&named), ttl_seconds: ttl, replaces: Vec::new() };
    let valid = ValidRequest::parse(&request).unwrap();
    let expected = match model.keys.get(&key) {
        Some((hash, _)) if *hash == valid.hash => Outcome::Replayed,
        Some(_) => Outcome::Conflict,
        None => match model.hold(&named, false) {
            Ok(()) => Outcome::Ok,
            Err(short) => Outcome::Short(short),
        },
    };
    let actual = match reservations::reserve(&real.db, &real.outbox, &ServiceName::CART, &valid, now).await {
        Ok(reservation) if reservation.replayed => {
            assert_eq!(reservation.id.as_str(), model.reservations[model.keys[&key].1].id, "a replay returns the first reservation");
            Outcome::Replayed
        }
        Ok(reservation) => {
            if expected == Outcome::Ok {
                model.keys.insert(key, (valid.hash.clone(), model.reservations.len()));
                model.reservations.push(ModelReservation {
                    id: reservation.id.to_string(),
                    lines: named,
                    status: ReservationStatus::Soft,
                    expires_at: now + ttl * 1000,
                    order_id: None,
                });
            }
            Outcome::Ok
        }
        Err(error) => outcome_of(error),
    };
    (expected, actual)
}

/// A live soft reservation held longer; an ended or lapsed one refused.
async fn extend(model: &mut Model, real: &Real, now: i64, reservation: usize, ttl: i64) -> (Outcome, Outcome) {
    let Some(index) = pick(model, reservation) else {
        return (Outcome::Nothing, Outcome::Nothing);
    };
    let live = model.reservations[index].status == ReservationStatus::Soft && !model.lapsed(index);
    let expected = if live {
        model.reservations[index].expires_at = now + ttl * 1000;
        Outcome::Ok
    } else {
        Outcome::Conflict
    };
    let actual = match reservations::extend(&real.db, &ServiceName::CART, &rid(&model.reservations[index].id), ttl, now).await {
        Ok(_) => Outcome::Ok,
        Err(error) => outcome_of(error),
    };
    (expected, actual)
}

/// The cart lets a soft reservation go (one that lapsed unswept is expired instead).
async fn release(model: &mut Model, real: &Real, now: i64, reservation: usize) -> (Outcome, Outcome) {
    let Some(index) = pick(model, reservation) else {
        return (Outcome::Nothing, Outcome::Nothing);
    };
    let expected = match model.reservations[index].status {
        ReservationStatus::Soft if model.lapsed(index) => {
            model.expire(index);
            Outcome::Ok
        }
        ReservationStatus::Soft => {
            model.expire(index);
            model.reservations[index].status = ReservationStatus::Released;
            Outcome::Ok
        }
        ReservationStatus::Hard => Outcome::Conflict,
        _ => Outcome::Ok,
    };
    let id = model.reservations[index].id.clone();
    let actual = match reservations::release(&real.db, &real.outbox, &ServiceName::CART, &rid(&id), now).await {
        Ok(_) => Outcome::Ok,
        Err(error) => outcome_of(error),
    };
    (expected, actual)
}

/// `cart.order_paid`: a soft reservation becomes hard, or the order is short.
async fn pay(model: &mut Model, real: &Real, now: i64, reservation: usize) -> (Outcome, Outcome) {
    let Some(index) = pick(model, reservation) else {
        return (Outcome::Nothing, Outcome::Nothing);
    };
    let order_id = order_of(index);
    let r = model.reservations[index].clone();
    let expected = if r.status == ReservationStatus::Soft && !model.lapsed(index) {
        for (sku, quantity) in &r.lines {
            let counters = model.stock.get_mut(sku).unwrap();
            counters.soft -= quantity;
            counters.hard += quantity;
        }
        model.reservations[index].status = ReservationStatus::Hard;
        model.reservations[index].order_id = Some(order_id.clone());
        Outcome::Ok
    } else if r.status == ReservationStatus::Hard && r.order_id.as_deref() == Some(order_id.as_str()) {
        Outcome::Nothing
    } else if matches!(r.status, ReservationStatus::Hard | ReservationStatus::Fulfilled | ReservationStatus::Cancelled) {
        Outcome::Conflict
    } else {
        if model.lapsed(index) {
            model.expire(index);
        }
        let of_order = |status: ReservationStatus| model.reservations.iter().any(|m| m.order_id.as_deref() == Some(order_id.as_str()) && m.status == status);
        if of_order(ReservationStatus::Hard) || of_order(ReservationStatus::Fulfilled) {
            Outcome::Nothing
        } else if of_order(ReservationStatus::Cancelled) {
            Outcome::Conflict
        } else {
            match model.hold(&r.lines, true) {
                Ok(()) => {
                    model.reservations.push(ModelReservation {
                        id: String::new(), // filled from the database below
                        lines: r.lines.clone(),
                        status: ReservationStatus::Hard,
                        expires_at: now,
                        order_id: Some(order_id.clone()),
                    });
                    Outcome::Ok
                }
                Err(_) => Outcome::Short(Vec::new()),
            }
        }
    };
    let event = OrderPaid { order_id: OrderId::parse(&order_id).unwrap(), reservation_id: rid(&r.id), lines: contract_lines(&r.lines) };
    let envelope = envelope("cart.order_paid", &order_id, serde_json::to_value(&event).unwrap());
    // As the runtime's event endpoint runs it: one transaction, committed when the handler succeeds.
    let mut tx = real.db.begin().await.unwrap();
    let actual = match reservations::order_paid(&mut tx, &real.outbox, &envelope, &event, now).await {
        Ok(applied) => {
            tx.commit().await.unwrap();
            match applied {
                Applied::Done => Outcome::Ok,
                Applied::Nothing(_) => Outcome::Nothing,
                Applied::Short(_) => Outcome::Short(Vec::new()),
            }
        }
        Err(error) => outcome_of(error),
    };
    if let Some(last) = model.reservations.last_mut().filter(|m| m.id.is_empty() && actual == Outcome::Ok) {
        let (id,): (String,) = sqlx::query_as("SELECT id FROM reservations WHERE order_id = $1 AND status = $2")
            .bind(&order_id)
            .bind(ReservationStatus::Hard)
            .fetch_one(&real.db)
            .await
            .expect("the new hard reservation");
        last.id = id;
    }
    (expected, actual)
}

/// `cart.order_cancelled`: the order's stock goes back on sale.
async fn cancel(model: &mut Model, real: &Real, now: i64, reservation: usize) -> (Outcome, Outcome) {
    let Some(index) = pick(model, reservation) else {
        return (Outcome::Nothing, Outcome::Nothing);
    };
    let order_id = order_of(index);
    let id = model.reservations[index].id.clone();
    let matching: Vec<usize> = (0..model.reservations.len())
        .filter(|i| model.reservations[*i].id == id || model.reservations[*i].order_id.as_deref() == Some(order_id.as_str()))
        .collect();
    let active: Vec<usize> = matching.iter().copied().filter(|i| !model.reservations[*i].status.is_terminal()).collect();
    let expected = if !active.is_empty() {
        for i in active {
            let hard = model.reservations[i].status == ReservationStatus::Hard;
            for (sku, quantity) in model.reservations[i].lines.clone() {
                let counters = model.stock.get_mut(&sku).unwrap();
                if hard {
                    counters.hard -= quantity;
                } else {
                    counters.soft -= quantity;
                }
            }
            model.reservations[i].status = ReservationStatus::Cancelled;
            model.reservations[i].order_id.get_or_insert_with(|| order_id.clone());
        }
        Outcome::Ok
    } else if matching.iter().any(|i| model.reservations[*i].status == ReservationStatus::Fulfilled) {
        Outcome::Conflict
    } else {
        Outcome::Nothing
    };
    let event = OrderCancelled { order_id: OrderId::parse(&order_id).unwrap(), reservation_id: rid(&id) };
    let envelope = envelope("cart.order_cancelled", &order_id, serde_json::to_value(&event).unwrap());
    let mut tx = real.db.begin().await.unwrap();
    let actual = match reservations::order_cancelled(&mut tx, &real.outbox, &envelope, &event, now).await {
        Ok(applied) => {
            tx.commit().await.unwrap();
            if matches!(applied, Applied::Done) {
                Outcome::Ok
            } else {
                Outcome::Nothing
            }
        }
        Err(error) => outcome_of(error),
    };
    (expected, actual)
}

/// Staff ship a paid order: its units leave on-hand.
async fn fulfil(model: &mut Model, real: &Real, now: i64, reservation: usize) -> (Outcome, Outcome) {
    let Some(index) = pick(model, reservation) else {
        return (Outcome::Nothing, Outcome::Nothing);
    };
    let expected = if model.reservations[index].status == ReservationStatus::Hard {
        for (sku, quantity) in model.reservations[index].lines.clone() {
            let counters = model.stock.get_mut(&sku).unwrap();
            counters.hard -= quantity;
            counters.on_hand -= quantity;
        }
        model.reservations[index].status = ReservationStatus::Fulfilled;
        Outcome::Ok
    } else {
        Outcome::Conflict
    };
    let actual = match reservations::fulfil(&real.db, &real.outbox, &rid(&model.reservations[index].id), "model", now).await {
        Ok(_) => Outcome::Ok,
        Err(error) => outcome_of(error),
    };
    (expected, actual)
}

fn pick(model: &Model, reservation: usize) -> Option<usize> {
    (!model.reservations.is_empty()).then(|| reservation % model.reservations.len())
}

async fn check_state(model: &Model, real: &Real, history: &[Op]) {
    let rows = tessera_inventory::ledger::all_stock(&real.db).await.unwrap();
    for row in rows {
        let expected = model.stock[row.sku.as_str()];
        let actual = Counters {
            on_hand: row.on_hand,
            soft: row.soft_reserved,
            hard: row.hard_reserved,
            unavailable: row.unavailable,
            safety: row.safety_stock,
            incoming: row.incoming,
        };
        assert_eq!(actual, expected, "{} after {history:#?}", row.sku);
        assert!(row.available >= 0);
    }
    for reservation in &model.reservations {
        let (status,): (String,) = sqlx::query_as("SELECT status FROM reservations WHERE id = $1").bind(&reservation.id).fetch_one(&real.db).await.unwrap();
        assert_eq!(status, reservation.status.as_str(), "reservation {} after {history:#?}", reservation.id);
    }
    let report = tessera_inventory::verify::verify(&real.db).await.unwrap();
    assert!(report.violations.is_empty(), "{:?} after {history:#?}", report.violations);
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        StoreSettings { data_dir: dir.path().to_owned(), postgres_url: None, schema_prefix: String::new(), postgres_pool_size: 1, ..StoreSettings::default() };
    let db = store.open_fragment("inventory", &tessera_inventory::server::MIGRATIONS).await.unwrap();
    let real = Real { db, outbox: Outbox::new(ServiceName::INVENTORY) };
    let mut model = Model { now: START_MS, stock: BTreeMap::new(), reservations: Vec::new(), keys: HashMap::new() };
    for sku in SKUS {
        let sku = Sku::parse(sku).unwrap();
        movements::record(&real.db, &real.outbox, &sku, "main", StaffMovement::Receive { quantity: 8 }, true, Cause::by("model"), START_MS).await.unwrap();
        model.stock.insert(sku.to_string(), Counters { on_hand: 8, ..Counters::default() });
    }
    let mut history = Vec::new();
    for op in ops {
        history.push(op.clone());
        let (expected, actual) = step(&mut model, &real, &op).await;
        assert_eq!(actual, expected, "outcome of the last step of {history:#?}");
        check_state(&model, &real, &history).await;
    }
    real.db.close().await;
}

proptest! {
    // Failures are kept in `tests/model.proptest-regressions` (committed) and replayed first on every run,
    // so a history that once broke the service is checked again for good.
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_service_behaves_like_the_model(ops in prop::collection::vec(op(), 1..50)) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(ops));
    }
}
