//! A fragment's bundle files (`<prefix>/pkg/*`): content-hashed, immutable, precompressed.

/// Serves a fragment's content-hashed bundle (`<bundle_dir>/pkg`) with a year-long immutable cache. Only a
/// file that is there is cached so: a miss (a page of a build whose files are not deployed here yet) is
/// `no-store`, or a browser or CDN would keep the 404 for a year after the file arrives.
///
/// The release build writes `<file>.br` and `<file>.gz` beside every bundle file (`cargo xtask build`);
/// `ServeDir` picks the variant the request's `Accept-Encoding` prefers and sets `Content-Encoding`, and
/// falls back to the plain file when a variant is missing (a debug build writes none). Every answer
/// carries `Vary: Accept-Encoding` so a shared cache keeps the encodings apart. Compressing once at build
/// time, at brotli's highest level, beats compressing on each request: the files never change.
pub fn asset_service(bundle_dir: &std::path::Path) -> axum::routing::MethodRouter {
    use http::header::{HeaderValue, CACHE_CONTROL, VARY};
    use tower_http::set_header::SetResponseHeaderLayer;
    type Answer = http::Response<tower_http::services::fs::ServeFileSystemResponseBody>;
    let cache = |answer: &Answer| {
        Some(HeaderValue::from_static(if answer.status().is_success() || answer.status() == http::StatusCode::NOT_MODIFIED {
            "public, max-age=31536000, immutable"
        } else {
            "no-store"
        }))
    };
    let serve = tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, cache))
        .layer(SetResponseHeaderLayer::appending(VARY, HeaderValue::from_static("accept-encoding")))
        .service(tower_http::services::ServeDir::new(bundle_dir.join("pkg")).precompressed_br().precompressed_gzip());
    axum::routing::get_service(serve)
}

#[cfg(test)]
mod tests {
    use super::asset_service;
    use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, VARY};
    use http_body_util::BodyExt;
    use std::io::Read;
    use tower::ServiceExt;

    const JS: &[u8] = b"export function hydrate() { return 'the plain bundle file'; }";

    fn bundle(with_variants: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/app-abc.js"), JS).unwrap();
        if with_variants {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut gz, JS).unwrap();
            std::fs::write(dir.path().join("pkg/app-abc.js.gz"), gz.finish().unwrap()).unwrap();
            // Not real brotli: the test only needs to see which file was picked.
            std::fs::write(dir.path().join("pkg/app-abc.js.br"), b"brotli bytes").unwrap();
        }
        dir
    }

    async fn get(dir: &tempfile::TempDir, accept: Option<&str>) -> (http::StatusCode, Option<String>, Option<String>, Vec<u8>) {
        fetch(dir, "/app-abc.js", accept).await
    }

    async fn fetch(dir: &tempfile::TempDir, path: &str, accept: Option<&str>) -> (http::StatusCode, Option<String>, Option<String>, Vec<u8>) {
        let mut request = http::Request::get(path);
        if let Some(accept) = accept {
            request = request.header(ACCEPT_ENCODING, accept);
        }
        let response = asset_service(dir.path()).oneshot(request.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let header = |name| response.headers().get(name).map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned());
        let (status, encoding, vary) = (response.status(), header(CONTENT_ENCODING), header(VARY));
        (status, encoding, vary, response.into_body().collect().await.unwrap().to_bytes().to_vec())
    }

    #[tokio::test]
    async fn picks_the_variant_the_client_prefers() {
        let dir = bundle(true);
        let (status, encoding, vary, body) = get(&dir, Some("gzip, deflate, br")).await;
        assert_eq!((status, encoding.as_deref(), vary.as_deref()), (http::StatusCode::OK, Some("br"), Some("accept-encoding")));
        assert_eq!(body, b"brotli bytes");

        let (_, encoding, _, body) = get(&dir, Some("gzip")).await;
        assert_eq!(encoding.as_deref(), Some("gzip"));
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(plain, JS);

        let (_, encoding, vary, body) = get(&dir, None).await;
        assert_eq!((encoding, vary.as_deref(), &body[..]), (None, Some("accept-encoding"), JS));
    }

    #[tokio::test]
    async fn a_file_is_cached_for_a_year_and_a_miss_not_at_all() {
        let dir = bundle(false);
        let cache_control = |path: &'static str| {
            let dir = &dir;
            async move {
                let request = http::Request::get(path).body(axum::body::Body::empty()).unwrap();
                let response = asset_service(dir.path()).oneshot(request).await.unwrap();
                (response.status(), response.headers()[http::header::CACHE_CONTROL].to_str().unwrap().to_owned())
            }
        };
        assert_eq!(cache_control("/app-abc.js").await, (http::StatusCode::OK, "public, max-age=31536000, immutable".to_owned()));
        assert_eq!(cache_control("/app-def.js").await, (http::StatusCode::NOT_FOUND, "no-store".to_owned()));
    }

    #[tokio::test]
    async fn falls_back_to_the_plain_file_when_no_variant_was_written() {
        let dir = bundle(false);
        let (status, encoding, _, body) = get(&dir, Some("br, gzip")).await;
        assert_eq!((status, encoding, &body[..]), (http::StatusCode::OK, None, JS));
    }
}
