//! The sandbox in process, as its users see it: a merchant making signed calls, a shopper posting forms,
//! and a stand-in cart receiving (and verifying) the webhooks.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::routing::post;
use axum::Router;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::payments::{
    payment_path, test_cards, CancelRequest, CreatePayment, Payment, PaymentStatus, RefundRequest, WebhookEvent, WebhookKind, PAYMENTS_PATH, SANDBOX_PREFIX,
    SIGNATURE_HEADER, WEBHOOK_PATH,
};
use tessera_contracts::ApiError;
use tessera_fragment::db::StoreSettings;
use tessera_fragment::peers::Peers;
use tessera_fragment::peers::Target;
use tessera_fragment::webhook::WebhookSigner;
use tessera_fragment::{
    service::{CallError, ServiceClient},
    signature::CallSigner,
};
use tower::ServiceExt;

use crate::pay_pages::{DECLINED_MESSAGE, NOT_CONFIRMED_MESSAGE};
use crate::{open, router, spawn_deliverer, Sandbox};

struct TestApp {
    _dir: tempfile::TempDir,
    sandbox: Sandbox,
    router: Router,
    merchant: ServiceClient,
    /// Webhooks the stand-in cart accepted, in arrival order.
    received: Arc<Mutex<Vec<WebhookEvent>>>,
    /// The status the stand-in cart answers with.
    cart_answers: Arc<AtomicU16>,
}

/// A page's answer: status, `Location` and body.
struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

/// A stand-in cart that verifies each webhook's signature and records the event.
fn stand_in_cart(webhooks: WebhookSigner, received: Arc<Mutex<Vec<WebhookEvent>>>, answers: Arc<AtomicU16>) -> Router {
    let handler = move |headers: HeaderMap, body: Bytes| {
        let (webhooks, received, answers) = (webhooks.clone(), received.clone(), answers.clone());
        async move {
            let signature = headers.get(SIGNATURE_HEADER).and_then(|value| value.to_str().ok());
            if webhooks.verify(signature, &body, tessera_fragment::db::now_seconds()).is_err() {
                return StatusCode::UNAUTHORIZED;
            }
            let status = StatusCode::from_u16(answers.load(Ordering::SeqCst)).unwrap();
            if status.is_success() {
                received.lock().unwrap().push(serde_json::from_slice(&body).expect("a webhook event"));
            }
            status
        }
    };
    Router::new().route(WEBHOOK_PATH, post(handler))
}

impl TestApp {
    async fn start() -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreSettings {
            data_dir: dir.path().to_owned(),
            postgres_url: None,
            schema_prefix: String::new(),
            postgres_pool_size: 1,
            ..StoreSettings::default()
        };
        let service_signer = CallSigner::shared(ServiceName::PAYMENTS, &[b"payment api secret".to_vec()]);
        let webhooks = WebhookSigner::new(&[b"webhook secret".to_vec()]);
        let peers = Arc::new(Peers::default());
        let sandbox = open(&store, service_signer.clone(), webhooks.clone(), peers.clone()).await.unwrap();
        let router = router(sandbox.clone());
        let received = Arc::new(Mutex::new(Vec::new()));
        let cart_answers = Arc::new(AtomicU16::new(204));
        let cart = stand_in_cart(webhooks, received.clone(), cart_answers.clone());
        peers.set(ServiceName::CART, Target::in_process("/cart", cart));
        let merchant = TestApp::client(ServiceName::CART, &router);
        TestApp { _dir: dir, sandbox, router, merchant, received, cart_answers }
    }

    /// A client of the merchant API signing as `caller` with the payment API's secret.
    fn client(caller: ServiceName, router: &Router) -> ServiceClient {
        let target = Target::in_process(SANDBOX_PREFIX, router.clone());
        let signer = CallSigner::shared(caller, &[b"payment api secret".to_vec()]);
        ServiceClient::new(ServiceName::parse("paysandbox").unwrap(), signer, target, Duration::from_secs(5))
    }

    async fn create(&self, key: &str, amount_minor: i64) -> Result<Payment, CallError> {
        self.merchant.post(PAYMENTS_PATH, &request(key, amount_minor)).await
    }

    async fn send(&self, request: Request<Body>) -> Page {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let location = response.headers().get(header::LOCATION).map(|value| value.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        Page { status, location, body: String::from_utf8(body.to_vec()).unwrap() }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(Request::get(path).body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = fields.iter().map(|(name, value)| format!("{name}={}", form_encode(value))).collect::<Vec<_>>().join("&");
        let request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(Body::from(body)).unwrap();
        self.send(request).await
    }

    async fn pay(&self, payment: &Payment, number: &str) -> Page {
        self.post_form(&payment.pay_url, &[("card_number", number), ("expiry", "12/99"), ("cvc", "123")]).await
    }

    async fn status_of(&self, payment: &Payment) -> PaymentStatus {
        let payment: Payment = self.merchant.get(&payment_path(&payment.id, None)).await.unwrap();
        payment.status
    }

    /// Waits until the stand-in cart has `count` webhooks and returns them.
    async fn webhooks(&self, count: usize) -> Vec<WebhookEvent> {
        for _ in 0..200 {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {count} webhooks, got {:?}", self.received.lock().unwrap());
    }
}

fn form_encode(value: &str) -> String {
    value.replace('%', "%25").replace('/', "%2F").replace('&', "%26").replace('=', "%3D").replace(' ', "+")
}

fn request(key: &str, amount_minor: i64) -> CreatePayment {
    CreatePayment {
        idempotency_key: key.into(),
        reference: format!("order-{key}"),
        amount_minor,
        currency: "EUR".into(),
        description: "2 × Blue tee <b>".into(),
        return_url: "/cart/checkout/done".into(),
    }
}

#[tokio::test]
async fn a_payment_is_created_paid_and_refunded_with_signed_webhooks() {
    let app = TestApp::start().await;
    let payment = app.create("k1", 1250).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::RequiresPaymentMethod);
    assert_eq!(payment.pay_url, format!("{SANDBOX_PREFIX}/pay/{}", payment.id));
    // A retry answers the same payment; the key reused for another request is refused.
    assert_eq!(app.create("k1", 1250).await.unwrap(), payment);
    assert!(matches!(app.create("k1", 1300).await, Err(CallError::Api(ApiError::Conflict(_)))));
    assert!(matches!(app.create("k2", 0).await, Err(CallError::Api(ApiError::BadRequest(message))) if message.contains("amount_minor")));
    // Unsigned callers are refused; another service does not see the cart's payments.
    assert_eq!(app.get(&payment_path(&payment.id, None)).await.status, StatusCode::FORBIDDEN);
    let inventory = TestApp::client(ServiceName::INVENTORY, &app.router);
    assert!(matches!(inventory.get::<Payment>(&payment_path(&payment.id, None)).await, Err(CallError::Api(ApiError::NotFound(_)))));

    let page = app.get(&payment.pay_url).await;
    assert_eq!(page.status, StatusCode::OK);
    for text in ["SANDBOX — test mode, no real money moves", "EUR 12.50", test_cards::SUCCEEDS, test_cards::DECLINED, "2 × Blue tee &lt;b&gt;"] {
        assert!(page.body.contains(text), "{text:?} missing from {}", page.body);
    }

    let declined = app.pay(&payment, test_cards::DECLINED).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    assert!(declined.body.contains(DECLINED_MESSAGE));
    let typo = app.pay(&payment, "4242 4242 4242 4241").await;
    assert_eq!(typo.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(typo.body.contains("not valid"));
    let hostile = app.post_form(&payment.pay_url, &[("card_number", "\"><script>x</script>"), ("expiry", "12/99"), ("cvc", "123")]).await;
    assert_eq!(hostile.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!hostile.body.contains("<script>"), "what the shopper typed is escaped");
    let real_card = app.pay(&payment, "5555 5555 5555 4444").await;
    assert_eq!(real_card.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(real_card.body.contains("use one of the test cards"));
    let expired = app.post_form(&payment.pay_url, &[("card_number", test_cards::SUCCEEDS), ("expiry", "01/20"), ("cvc", "123")]).await;
    assert_eq!(expired.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(expired.body.contains("expired"));
    assert_eq!(app.status_of(&payment).await, PaymentStatus::RequiresPaymentMethod);

    let paid = app.pay(&payment, test_cards::SUCCEEDS).await;
    assert_eq!(paid.status, StatusCode::SEE_OTHER);
    assert_eq!(paid.location.as_deref(), Some(format!("/cart/checkout/done?payment={}", payment.id).as_str()));
    let again = app.pay(&payment, test_cards::SUCCEEDS).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("This payment is complete"));
    assert!(app.get(&payment.pay_url).await.body.contains("This payment is complete"));

    let cancel = CancelRequest { reason: "too late".into() };
    let refused = app.merchant.post::<_, Payment>(&payment_path(&payment.id, Some("cancel")), &cancel).await;
    assert!(matches!(refused, Err(CallError::Api(ApiError::Conflict(message))) if message.contains("refund it instead")));
    let refund = RefundRequest { idempotency_key: "r1".into(), reason: "returned".into() };
    let refunded: Payment = app.merchant.post(&payment_path(&payment.id, Some("refund")), &refund).await.unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded);
    let refunded_again: Payment = app.merchant.post(&payment_path(&payment.id, Some("refund")), &refund).await.unwrap();
    assert_eq!(refunded_again.status, PaymentStatus::Refunded);

    let deliverer = spawn_deliverer(app.sandbox.clone());
    let events = app.webhooks(3).await;
    let summary: Vec<_> = events.iter().map(|event| (event.kind, event.payment.status, event.message.as_deref())).collect();
    assert_eq!(
        summary,
        [
            (WebhookKind::PaymentFailed, PaymentStatus::RequiresPaymentMethod, Some(DECLINED_MESSAGE)),
            (WebhookKind::PaymentSucceeded, PaymentStatus::Succeeded, None),
            (WebhookKind::PaymentRefunded, PaymentStatus::Refunded, Some("returned")),
        ]
    );
    assert!(events.iter().all(|event| event.payment.reference == "order-k1"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(app.received.lock().unwrap().len(), 3, "a delivered webhook is not sent again");
    deliverer.abort();
}

#[tokio::test]
async fn the_bank_confirmation_step_approves_or_rejects() {
    let app = TestApp::start().await;
    let payment = app.create("k1", 500).await.unwrap();
    let confirm_path = format!("{}/confirm", payment.pay_url);
    assert_eq!(app.get(&confirm_path).await.location.as_deref(), Some(payment.pay_url.as_str()), "nothing to confirm yet");

    let asked = app.pay(&payment, test_cards::NEEDS_CONFIRMATION).await;
    assert_eq!((asked.status, asked.location.as_deref()), (StatusCode::SEE_OTHER, Some(confirm_path.as_str())));
    assert_eq!(app.status_of(&payment).await, PaymentStatus::RequiresAction);
    let page = app.get(&confirm_path).await;
    assert!(page.body.contains("Your bank asks you to confirm this payment"));
    assert_eq!(app.pay(&payment, test_cards::SUCCEEDS).await.status, StatusCode::CONFLICT, "no card while the bank waits");
    assert_eq!(app.post_form(&confirm_path, &[("decision", "maybe")]).await.status, StatusCode::BAD_REQUEST);

    let rejected = app.post_form(&confirm_path, &[("decision", "reject")]).await;
    assert_eq!((rejected.status, rejected.location.as_deref()), (StatusCode::SEE_OTHER, Some(payment.pay_url.as_str())));
    assert_eq!(app.status_of(&payment).await, PaymentStatus::RequiresPaymentMethod);
    assert_eq!(app.post_form(&confirm_path, &[("decision", "approve")]).await.status, StatusCode::CONFLICT);

    app.pay(&payment, test_cards::NEEDS_CONFIRMATION).await;
    let approved = app.post_form(&confirm_path, &[("decision", "approve")]).await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER);
    assert_eq!(approved.location, Some(format!("/cart/checkout/done?payment={}", payment.id)));
    assert_eq!(app.status_of(&payment).await, PaymentStatus::Succeeded);

    let deliverer = spawn_deliverer(app.sandbox.clone());
    let events = app.webhooks(2).await;
    assert_eq!(events[0].kind, WebhookKind::PaymentFailed);
    assert_eq!(events[0].message.as_deref(), Some(NOT_CONFIRMED_MESSAGE));
    assert_eq!(events[1].kind, WebhookKind::PaymentSucceeded);
    let (attempts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM attempts WHERE payment_id = $1 AND card_last4 = '3155'")
        .bind(&payment.id)
        .fetch_one(&app.sandbox.db)
        .await
        .unwrap();
    assert_eq!(attempts, 4, "two card attempts and two confirmation answers");
    deliverer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_pay_once() {
    let app = Arc::new(TestApp::start().await);
    let payment = app.create("k1", 999).await.unwrap();
    let submits: Vec<_> = (0..4)
        .map(|_| {
            let (app, payment) = (app.clone(), payment.clone());
            tokio::spawn(async move { app.pay(&payment, test_cards::SUCCEEDS).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for submit in submits {
        statuses.push(submit.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|status| **status == StatusCode::SEE_OTHER).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|status| [StatusCode::SEE_OTHER, StatusCode::CONFLICT].contains(status)), "{statuses:?}");
    let (webhooks,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM webhook_deliveries WHERE payment_id = $1").bind(&payment.id).fetch_one(&app.sandbox.db).await.unwrap();
    assert_eq!(webhooks, 1);
}

#[tokio::test]
async fn a_cancelled_payment_takes_no_card() {
    let app = TestApp::start().await;
    let payment = app.create("k1", 100).await.unwrap();
    let cancel = CancelRequest { reason: String::new() };
    let canceled: Payment = app.merchant.post(&payment_path(&payment.id, Some("cancel")), &cancel).await.unwrap();
    assert_eq!(canceled.status, PaymentStatus::Canceled);
    let again: Payment = app.merchant.post(&payment_path(&payment.id, Some("cancel")), &cancel).await.unwrap();
    assert_eq!(again.status, PaymentStatus::Canceled);
    let refund = RefundRequest { idempotency_key: "r1".into(), reason: String::new() };
    let refused = app.merchant.post::<_, Payment>(&payment_path(&payment.id, Some("refund")), &refund).await;
    assert!(matches!(refused, Err(CallError::Api(ApiError::Conflict(_)))));

    let page = app.get(&payment.pay_url).await;
    assert!(page.body.contains("The shop cancelled this payment"));
    assert!(page.body.contains(&format!("/cart/checkout/done?payment={}", payment.id)));
    assert_eq!(app.pay(&payment, test_cards::SUCCEEDS).await.status, StatusCode::CONFLICT);
    assert_eq!(app.get(&format!("{SANDBOX_PREFIX}/pay/no-such-payment")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("{SANDBOX_PREFIX}/pay/%3Cscript%3E")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn failed_deliveries_are_retried_until_the_merchant_accepts() {
    let app = TestApp::start().await;
    app.cart_answers.store(503, Ordering::SeqCst);
    let payment = app.create("k1", 100).await.unwrap();
    assert_eq!(app.pay(&payment, test_cards::SUCCEEDS).await.status, StatusCode::SEE_OTHER);
    let deliverer = spawn_deliverer(app.sandbox.clone());
    let failed_once = async {
        loop {
            let (attempts, last_error): (i64, Option<String>) =
                sqlx::query_as("SELECT attempts, last_error FROM webhook_deliveries").fetch_one(&app.sandbox.db).await.unwrap();
            if attempts >= 1 {
                return last_error;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let last_error = tokio::time::timeout(Duration::from_secs(5), failed_once).await.unwrap();
    assert!(last_error.is_some_and(|error| error.contains("503")));
    app.cart_answers.store(204, Ordering::SeqCst);
    let events = app.webhooks(1).await;
    assert_eq!(events[0].kind, WebhookKind::PaymentSucceeded);
    deliverer.abort();
}
