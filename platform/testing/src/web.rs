//! Talking to a running process as a browser or a script would, the one set of helpers every harness
//! uses (a fragment alone, the shell, the whole site): requests with a cookie ([`Http`]), sign-in and
//! registration through the shell's forms, the cookies a response sets ([`set_cookie`], [`Session`],
//! [`Jar`]), form encoding, and waiting for what happens in the background ([`eventually`]).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Response, StatusCode};
use sqlx::AnyPool;

/// The demo accounts' password (`tessera_contracts::demo`).
pub const PASSWORD: &str = tessera_contracts::demo::PASSWORD;
/// The demo shopper (roles: shopper).
pub const SHOPPER: &str = "shopper@example.com";
/// The demo admin (roles: shopper, inventory admin, catalog editor, site admin).
pub const ADMIN: &str = "admin@example.com";

/// A client of one running process: its base URL and an HTTP client that follows no redirects and bounds
/// every request (a hung server fails its test instead of hanging the run).
#[derive(Clone, Debug)]
pub struct Http {
    pub url: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(url: impl Into<String>) -> Http {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(30)).build().expect("an HTTP client");
        Http { url: url.into(), client }
    }

    /// `GET target` written on the wire exactly as given (an HTTP client would resolve `..` and `%2e%2e`
    /// first, as browsers do; an attacker's script does not). Returns the status and the body's start.
    pub async fn raw_get(&self, target: &str) -> (StatusCode, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let authority = self.url.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = tokio::net::TcpStream::connect(authority).await.expect("a connection");
        let request = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("the request written");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.split(' ').nth(1).and_then(|code| code.parse::<u16>().ok()).and_then(|code| StatusCode::from_u16(code).ok());
        let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
        (status.expect("an HTTP answer"), body)
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        let mut request = self.client.get(format!("{}{path}", self.url));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request sent")
    }

    /// POSTs a form (a page's form, or a server function's arguments).
    pub async fn post_form(&self, path: &str, body: impl Into<String>, cookie: Option<&str>) -> Response {
        let mut request = self.client.post(format!("{}{path}", self.url)).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body.into());
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request sent")
    }

    /// POSTs a form as a browser on one of the site's own pages does (`Sec-Fetch-Site: same-origin` and
    /// the site's `Origin`): what the shell's account and admin changes want, so a refusal is about the
    /// cookie, not the request's origin.
    pub async fn post_form_from_site(&self, path: &str, body: impl Into<String>, cookie: &str, origin: &str) -> Response {
        let request = self.client.post(format!("{}{path}", self.url)).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body.into());
        request.header(COOKIE, cookie).header("sec-fetch-site", "same-origin").header("origin", origin).send().await.expect("request sent")
    }

    /// GETs `path` and reads the body as text.
    pub async fn text(&self, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let response = self.get(path, cookie).await;
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// Calls a server function (form-encoded, asking for JSON as a page's island does) and returns the
    /// status and the JSON answer (or, when the answer is not JSON, its text as a JSON string).
    pub async fn api(&self, path: &str, body: &str, cookie: Option<&str>) -> (StatusCode, serde_json::Value) {
        let mut request =
            self.client.post(format!("{}{path}", self.url)).header(CONTENT_TYPE, "application/x-www-form-urlencoded").header(ACCEPT, "application/json");
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = request.body(body.to_owned()).send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    /// Signs in through the shell's login form and returns the access cookie to send back.
    pub async fn login_as(&self, email: &str, password: &str) -> String {
        self.sign_in(email, password).await.access
    }

    /// Signs in through the shell's login form and returns both session cookies.
    pub async fn sign_in(&self, email: &str, password: &str) -> Session {
        let response = self.post_form("/login", form(&[("email", email), ("password", password)]), None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "login of {email} failed");
        Session {
            access: set_cookie(&response, "tessera_access").expect("an access cookie"),
            refresh: set_cookie(&response, "tessera_refresh").expect("a refresh cookie"),
        }
    }

    /// A sign-in attempt as a proxy would forward it, for the client at `client` (the leftmost entry is
    /// what the client itself wrote, which a process that trusts the proxy must ignore).
    pub async fn sign_in_from(&self, client: &str, email: &str, password: &str) -> StatusCode {
        let response = self
            .client
            .post(format!("{}/login", self.url))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("origin", "http://127.0.0.1")
            .header("x-forwarded-for", format!("6.6.6.6, {client}"))
            .body(form(&[("email", email), ("password", password)]))
            .send()
            .await
            .expect("request sent");
        response.status()
    }

    /// Registers a new shopper through the shell's form and returns the access cookie.
    pub async fn register(&self, email: &str, name: &str, password: &str) -> String {
        let response = self.post_form("/register", form(&[("email", email), ("name", name), ("password", password)]), None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "registration of {email} failed");
        access_cookie(&response).expect("registration signs in")
    }
}

/// Both session cookies of a sign-in, as `name=value`.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
}

impl Session {
    /// The `Cookie` header a browser would send.
    pub fn both(&self) -> String {
        format!("{}; {}", self.access, self.refresh)
    }
}

/// The `name=value` part of the access cookie a response sets, if it sets one.
pub fn access_cookie(response: &Response) -> Option<String> {
    set_cookie(response, "tessera_access")
}

/// The `name=value` part of a cookie a response sets to a non-empty value.
pub fn set_cookie(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or_default().to_owned())
        .find(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')).is_some_and(|value| !value.is_empty()))
}

/// A browser's cookies across responses: each `Set-Cookie` replaces the cookie of its name, and one
/// that expires it (`Max-Age=0` or an empty value) removes it.
#[derive(Debug, Default, Clone)]
pub struct Jar(BTreeMap<String, String>);

impl Jar {
    /// Takes what `response` sets.
    pub fn take(&mut self, response: &Response) {
        for value in response.headers().get_all(SET_COOKIE).iter().filter_map(|value| value.to_str().ok()) {
            let Some((name, rest)) = value.split(';').next().and_then(|pair| pair.split_once('=')) else { continue };
            let expired = value.to_ascii_lowercase().contains("max-age=0");
            if rest.is_empty() || expired {
                self.0.remove(name.trim());
            } else {
                self.0.insert(name.trim().to_owned(), rest.to_owned());
            }
        }
    }

    /// The `Cookie` header to send (empty when there is none).
    pub fn header(&self) -> String {
        self.0.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ")
    }

    /// The value of cookie `name`, if the jar has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// `application/x-www-form-urlencoded` pairs.
pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// One value, form-encoded.
pub fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Waits (up to 10 s, polling every 50 ms) until `check` holds; panics naming `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The one number a `SELECT COUNT(*) …` (or any single BIGINT) answers.
pub async fn count(db: &AnyPool, sql: &str) -> i64 {
    let (count,): (i64,) = sqlx::query_as(sql).fetch_one(db).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_encode_what_a_browser_would() {
        assert_eq!(form(&[("email", "a+b@example.com"), ("note", "x y&z")]), "email=a%2Bb%40example.com&note=x+y%26z");
        assert_eq!(urlencode("ä/é"), "%C3%A4%2F%C3%A9");
    }
}
