//! `docs/settings.md`, the reference of every setting, is generated from the settings' own definitions:
//! each section's fields, their doc comments and types as the source declares them (read with `syn`),
//! and their defaults as the code makes them (each section's `Default`, serialised). This test fails when
//! the committed reference is not what the code says; `cargo xtask settings` writes it anew.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use tessera_fragment::db::StoreSettings;
use tessera_fragment::secrets::SecretSettings;
use tessera_host::login::LoginSettings;
use tessera_host::relay::EventSettings;
use tessera_host::relying_party::OidcProviderSettings;
use tessera_host::serve::ServerSettings;
use tessera_host::settings::{FragmentSettings, SiteSettings};
use tessera_shell::oidc::OidcClientSettings;
use tessera_shell::registry::RegistrySettings;
use tessera_shell::session_store::SessionSettings;
use tessera_shell::throttle::ThrottleSettings;

/// One section of the settings, as the reference shows it.
struct Section {
    title: &'static str,
    /// Who reads it.
    reader: &'static str,
    /// The file that defines the struct, from the workspace root.
    file: &'static str,
    ty: &'static str,
    /// What comes before a field's name in its variable (`TESSERA_`, `TESSERA_FRAGMENTS__<NAME>__`).
    prefix: &'static str,
    defaults: Value,
}

fn defaults<T: Serialize>(value: T) -> Value {
    serde_json::to_value(value).expect("settings serialise")
}

fn sections() -> Vec<Section> {
    let oidc_provider =
        OidcProviderSettings { issuer: String::new(), url: None, client_id: String::new(), client_secret: String::new(), session_check_seconds: 60 };
    vec![
        Section {
            title: "Serving",
            reader: "every process (`tessera_host::serve`)",
            file: "platform/host/src/serve.rs",
            ty: "ServerSettings",
            prefix: "TESSERA_",
            defaults: defaults(ServerSettings::default()),
        },
        Section {
            title: "Data",
            reader: "every process (`tessera_fragment::db`)",
            file: "platform/fragment/src/db.rs",
            ty: "StoreSettings",
            prefix: "TESSERA_",
            defaults: defaults(StoreSettings::default()),
        },
        Section {
            title: "Signing keys and shared secrets",
            reader: "every process, each only its own services' keys and the secrets of its relationships (`tessera_fragment::secrets`)",
            file: "platform/fragment/src/secrets.rs",
            ty: "SecretSettings",
            prefix: "TESSERA_",
            defaults: defaults(SecretSettings::default()),
        },
        Section {
            title: "The shared login",
            reader: "every process (`tessera_host::login`)",
            file: "platform/host/src/login.rs",
            ty: "LoginSettings",
            prefix: "TESSERA_",
            defaults: defaults(LoginSettings::default()),
        },
        Section {
            title: "Events",
            reader: "every process with fragments (`tessera_host::relay`)",
            file: "platform/host/src/relay.rs",
            ty: "EventSettings",
            prefix: "TESSERA_",
            defaults: defaults(EventSettings::default()),
        },
        Section {
            title: "The site",
            reader: "every process (`tessera_host::settings`)",
            file: "platform/host/src/settings.rs",
            ty: "SiteSettings",
            prefix: "TESSERA_",
            defaults: defaults(SiteSettings::default()),
        },
        Section {
            title: "Each fragment's upstreams",
            reader: "the shell and every process that calls or sends events to a fragment (`tessera_host::settings`)",
            file: "platform/host/src/settings.rs",
            ty: "FragmentSettings",
            prefix: "TESSERA_FRAGMENTS__<NAME>__",
            defaults: defaults(FragmentSettings::default()),
        },
        Section {
            title: "The OpenID Connect provider of a fragment on another domain",
            reader: "a fragment alone (`tessera_host::relying_party`)",
            file: "platform/host/src/relying_party.rs",
            ty: "OidcProviderSettings",
            prefix: "TESSERA_OIDC_PROVIDER__",
            defaults: defaults(oidc_provider),
        },
        Section {
            title: "Sessions",
            reader: "the shell (`tessera_shell::session_store`)",
            file: "platform/shell/src/session_store.rs",
            ty: "SessionSettings",
            prefix: "TESSERA_",
            defaults: defaults(SessionSettings::default()),
        },
        Section {
            title: "Sign-in throttling",
            reader: "the shell (`tessera_shell::throttle`)",
            file: "platform/shell/src/throttle.rs",
            ty: "ThrottleSettings",
            prefix: "TESSERA_",
            defaults: defaults(ThrottleSettings::default()),
        },
        Section {
            title: "Reaching fragments",
            reader: "the shell (`tessera_shell::registry`)",
            file: "platform/shell/src/registry.rs",
            ty: "RegistrySettings",
            prefix: "TESSERA_",
            defaults: defaults(RegistrySettings::default()),
        },
        Section {
            title: "The shell's OpenID Connect clients",
            reader: "the shell (`tessera_shell::oidc`)",
            file: "platform/shell/src/oidc.rs",
            ty: "OidcClientSettings",
            prefix: "TESSERA_OIDC_CLIENTS__<ID>__",
            defaults: defaults(OidcClientSettings::default()),
        },
    ]
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A field's doc comment as one paragraph.
fn docs(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(syn::MetaNameValue { value: syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(text), .. }), .. }) => {
                Some(text.value().trim().to_owned())
            }
            _ => None,
        })
        .collect();
    lines.join(" ").replace('|', "\\|")
}

/// The name a field is read by: its `serde(rename)` if it has one.
fn key(field: &syn::Field) -> String {
    let mut key = field.ident.as_ref().expect("a named field").to_string();
    for attr in field.attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                key = meta.value()?.parse::<syn::LitStr>()?.value();
            } else if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            }
            Ok(())
        });
    }
    key
}

fn type_of(field: &syn::Field) -> String {
    let text = quote::ToTokens::to_token_stream(&field.ty).to_string();
    text.replace(" < ", "<").replace(" <", "<").replace("< ", "<").replace(" >", ">").replace(" , ", ", ").replace(" :: ", "::")
}

fn default_of(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "unset".to_owned(),
        Some(Value::String(text)) if text.is_empty() => "empty".to_owned(),
        Some(Value::String(text)) => format!("`{text}`"),
        Some(Value::Object(map)) if map.is_empty() => "none".to_owned(),
        Some(Value::Array(items)) if items.is_empty() => "none".to_owned(),
        Some(other) => format!("`{other}`"),
    }
}

/// The reference, as Markdown.
fn reference() -> String {
    let mut out = String::from(
        "# Settings reference\n\n\
         Generated from the code by `cargo xtask settings` (from each section's definition, doc comments and\n\
         defaults); `cargo xtask test` fails when this file and the code disagree. Every setting is a `TESSERA_*`\n\
         environment variable or the same key, lowercase without the prefix, in a TOML file named by\n\
         `TESSERA_CONFIG`; `__` nests (`TESSERA_FRAGMENTS__CATALOG__UPSTREAMS`). A process reads the sections\n\
         it uses and ignores the others, so one environment can serve every process of a deployment.\n",
    );
    for section in sections() {
        let path = root().join(section.file);
        let source = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let file = syn::parse_file(&source).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let item = file
            .items
            .iter()
            .find_map(|item| match item {
                syn::Item::Struct(item) if item.ident == section.ty => Some(item),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{} defines no struct {}", section.file, section.ty));
        out.push_str(&format!("\n## {}\n\nRead by {}; defined by `{}` in `{}`.\n\n", section.title, section.reader, section.ty, section.file));
        out.push_str("| setting | type | default | what it does |\n|---|---|---|---|\n");
        for field in &item.fields {
            let key = key(field);
            let variable = format!("{}{}", section.prefix, key.to_uppercase());
            let default = default_of(section.defaults.get(&key));
            out.push_str(&format!("| `{variable}` | `{}` | {default} | {} |\n", type_of(field), docs(&field.attrs)));
        }
    }
    out
}

#[test]
fn the_settings_reference_is_what_the_code_says() {
    let path = root().join("docs/settings.md");
    let generated = reference();
    if std::env::var_os("TESSERA_WRITE_SETTINGS_REFERENCE").is_some() {
        std::fs::write(&path, &generated).expect("writing docs/settings.md");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == generated, "docs/settings.md is not what the code says: run `cargo xtask settings` and commit the result");
}

#[test]
fn the_reference_names_each_sections_settings_by_their_variables() {
    // One setting of each section, by the name an operator sets (the sections. own tests show each is read).
    let reference = reference();
    for variable in [
        "TESSERA_DRAIN_NOTICE_MS",
        "TESSERA_POSTGRES_POOL_SIZE",
        "TESSERA_SERVICE_KEYS",
        "TESSERA_ACCESS_TTL_SECONDS",
        "TESSERA_OUTBOX_RELAY",
        "TESSERA_PAYMENT_URL",
        "TESSERA_FRAGMENTS__<NAME>__UPSTREAMS",
        "TESSERA_OIDC_PROVIDER__SESSION_CHECK_SECONDS",
        "TESSERA_REFRESH_REUSE_GRACE_SECONDS",
        "TESSERA_LOGIN_MAX_FAILURES_PER_ACCOUNT",
        "TESSERA_HEALTH_INTERVAL_MS",
        "TESSERA_OIDC_CLIENTS__<ID>__REDIRECT_URIS",
    ] {
        assert!(reference.contains(&format!("`{variable}`")), "{variable} missing from the reference");
    }
}
