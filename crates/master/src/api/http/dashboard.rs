//! The web dashboard at `/`: one page, its script and its style sheet,
//! compiled into the binary (no build step, no extra process). The page is a
//! client of the public API: `/ws/telemetry`, `/api/*` and `/ws/logs/*`
//! (see docs/WEBSOCKET_TELEMETRY.md). The assets hold no data, so they are
//! served without a token; the page asks for one when the API wants it.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../../assets/dashboard/app.css");

/// Only the page's own script, style and connections back to the master.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Routes of the page and its assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}
