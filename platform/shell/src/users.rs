//! Accounts: the shell's `users` table, the input types it is written from, and the demo seed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shared_auth::keys::now_seconds;
use shared_auth::password::{hash_password, verify_against_dummy, verify_password, MAX_PASSWORD_BYTES};
use shared_auth::{Role, SessionUser};
use sqlx::AnyPool;
use tokio::sync::Semaphore;

/// Why what a person typed into a sign-up or account form was refused: the text is for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("Please enter your email address.")]
    NoEmail,
    #[error("An email address has at most {max} characters.", max = Email::MAX_LEN)]
    EmailTooLong,
    #[error("{0:?} is not an email address.")]
    NotAnEmail(String),
    #[error("A password needs at least {min} characters.", min = NewPassword::MIN_CHARS)]
    PasswordTooShort,
    #[error("A password has at most {max} characters.", max = NewPassword::MAX_CHARS)]
    PasswordTooLong,
    #[error("Please enter your name.")]
    NoName,
    #[error("A name has at most 100 characters.")]
    NameTooLong,
    #[error("A name cannot contain control characters.")]
    NameHasControls,
}

/// An email address, trimmed and lower-cased. Deliberately simple: one `@`, a dotted domain, no spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<Email, FieldError> {
        let email = input.trim().to_lowercase();
        if email.is_empty() {
            return Err(FieldError::NoEmail);
        }
        if email.len() > Email::MAX_LEN {
            return Err(FieldError::EmailTooLong);
        }
        let valid = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
            }
            None => false,
        };
        if valid {
            Ok(Email(email))
        } else {
            Err(FieldError::NotAnEmail(input.trim().to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: 8 to 128 characters.
pub struct NewPassword(String);

impl NewPassword {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(input: &str) -> Result<NewPassword, FieldError> {
        let chars = input.chars().count();
        if chars < NewPassword::MIN_CHARS {
            return Err(FieldError::PasswordTooShort);
        }
        if chars > NewPassword::MAX_CHARS || input.len() > MAX_PASSWORD_BYTES {
            return Err(FieldError::PasswordTooLong);
        }
        Ok(NewPassword(input.to_owned()))
    }
}

/// A display name: 1 to 100 characters after trimming, no control characters.
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(input: &str) -> Result<DisplayName, FieldError> {
        let name = input.trim();
        if name.is_empty() {
            return Err(FieldError::NoName);
        }
        if name.chars().count() > 100 {
            return Err(FieldError::NameTooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::NameHasControls);
        }
        Ok(DisplayName(name.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Every turn to hash a password is taken (see [`Hashing`]): the caller answers 503 with
    /// `Retry-After: RETRY_AFTER_SECONDS`.
    #[error("too many passwords are being checked at once")]
    Busy,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn roles_from_column(column: &str) -> Vec<Role> {
    column.split_whitespace().filter_map(Role::parse).collect()
}

fn roles_to_column(roles: &[Role]) -> String {
    roles.iter().map(|role| role.as_str()).collect::<Vec<_>>().join(" ")
}

/// Bounds the password hashes (and checks) running at once. Each argon2id run holds 19 MiB and a core for
/// a while; on tokio's blocking pool (up to 512 threads) a burst of sign-ins, registrations or password
/// changes would hold gigabytes and slow every one of them. More runs at once than cores buys nothing,
/// so the bound defaults to the cores. Past it a request waits briefly for a turn, then is asked to come
/// back ([`UserError::Busy`]: 503 with `Retry-After`) rather than queueing without end.
///
/// The turns are shared fairly: one client (an address bucket for sign-ins and registrations, an account
/// for password changes; [`Hashing::of`]) holds at most half of them at once, so one client looping
/// correct sign-ins as fast as it can leaves the other half to everyone else.
#[derive(Clone, Debug)]
pub struct Hashing {
    turns: Arc<Semaphore>,
    /// Turns one client may hold at once.
    per_client: usize,
    clients: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// Whose turns this handle takes (`None`: only the shared bound).
    client: Option<String>,
}

/// How long a request waits for a turn to hash before it is told to come back.
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// What a busy answer's `Retry-After` says.
pub const RETRY_AFTER_SECONDS: u64 = 2;

impl Hashing {
    /// `at_once` hashes at a time (0: one per core).
    pub fn new(at_once: usize) -> Hashing {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        let at_once = if at_once == 0 { cores } else { at_once };
        Hashing { turns: Arc::new(Semaphore::new(at_once)), per_client: (at_once / 2).max(1), clients: Arc::default(), client: None }
    }

    /// The same turns, taken as `client`.
    pub fn of(&self, client: &str) -> Hashing {
        Hashing { client: Some(client.to_owned()), ..self.clone() }
    }

    fn client_turns(&self, client: &str) -> Arc<Semaphore> {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        clients.entry(client.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.per_client))).clone()
    }

    /// Forgets a client that holds and awaits no turn (the map stays as small as the clients hashing now).
    fn forget_idle(&self, client: &str) {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if clients.get(client).is_some_and(|turns| Arc::strong_count(turns) == 1 && turns.available_permits() == self.per_client) {
            clients.remove(client);
        }
    }

    /// Runs `work` (CPU-bound: off the async workers) once a turn is free, the client's first.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, UserError> {
        let deadline = tokio::time::Instant::now() + TURN_WAIT;
        let own = match &self.client {
            Some(client) => {
                let turns = self.client_turns(client);
                let taken = tokio::time::timeout_at(deadline, turns.acquire_owned()).await;
                match taken {
                    Ok(Ok(turn)) => Some(turn),
                    _ => {
                        self.forget_idle(client);
                        return Err(UserError::Busy);
                    }
                }
            }
            None => None,
        };
        let turn = tokio::time::timeout_at(deadline, self.turns.clone().acquire_owned()).await;
        let result = match turn {
            Ok(Ok(turn)) => tokio::task::spawn_blocking(move || {
                let (_turn, _own) = (turn, own);
                work()
            })
            .await
            .map_err(|error| UserError::Hash(error.to_string())),
            _ => {
                drop(own);
                Err(UserError::Busy)
            }
        };
        if let Some(client) = &self.client {
            self.forget_idle(client);
        }
        result
    }
}

/// A `users` row as the queries below read it.
#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    password_hash: String,
    roles: String,
}

fn session_user(row: UserRow) -> SessionUser {
    SessionUser { id: row.id, email: row.email, name: row.name, roles: roles_from_column(&row.roles) }
}

/// Checks an email and password. Unknown emails cost the same hashing work as wrong passwords.
pub async fn authenticate(db: &AnyPool, hashing: &Hashing, email: &str, password: &str) -> Result<Option<SessionUser>, UserError> {
    let row: Option<UserRow> = match Email::parse(email) {
        Ok(email) => sqlx::query_as("SELECT id, email, name, password_hash, roles FROM users WHERE email = $1").bind(email.as_str()).fetch_optional(db).await?,
        Err(_) => None,
    };
    let password = password.to_owned();
    hashing
        .run(move || match row {
            Some(row) if verify_password(&password, &row.password_hash) => Some(session_user(row)),
            Some(_) => None,
            None => {
                verify_against_dummy(&password);
                None
            }
        })
        .await
}

/// Checks the password of the user with this id (changing a password needs the current one).
pub async fn check_password(db: &AnyPool, hashing: &Hashing, id: &str, password: &str) -> Result<bool, UserError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT password_hash FROM users WHERE id = $1").bind(id).fetch_optional(db).await?;
    let password = password.to_owned();
    hashing
        .run(move || match row {
            Some((hash,)) => verify_password(&password, &hash),
            None => verify_against_dummy(&password),
        })
        .await
}

async fn hash(hashing: &Hashing, password: &NewPassword) -> Result<String, UserError> {
    let password = password.0.clone();
    hashing.run(move || hash_password(&password)).await?.map_err(|error| UserError::Hash(error.to_string()))
}

/// Replaces a user's password.
pub async fn set_password(db: &AnyPool, hashing: &Hashing, id: &str, password: &NewPassword) -> Result<(), UserError> {
    let hash = hash(hashing, password).await?;
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2").bind(hash).bind(id).execute(db).await?;
    Ok(())
}

/// Every account, by email (the admin's user list).
pub async fn list(db: &AnyPool) -> Result<Vec<SessionUser>, sqlx::Error> {
    let rows: Vec<UserRow> = sqlx::query_as("SELECT id, email, name, password_hash, roles FROM users ORDER BY email").fetch_all(db).await?;
    Ok(rows.into_iter().map(session_user).collect())
}

/// Replaces a user's roles; their access tokens issued before now are refreshed at the shell.
pub async fn set_roles(db: &AnyPool, id: &str, roles: &[Role]) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("UPDATE users SET roles = $1, roles_changed_at = $2 WHERE id = $3")
        .bind(roles_to_column(roles))
        .bind(now_seconds())
        .bind(id)
        .execute(db)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Finds a user by id (the account page).
pub async fn find(db: &AnyPool, id: &str) -> Result<Option<SessionUser>, sqlx::Error> {
    let row: Option<UserRow> = sqlx::query_as("SELECT id, email, name, password_hash, roles FROM users WHERE id = $1").bind(id).fetch_optional(db).await?;
    Ok(row.map(session_user))
}

/// Creates an account; [`UserError::EmailTaken`] when the email is in use (nothing changes then).
pub async fn create(
    db: &AnyPool,
    hashing: &Hashing,
    email: &Email,
    name: &DisplayName,
    password: &NewPassword,
    roles: &[Role],
) -> Result<SessionUser, UserError> {
    let hash = hash(hashing, password).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let result = sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(&id)
    .bind(email.as_str())
    .bind(&name.0)
    .bind(&hash)
    .bind(roles_to_column(roles))
    .bind(now_seconds())
    .execute(db)
    .await?;
    if result.rows_affected() == 0 {
        return Err(UserError::EmailTaken);
    }
    Ok(SessionUser { id, email: email.as_str().to_owned(), name: name.0.clone(), roles: roles.to_vec() })
}

/// Creates the demo accounts that do not exist yet (embedded demo data only).
pub async fn seed_demo(db: &AnyPool) -> Result<(), UserError> {
    let hashing = Hashing::new(0);
    for (email, name, roles) in tessera_contracts::demo::ACCOUNTS {
        let roles: Vec<Role> = roles.iter().filter_map(|role| Role::parse(role)).collect();
        let email = Email::parse(email).expect("demo emails are valid");
        let name = DisplayName::parse(name).expect("demo names are valid");
        let password = NewPassword::parse(tessera_contracts::demo::PASSWORD).expect("the demo password is valid");
        match create(db, &hashing, &email, &name, &password, &roles).await {
            Ok(_) | Err(UserError::EmailTaken) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_client_holds_half_the_hashing_turns_at_most_and_others_still_get_theirs() {
        let hashing = Hashing::new(2);
        let looping = hashing.of("address:198.51.100.7");
        let (release, held) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn({
            let looping = looping.clone();
            async move { looping.run(move || held.recv().is_ok()).await }
        });
        while hashing.turns.available_permits() != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The same client again waits for its own turn, though a shared one is free...
        let again = tokio::spawn({
            let looping = looping.clone();
            async move { looping.run(|| "again").await }
        });
        // ...which another client gets at once.
        assert_eq!(hashing.of("address:203.0.113.9").run(|| "someone else").await.unwrap(), "someone else");
        assert!(!again.is_finished(), "the looping client's second hash waited for its first");
        release.send(()).unwrap();
        assert!(first.await.unwrap().unwrap());
        assert_eq!(again.await.unwrap().unwrap(), "again");
        assert!(hashing.clients.lock().unwrap().is_empty(), "idle clients are forgotten");
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Sam@Example.COM ").unwrap().as_str(), "sam@example.com");
        for bad in ["", "sam", "sam@", "@example.com", "sam@example", "sam@@example.com", "sa m@example.com", "a@b.c<script>"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn new_passwords_have_bounds() {
        assert!(NewPassword::parse("short").is_err());
        assert!(NewPassword::parse("long enough").is_ok());
        assert!(NewPassword::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn roles_survive_the_column() {
        let roles = vec![Role::Shopper, Role::InventoryAdmin];
        assert_eq!(roles_from_column(&roles_to_column(&roles)), roles);
        assert_eq!(roles_from_column("shopper bogus"), vec![Role::Shopper]);
    }
}
