//! Least privilege for the deployment's secrets: each process holds the signing keys of its own services
//! and the secrets of its own trust relationships only, a shared secret too short to be one (or a signing
//! key that is not one) stops the process, and what a process writes in its data dir is readable by its
//! owner only.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use tessera_contracts::domain::ServiceName;

use reqwest::StatusCode;
use support::{spawn_app, spawn_with, Backend, Options, PASSWORD, SHOPPER};
use tessera_host::settings::FragmentSettings;
use tessera_site::Mode;

/// The secrets and signing keys a process generated for itself (none was configured), by file name.
fn generated_secrets(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("keys")) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.map(|entry| entry.unwrap().file_name().into_string().unwrap()).filter(|name| name.ends_with(".secret") || name.ends_with(".ed25519")).collect();
    names.sort();
    names
}

#[tokio::test]
async fn each_process_holds_only_the_secrets_of_its_relationships() {
    // The catalog alone: its own signing key, nothing else (it could otherwise sign as another service).
    let catalog = spawn_with(Backend::Sqlite, Options { mode: Some(Mode::Fragment("catalog".into())), demo: Some(false), ..Options::default() }).await;
    assert_eq!(catalog.client.get(format!("{}/catalog", catalog.url)).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(generated_secrets(&catalog.settings.host.store.data_dir), ["catalog.ed25519"]);

    // The shell with every fragment elsewhere serves the sandbox payment provider: the payment secrets,
    // never a fragment's signing key (it could otherwise forge stock reservations and events).
    let mut fragments = BTreeMap::new();
    for name in ["catalog", "cart", "inventory"] {
        fragments.insert(ServiceName::parse(name).unwrap(), FragmentSettings { upstream: Some("http://127.0.0.1:9".into()), ..FragmentSettings::default() });
    }
    let shell = spawn_with(Backend::Sqlite, Options { fragments, ..Options::default() }).await;
    assert_eq!(shell.client.get(format!("{}/login", shell.url)).send().await.unwrap().status(), StatusCode::OK);
    // It holds the key that seals its signing keys at rest, which no fragment process has.
    assert_eq!(generated_secrets(&shell.settings.host.store.data_dir), ["key-encryption.secret", "payment-api.secret", "payment-webhook.secret"]);

    // The whole site in one process holds all of them, each its own (no two files alike).
    let site = spawn_app(Backend::Sqlite).await;
    let sam = site.sign_in(SHOPPER, PASSWORD).await;
    let added = site.post_form("/cart/api/add_item", "sku=MUG-STN-01&quantity=1", Some(&sam.both())).await;
    assert_eq!(added.status(), StatusCode::OK, "a signed-in add holds stock in inventory (a service call)");
    let files = generated_secrets(&site.settings.host.store.data_dir);
    assert_eq!(files, ["cart.ed25519", "catalog.ed25519", "inventory.ed25519", "key-encryption.secret", "payment-api.secret", "payment-webhook.secret"]);
    let mut contents: Vec<Vec<u8>> = files.iter().map(|file| std::fs::read(site.settings.host.store.data_dir.join("keys").join(file)).unwrap()).collect();
    contents.sort();
    contents.dedup();
    assert_eq!(contents.len(), 6, "every service and relationship has a secret of its own");
}

#[tokio::test]
async fn a_shared_secret_shorter_than_32_bytes_stops_the_process_and_names_the_setting() {
    let data = tempfile::tempdir().unwrap();
    for variable in ["TESSERA_PAYMENT_API_SECRET", "TESSERA_PAYMENT_WEBHOOK_SECRETS", "TESSERA_KEY_ENCRYPTION_KEY"] {
        let mut settings = tessera_site::ShellSettings::default();
        settings.host.server.addr = "127.0.0.1:0".parse().unwrap();
        settings.host.store.data_dir = data.path().join("data");
        let weak = Some("change-me".to_owned());
        match variable {
            "TESSERA_PAYMENT_API_SECRET" => settings.host.secrets.payment_api_secret = weak,
            "TESSERA_KEY_ENCRYPTION_KEY" => settings.host.secrets.key_encryption_key = Some(format!("{},change-me", "k".repeat(32))),
            _ => settings.host.secrets.payment_webhook_secrets = Some(format!("{},change-me", "a".repeat(32))),
        }
        let error = match tessera_site::spawn(&settings, &Mode::Fragment("cart".into())).await {
            Ok(_) => panic!("{variable}: a 9-byte secret was accepted"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains(&format!("{variable} is 9 bytes long")) && error.contains("at least 32"), "{variable}: {error}");
        assert!(!error.contains("change-me"), "the secret itself is never printed: {error}");
    }
    // A signing key that is not an Ed25519 key stops it too, naming the setting, never the value.
    let mut settings = tessera_site::ShellSettings::default();
    settings.host.server.addr = "127.0.0.1:0".parse().unwrap();
    settings.host.store.data_dir = data.path().join("data");
    settings.host.secrets.service_keys.insert("cart".into(), "Y2hhbmdlLW1l".into());
    let error = match tessera_site::spawn(&settings, &Mode::Fragment("cart".into())).await {
        Ok(_) => panic!("a signing key that is no key was accepted"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("TESSERA_SERVICE_KEYS__CART") && error.contains("not an Ed25519 private key"), "{error}");
    assert!(!error.contains("Y2hhbmdlLW1l"), "{error}");
    assert!(!data.path().join("data").exists(), "a refused start writes nothing");
}

#[cfg(unix)]
#[tokio::test]
async fn everything_a_process_writes_in_its_data_dir_is_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let site = spawn_app(Backend::Sqlite).await;
    // Writes to every database (a session, a cart and its hold, events), so WAL files exist.
    let sam = site.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(site.post_form("/cart/api/add_item", "sku=MUG-STN-01&quantity=1", Some(&sam.both())).await.status(), StatusCode::OK);
    let mut seen = 0;
    let mut queue = vec![site.settings.host.store.data_dir.clone()];
    while let Some(dir) = queue.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                queue.push(path);
                continue;
            }
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            seen += 1;
        }
    }
    let databases = ["shell", "catalog", "cart", "inventory", "paysandbox"];
    for database in databases {
        assert!(site.settings.host.store.data_dir.join(format!("{database}.sqlite")).exists(), "{database}");
    }
    assert!(site.settings.host.store.data_dir.join("cart.sqlite-wal").exists(), "the write-ahead logs were checked too");
    assert!(seen > databases.len() + 2, "{seen} files");
}
