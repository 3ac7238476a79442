//! Server-side composition: the fragment's HTML stream, rewritten on the fly by `lol_html`.
//!
//! The shell never buffers a fragment page. Each chunk goes through a streaming rewriter that fills the
//! empty chrome slot (`<header id="tessera-chrome">`) with the shell's chrome and appends the shared
//! stylesheet and the chrome script to `<head>`; every other byte passes through unchanged and in order,
//! so the fragment's own streaming (and its hydration data) is preserved. `lol_html` was chosen over string
//! splicing because it parses HTML correctly across chunk boundaries with bounded memory.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_LENGTH;
use axum::http::Response;
use futures::StreamExt;
use lol_html::element;
use lol_html::html_content::ContentType;
use lol_html::send::{HtmlRewriter, Settings};
use tessera_contracts::CHROME_SLOT_ID;

/// Bytes the rewriter produced and the stream has not yet sent.
type Output = Arc<Mutex<Vec<u8>>>;

fn take(output: &Output) -> Vec<u8> {
    std::mem::take(&mut *output.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// Rewrites a fragment page response: chrome into the slot, `head_html` at the end of `<head>`.
pub fn compose_page(response: Response<Body>, chrome_html: String, head_html: String) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    // The length changes; the rewritten body is streamed with chunked encoding.
    parts.headers.remove(CONTENT_LENGTH);
    let output: Output = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let output = output.clone();
        move |chunk: &[u8]| output.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend_from_slice(chunk)
    };
    let slot_selector = format!("#{CHROME_SLOT_ID}");
    let settings = Settings {
        element_content_handlers: vec![
            element!(slot_selector, move |el| {
                el.set_inner_content(&chrome_html, ContentType::Html);
                Ok(())
            }),
            element!("head", move |el| {
                el.append(&head_html, ContentType::Html);
                Ok(())
            }),
        ],
        ..Settings::new_send()
    };
    let rewriter = HtmlRewriter::new(settings, sink);

    let upstream = body.into_data_stream();
    let stream = futures::stream::unfold((upstream, Some(rewriter), output), |(mut upstream, mut rewriter, output)| async move {
        loop {
            let active = rewriter.as_mut()?;
            match upstream.next().await {
                Some(Ok(chunk)) => {
                    if let Err(error) = active.write(&chunk) {
                        tracing::warn!(%error, "fragment HTML could not be rewritten");
                        return Some((Err(std::io::Error::other(error.to_string())), (upstream, None, output)));
                    }
                    let produced = take(&output);
                    if !produced.is_empty() {
                        return Some((Ok(Bytes::from(produced)), (upstream, rewriter, output)));
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "fragment stream broke off");
                    return Some((Err(std::io::Error::other(error.to_string())), (upstream, None, output)));
                }
                None => {
                    let finished = rewriter.take().map(|rewriter| rewriter.end());
                    if let Some(Err(error)) = finished {
                        tracing::warn!(%error, "fragment HTML ended badly");
                    }
                    let produced = take(&output);
                    if produced.is_empty() {
                        return None;
                    }
                    return Some((Ok(Bytes::from(produced)), (upstream, None, output)));
                }
            }
        }
    });
    // Fused: a body may be polled again after it ended (tower-http's compression does), which an
    // unfold stream would answer with a panic.
    Response::from_parts(parts, Body::from_stream(stream.fuse()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn compose_chunks(chunks: Vec<&'static str>) -> String {
        let stream = futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, std::io::Error>(Bytes::from(c))));
        let response = Response::builder().header(CONTENT_LENGTH, "999").body(Body::from_stream(stream)).unwrap();
        let composed = compose_page(response, "<nav>chrome</nav>".into(), "<link rel=stylesheet href=/s.css>".into());
        assert!(composed.headers().get(CONTENT_LENGTH).is_none());
        let bytes = axum::body::to_bytes(composed.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn an_ended_page_can_be_polled_again() {
        use http_body_util::BodyExt;
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from("<html><head></head><body>x</body></html>"))]);
        let composed = compose_page(Response::new(Body::from_stream(stream)), String::new(), String::new());
        let mut body = composed.into_body();
        while body.frame().await.is_some() {}
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn chrome_fills_the_slot_even_across_chunk_boundaries() {
        let html = compose_chunks(vec![
            "<!DOCTYPE html><html><head><title>x</ti",
            "tle></head><body><header id=\"tessera-ch",
            "rome\"></header><main>fragment <b>body</b></main></body></html>",
        ])
        .await;
        assert_eq!(
            html,
            "<!DOCTYPE html><html><head><title>x</title><link rel=stylesheet href=/s.css></head><body>\
             <header id=\"tessera-chrome\"><nav>chrome</nav></header><main>fragment <b>body</b></main></body></html>"
        );
    }

    #[tokio::test]
    async fn a_page_without_a_slot_passes_through_unchanged_but_for_the_head() {
        let html = compose_chunks(vec!["<html><head></head><body><p>plain</p></body></html>"]).await;
        assert_eq!(html, "<html><head><link rel=stylesheet href=/s.css></head><body><p>plain</p></body></html>");
    }
}
