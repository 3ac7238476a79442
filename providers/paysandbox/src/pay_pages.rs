//! The shopper's side: the pay page with its card form, and the bank's confirmation step.
//!
//! Plain forms posting back to the same address, answered with a page (a refusal re-renders the form
//! with its reason and a 4xx status) or a 303 redirect. The payment id in the address is the only
//! credential, as with a real provider's hosted page. Each submit that changes something goes through
//! [`Sandbox::apply`], whose conditional update makes double submits harmless.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;
use tessera_contracts::payments::{pay_page_path, PaymentStatus, WebhookKind, SANDBOX_PREFIX};
use tessera_fragment::db::now_ms;

use crate::card::{self, TestCard};
use crate::html::{self, Entered};
use crate::payments::{self, Attempt, Change, Outcome, PaymentRecord};
use crate::Sandbox;

/// What the shopper reads (and the merchant's webhook carries) after a declined card.
pub const DECLINED_MESSAGE: &str = "Your card was declined. Try another card.";
/// … and after rejecting the bank's confirmation.
pub const NOT_CONFIRMED_MESSAGE: &str = "You did not confirm the payment. Try again or use another card.";
/// A valid card number that is not one of the test cards.
const NOT_A_TEST_CARD: &str = "This is a sandbox: use one of the test cards.";

/// The shopper's routes.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route(&format!("{SANDBOX_PREFIX}/pay/{{id}}"), get(show_pay_page).post(submit_card))
        .route(&format!("{SANDBOX_PREFIX}/pay/{{id}}/confirm"), get(show_confirm_page).post(submit_decision))
}

/// The card form's fields; a missing one is empty, which the checks refuse with a clear message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CardForm {
    card_number: String,
    expiry: String,
    cvc: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DecisionForm {
    decision: String,
}

/// The address of the bank's confirmation step.
fn confirm_path(id: &str) -> String {
    format!("{}/confirm", pay_page_path(id))
}

/// The merchant's return address with `payment=<id>` added to its query (before any `#fragment`).
pub fn return_address(return_url: &str, payment_id: &str) -> String {
    let (address, fragment) = match return_url.split_once('#') {
        Some((address, fragment)) => (address, Some(fragment)),
        None => (return_url, None),
    };
    let separator = match address.find('?') {
        None => "?",
        Some(_) if address.ends_with('?') || address.ends_with('&') => "",
        Some(_) => "&",
    };
    let mut result = format!("{address}{separator}payment={payment_id}");
    if let Some(fragment) = fragment {
        result.push('#');
        result.push_str(fragment);
    }
    result
}

/// `303 See Other` to `location` (a path: validated return addresses and our own pages).
fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => {
            tracing::error!(location, "a redirect address is not a valid header value");
            server_error()
        }
    }
}

fn server_error() -> Response {
    let text = "Something went wrong at the sandbox provider. Please try again.".to_owned();
    html::render(StatusCode::INTERNAL_SERVER_ERROR, "Error", html::message("Something went wrong", text, None))
}

/// The 500 page for a fault on our side, logged with its cause.
fn failed(error: crate::Error) -> Response {
    tracing::error!(%error, "sandbox page failed");
    server_error()
}

fn not_found() -> Response {
    let text = "There is no payment at this address. Go back to the shop and start the payment again.".to_owned();
    html::render(StatusCode::NOT_FOUND, "Payment not found", html::message("Payment not found", text, None))
}

fn bad_request(text: &str) -> Response {
    html::render(StatusCode::BAD_REQUEST, "Bad request", html::message("That did not work", text.to_owned(), None))
}

/// The payment of the page's address, or the page to answer instead (404, or 500 on a database fault).
async fn load(sandbox: &Sandbox, id: &str) -> Result<PaymentRecord, Response> {
    if !payments::plausible_id(id) {
        return Err(not_found());
    }
    match payments::find(&sandbox.db, id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(not_found()),
        Err(error) => Err(failed(error.into())),
    }
}

/// The page for a payment that is not waiting for a card: where it stands and where to go next.
fn state_page(status: StatusCode, record: &PaymentRecord) -> Response {
    let back_to_shop = || Some((return_address(&record.return_url, &record.id), "Back to the shop"));
    let (heading, text, link) = match record.status {
        PaymentStatus::Succeeded | PaymentStatus::Refunded => {
            ("This payment is complete", format!("{} was paid. There is nothing more to do here.", record.amount()), back_to_shop())
        }
        PaymentStatus::Canceled => ("The shop cancelled this payment", "Nothing was charged.".to_owned(), back_to_shop()),
        PaymentStatus::RequiresAction => (
            "Your bank is waiting for your confirmation",
            "Confirm or reject the payment to continue.".to_owned(),
            Some((confirm_path(&record.id), "Go to the confirmation")),
        ),
        PaymentStatus::RequiresPaymentMethod => {
            ("This payment is waiting for a card", "There is nothing to confirm yet.".to_owned(), Some((pay_page_path(&record.id), "Pay with a card")))
        }
    };
    html::render(status, heading, html::message(heading, text, link))
}

/// The card form page.
fn form_page(status: StatusCode, record: &PaymentRecord, error: Option<&str>, entered: Entered) -> Response {
    html::render(status, "Pay", html::card_form(record, error, entered))
}

/// `GET /sandbox-pay/pay/{id}`: the card form, or where the payment stands.
async fn show_pay_page(State(sandbox): State<Sandbox>, Path(id): Path<String>) -> Response {
    match load(&sandbox, &id).await {
        Ok(record) if record.status == PaymentStatus::RequiresPaymentMethod => form_page(StatusCode::OK, &record, None, Entered::default()),
        Ok(record) => state_page(StatusCode::OK, &record),
        Err(page) => page,
    }
}

/// `POST /sandbox-pay/pay/{id}`: the shopper pays with a card.
async fn submit_card(State(sandbox): State<Sandbox>, Path(id): Path<String>, form: Result<Form<CardForm>, FormRejection>) -> Response {
    let record = match load(&sandbox, &id).await {
        Ok(record) => record,
        Err(page) => return page,
    };
    let Ok(Form(form)) = form else {
        return bad_request("The card form could not be read. Go back and submit it again.");
    };
    if record.status != PaymentStatus::RequiresPaymentMethod {
        return state_page(StatusCode::CONFLICT, &record);
    }
    let entered = Entered { number: form.card_number.chars().take(40).collect(), expiry: form.expiry.chars().take(10).collect() };
    let number = match card::parse_card(&form.card_number, &form.expiry, &form.cvc, now_ms()) {
        Ok(number) => number,
        Err(error) => return form_page(StatusCode::UNPROCESSABLE_ENTITY, &record, Some(&error.to_string()), entered),
    };
    let Some(test_card) = TestCard::of(&number) else {
        return form_page(StatusCode::UNPROCESSABLE_ENTITY, &record, Some(NOT_A_TEST_CARD), entered);
    };
    let last4 = number.last4();
    let from = [PaymentStatus::RequiresPaymentMethod];
    let change = match test_card {
        TestCard::Succeeds => Change {
            from: &from,
            to: PaymentStatus::Succeeded,
            attempt: Some(Attempt::Card { last4, outcome: Outcome::Succeeded }),
            webhook: Some((WebhookKind::PaymentSucceeded, None)),
        },
        TestCard::Declined => Change {
            from: &from,
            to: PaymentStatus::RequiresPaymentMethod,
            attempt: Some(Attempt::Card { last4, outcome: Outcome::Declined }),
            webhook: Some((WebhookKind::PaymentFailed, Some(DECLINED_MESSAGE.to_owned()))),
        },
        TestCard::NeedsConfirmation => {
            Change { from: &from, to: PaymentStatus::RequiresAction, attempt: Some(Attempt::Card { last4, outcome: Outcome::RequiresAction }), webhook: None }
        }
    };
    let updated = match sandbox.apply(&id, &change).await {
        Ok(Some(updated)) => updated,
        // Another submit changed the payment first: show where it stands now.
        Ok(None) => return reload_state(&sandbox, &id).await,
        Err(error) => return failed(error),
    };
    tracing::info!(payment = %id, card = last4, status = updated.status.as_str(), "sandbox card attempt");
    match test_card {
        TestCard::Succeeds => see_other(&return_address(&updated.return_url, &updated.id)),
        TestCard::Declined => form_page(StatusCode::PAYMENT_REQUIRED, &updated, Some(DECLINED_MESSAGE), Entered::default()),
        TestCard::NeedsConfirmation => see_other(&confirm_path(&updated.id)),
    }
}

/// The 409 page for a payment that changed under a submit.
async fn reload_state(sandbox: &Sandbox, id: &str) -> Response {
    match load(sandbox, id).await {
        Ok(record) => state_page(StatusCode::CONFLICT, &record),
        Err(page) => page,
    }
}

/// `GET /sandbox-pay/pay/{id}/confirm`: approve or reject; any other state goes back to the pay page.
async fn show_confirm_page(State(sandbox): State<Sandbox>, Path(id): Path<String>) -> Response {
    match load(&sandbox, &id).await {
        Ok(record) if record.status == PaymentStatus::RequiresAction => html::render(StatusCode::OK, "Confirm the payment", html::confirm_form(&record)),
        Ok(record) => see_other(&pay_page_path(&record.id)),
        Err(page) => page,
    }
}

/// `POST /sandbox-pay/pay/{id}/confirm` (`decision` = `approve` | `reject`).
async fn submit_decision(State(sandbox): State<Sandbox>, Path(id): Path<String>, form: Result<Form<DecisionForm>, FormRejection>) -> Response {
    let record = match load(&sandbox, &id).await {
        Ok(record) => record,
        Err(page) => return page,
    };
    let approve = match form.as_ref().map(|Form(form)| form.decision.as_str()) {
        Ok("approve") => true,
        Ok("reject") => false,
        _ => return bad_request("Choose either \"Approve payment\" or \"Reject payment\"."),
    };
    if record.status != PaymentStatus::RequiresAction {
        return state_page(StatusCode::CONFLICT, &record);
    }
    let change = if approve {
        Change {
            from: &[PaymentStatus::RequiresAction],
            to: PaymentStatus::Succeeded,
            attempt: Some(Attempt::Confirmation { outcome: Outcome::Confirmed }),
            webhook: Some((WebhookKind::PaymentSucceeded, None)),
        }
    } else {
        Change {
            from: &[PaymentStatus::RequiresAction],
            to: PaymentStatus::RequiresPaymentMethod,
            attempt: Some(Attempt::Confirmation { outcome: Outcome::NotConfirmed }),
            webhook: Some((WebhookKind::PaymentFailed, Some(NOT_CONFIRMED_MESSAGE.to_owned()))),
        }
    };
    match sandbox.apply(&id, &change).await {
        Ok(Some(updated)) if approve => {
            tracing::info!(payment = %id, "sandbox payment confirmed");
            see_other(&return_address(&updated.return_url, &updated.id))
        }
        Ok(Some(updated)) => {
            tracing::info!(payment = %id, "sandbox payment not confirmed");
            see_other(&pay_page_path(&updated.id))
        }
        Ok(None) => reload_state(&sandbox, &id).await,
        Err(error) => failed(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_return_address_gets_the_payment_id() {
        assert_eq!(return_address("/cart/done", "p1"), "/cart/done?payment=p1");
        assert_eq!(return_address("/cart/done?order=7", "p1"), "/cart/done?order=7&payment=p1");
        assert_eq!(return_address("/cart/done?", "p1"), "/cart/done?payment=p1");
        assert_eq!(return_address("/cart/done?order=7&", "p1"), "/cart/done?order=7&payment=p1");
        assert_eq!(return_address("/cart/done#top", "p1"), "/cart/done?payment=p1#top");
        assert_eq!(return_address("/cart/done?a=1#x?y", "p1"), "/cart/done?a=1&payment=p1#x?y");
    }
}
