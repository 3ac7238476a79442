//! The OpenID Connect messages between the shell (the provider, `tessera_shell::oidc`) and fragments on
//! other domains (relying parties, `tessera_host::relying_party`): paths, token kinds and claims, typed
//! once for both sides.

use serde::{Deserialize, Serialize};

use crate::{Role, SessionUser};

pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
pub const TOKEN_PATH: &str = "/oauth/token";
pub const USERINFO_PATH: &str = "/oauth/userinfo";
pub const END_SESSION_PATH: &str = "/oauth/logout";

/// The JOSE `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_JWT_TYPE: &str = "at+jwt";
/// The JOSE `typ` of ID tokens.
pub const ID_TOKEN_JWT_TYPE: &str = "JWT";

/// Scopes the provider knows: `profile` gives the name, `email` the address, `roles` the roles.
pub const SCOPES: [&str; 4] = ["openid", "profile", "email", "roles"];

/// Claims of an ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    /// The client.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// When the user signed in at the shell.
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The shell session, as OpenID Connect's logout specifications name it.
    pub sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
}

/// Claims of an access token (RFC 9068): good at the userinfo endpoint for as long as its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub scope: String,
    pub sid: String,
}

/// The userinfo endpoint's answer: what the scope of the token grants, and the session it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub sub: String,
    pub sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
}

impl UserInfo {
    /// What `user` shows under `scope` (space-separated) in session `sid`.
    pub fn granted(user: &SessionUser, sid: &str, scope: &str) -> UserInfo {
        let has = |wanted: &str| scope.split(' ').any(|scope| scope == wanted);
        UserInfo {
            sub: user.id.clone(),
            sid: sid.to_owned(),
            email: has("email").then(|| user.email.clone()),
            name: has("profile").then(|| user.name.clone()),
            roles: has("roles").then(|| user.roles.clone()),
        }
    }

    /// The user as a fragment sees it: what was not granted stays empty.
    pub fn into_user(self) -> SessionUser {
        SessionUser { id: self.sub, email: self.email.unwrap_or_default(), name: self.name.unwrap_or_default(), roles: self.roles.unwrap_or_default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_granted_claims_are_shown() {
        let user = SessionUser { id: "u1".into(), email: "a@b.c".into(), name: "A".into(), roles: vec![Role::Shopper] };
        let bare = UserInfo::granted(&user, "s1", "openid");
        assert_eq!((bare.email.as_deref(), bare.name.as_deref(), bare.roles.as_ref()), (None, None, None));
        let full = UserInfo::granted(&user, "s1", "openid email profile roles");
        assert_eq!(full.clone().into_user(), user);
        assert_eq!(full.sid, "s1");
    }
}
