//! TLS outbound: PostgreSQL over TLS verified against its certificate authority (the `sslmode` and
//! `sslrootcert` of its URL); HTTPS to an endpoint whose certificate a deployment's own authority signed
//! (`TESSERA_TLS_CA_FILE`), refused without it; NATS over TLS (`tls://`) the same way, against a
//! `nats-server` of the test's own. The HTTPS endpoint is a minimal server at the protocol boundary: a
//! test CA from rcgen, rustls, one fixed answer.

use std::sync::Arc;

use sqlx::migrate::Migrator;
use tessera_fragment::db::{Migrations, StoreSettings};
use tessera_host::tls::Roots;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

static NONE: Migrator = Migrator::DEFAULT;
static NO_MIGRATIONS: Migrations = Migrations { sqlite: &NONE, postgres: &NONE };

/// A certificate authority of the test's own and a `localhost` certificate it signed.
struct TestCa {
    ca_pem: String,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
    leaf_pem: String,
    leaf_key_pem: String,
}

fn test_ca() -> TestCa {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Tessera test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
    TestCa { ca_pem: ca.pem(), leaf: leaf.der().clone(), leaf_key: leaf_key.serialize_der(), leaf_pem: leaf.pem(), leaf_key_pem: leaf_key.serialize_pem() }
}

/// An HTTPS endpoint on loopback that answers every request with `body`; its port.
async fn https_endpoint(ca: &TestCa, body: &'static str) -> u16 {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ca.leaf_key.clone().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.leaf.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_is_trusted_through_the_deployments_own_authority_and_refused_without_it() {
    let ca = test_ca();
    let port = https_endpoint(&ca, r#"{"keys":[]}"#).await;
    let url = format!("https://localhost:{port}/.well-known/jwks.json");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();

    let trusted = Roots::from_file(&ca_file).unwrap().http().build().unwrap();
    let response = trusted.get(&url).send().await.expect("the deployment's authority is trusted");
    assert_eq!(response.text().await.unwrap(), r#"{"keys":[]}"#);
    // The fragments' JWKS fetch over it, as a fragment alone does with TESSERA_TLS_CA_FILE.
    use shared_auth::verify::JwksSource;
    let jwks = shared_auth::verify::HttpJwks::with_client(&url, Roots::from_file(&ca_file).unwrap().http());
    assert!(jwks.fetch().await.unwrap().keys.is_empty());

    let untrusting = Roots::default().http().build().unwrap();
    let error = untrusting.get(&url).send().await.expect_err("an authority the system does not know");
    assert!(format!("{error:?}").to_lowercase().contains("certificate"), "{error:?}");
    // A file that is not a certificate stops the process at start, naming the setting.
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let refused = Roots::from_file(&ca_file).unwrap_err().to_string();
    assert!(refused.contains("TESSERA_TLS_CA_FILE"), "{refused}");
}

#[tokio::test]
async fn postgres_is_reached_over_tls_verified_against_its_authority() {
    if !tessera_testing::postgres_configured() {
        return;
    }
    sqlx::any::install_default_drivers();
    let admin_url = tessera_testing::postgres_url().unwrap();
    let admin = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&admin_url).await.unwrap();
    let (ssl,): (String,) = sqlx::query_as("SELECT setting FROM pg_settings WHERE name = 'ssl'").fetch_one(&admin).await.unwrap();
    let (cert_file,): (String,) = sqlx::query_as("SELECT setting FROM pg_settings WHERE name = 'ssl_cert_file'").fetch_one(&admin).await.unwrap();
    admin.close().await;
    if ssl != "on" || std::fs::metadata(&cert_file).is_err() {
        let how = "the test PostgreSQL serves no TLS with a readable certificate (Debian's server does, with its snakeoil certificate)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{how}");
        eprintln!("{how}: skipped");
        return;
    }
    // Debian's certificate names `localhost` and signs itself: it is its own authority.
    let with = |host: &str, root: &std::path::Path| {
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_host(Some(host)).unwrap();
        url.query_pairs_mut().append_pair("sslmode", "verify-full").append_pair("sslrootcert", &root.display().to_string());
        StoreSettings {
            postgres_url: Some(url.into()),
            schema_prefix: format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            postgres_pool_size: 1,
            ..StoreSettings::default()
        }
    };
    let store = with("localhost", std::path::Path::new(&cert_file));
    let db = store.open("tls", &NO_MIGRATIONS).await.expect("a verified TLS connection");
    let (encrypted,): (bool,) = sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&db).await.unwrap();
    assert!(encrypted, "the pool's connections are encrypted");
    sqlx::query(&format!("DROP SCHEMA {}tls CASCADE", store.schema_prefix)).execute(&db).await.unwrap();
    db.close().await;
    // A name the certificate does not carry: refused, not connected in the clear. (`sslrootcert` adds to
    // the system's roots, which on Debian hold that certificate too, so another authority's file alone
    // would not make the connection fail here.)
    let refused = with("127.0.0.1", std::path::Path::new(&cert_file)).open("tls", &NO_MIGRATIONS).await;
    assert!(refused.is_err(), "a name the certificate does not carry");
}

#[tokio::test]
async fn nats_over_tls_is_trusted_through_the_deployments_own_authority_and_refused_without_it() {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"].into_iter().find(|path| std::path::Path::new(path).exists());
    let Some(binary) = binary else {
        eprintln!("no nats-server binary here (Debian's package installs one): skipped");
        return;
    };
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, cert, key) = (dir.path().join("ca.pem"), dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    std::fs::write(&cert, &ca.leaf_pem).unwrap();
    std::fs::write(&key, &ca.leaf_key_pem).unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut server = std::process::Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd", &dir.path().join("js").display().to_string(), "--tls"])
        .arg("--tlscert")
        .arg(&cert)
        .arg("--tlskey")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nats-server did not start");
        assert!(server.try_wait().unwrap().is_none(), "nats-server stopped at start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _server = Stop(server);
    let url = format!("tls://localhost:{port}");
    let broker = tessera_host::broker::Broker::connect(&url, "tlstest", Some(&ca_file)).await;
    assert!(broker.is_ok(), "trusted through TESSERA_TLS_CA_FILE: {:?}", broker.err());
    let refused = tessera_host::broker::Broker::connect(&url, "tlstest", None).await;
    assert!(refused.is_err(), "an authority the system does not know is refused");
}
