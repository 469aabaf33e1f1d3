//! Static files: the page's directory and the wasm package, nothing outside them, never
//! cached.

use std::path::{Component, Path};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use openpsd_protocol::ErrorCode;
use openpsd_service_kit::error::ApiError;

use super::{Web, STEP_STATIC};

pub(crate) async fn index(State(web): State<Web>) -> Result<Response, ApiError> {
    if !web.pkg.join("openpsd.js").is_file() {
        return Ok(building_page());
    }
    serve_file(&web.root, "index.html").await
}

/// The page while the wasm package is not there yet: `scripts/demo.sh` starts the back office
/// first and builds the browser part next (minutes on a fresh machine). 503 with
/// `Retry-After` (the script polls `/` and prints the URL once it answers 200); the page says
/// so and reloads itself every five seconds until the real page is served.
fn building_page() -> Response {
    const PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
        <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
        <meta http-equiv=\"refresh\" content=\"5\"><title>openpsd: the web demo is being built</title>\
        </head><body style=\"font-family: system-ui, sans-serif; max-width: 36rem; margin: 3rem auto; padding: 0 1rem\">\
        <h1>The web demo is being built</h1>\
        <p>The back office and the command line are running already; the browser part (its \
        WebAssembly package) is still being built by <code>scripts/demo.sh</code>, whose \
        terminal shows the progress. This page reloads itself every five seconds and shows \
        the web demo as soon as it is ready.</p></body></html>\n";
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, PAGE).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    no_store(h);
    resp
}

pub(crate) async fn page_file(State(web): State<Web>, uri: Uri) -> Result<Response, ApiError> {
    serve_file(&web.root, uri.path()).await
}

pub(crate) async fn pkg_file(
    State(web): State<Web>,
    UrlPath(rest): UrlPath<String>,
) -> Result<Response, ApiError> {
    serve_file(&web.pkg, &rest).await
}

/// A file below `dir`; the URL path may only name plain components (no `..`, no hidden
/// files).
pub(crate) async fn serve_file(dir: &Path, url_path: &str) -> Result<Response, ApiError> {
    let step = STEP_STATIC;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            step,
            format!("no such file: {url_path}"),
        )
    };
    let rel = Path::new(url_path.trim_start_matches('/'));
    let plain = rel.components().all(|c| match c {
        Component::Normal(s) => !s.to_string_lossy().starts_with('.'),
        _ => false,
    });
    if !plain || rel.as_os_str().is_empty() {
        return Err(not_found());
    }
    let path = dir.join(rel);
    let read = path.clone();
    let bytes = match tokio::task::spawn_blocking(move || std::fs::read(read))
        .await
        .map_err(|e| ApiError::internal(step, format!("reader task: {e}")))?
    {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => return Err(not_found()),
        Err(e) => {
            return Err(ApiError::internal(
                step,
                format!("reading {}: {e}", path.display()),
            ))
        }
    };
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    no_store(resp.headers_mut());
    Ok(resp)
}

pub(crate) fn no_store(h: &mut HeaderMap) {
    // A demo under development: never run yesterday's module against today's page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

pub(crate) fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "ts" | "md" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a/b.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("app.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }

    #[tokio::test]
    async fn static_files_stay_inside_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "hi").unwrap();
        std::fs::write(dir.path().join(".secret"), "no").unwrap();
        assert!(serve_file(dir.path(), "/index.html").await.is_ok());
        for bad in [
            "/../etc/passwd",
            "/.secret",
            "/",
            "/a/../index.html",
            "/nope",
        ] {
            let e = serve_file(dir.path(), bad).await.unwrap_err();
            assert_eq!(e.status, StatusCode::NOT_FOUND, "{bad}");
        }
    }
}
