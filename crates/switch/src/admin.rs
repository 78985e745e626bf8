//! The admin HTTP endpoint: `GET /metrics` (Prometheus text format), `GET /healthz` (the process is
//! alive) and `GET /readyz` (ready for traffic; the body names every check and which failed).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::journal::Fault;
use crate::metrics::Metrics;
use crate::status::Status;

/// Serves until the runtime stops; each connection is its own task.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    status: watch::Receiver<Status>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, status) = (metrics.clone(), status.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answer = route(&req, &metrics, &status.borrow());
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = conn.await {
                tracing::debug!(%error, "admin connection");
            }
        });
    }
}

fn route(req: &Request<Incoming>, metrics: &Metrics, status: &Status) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut answer = text(StatusCode::OK, metrics.render());
            answer.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            answer
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let (code, body) = readiness(status);
            text(code, body)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Whether the switch takes traffic, and one line per check: 200 when it does; 503 when it cannot
/// serve; 404 when it only drains, so that a balancer that reads 404 as "drain" (HAProxy's
/// `http-check disable-on-404`) sends it no new terminal but keeps the sessions it has, whose answers
/// are still coming (each is closed once its last answer is out), where 503 would have it cut them.
fn readiness(status: &Status) -> (StatusCode, String) {
    let down = status.issuers_down();
    // Each check with why it failed, if it did.
    let checks = [
        ("listeners", status.draining.then(|| "draining".to_string())),
        // The lease is the cluster journal's too: unrenewed, the node's work is soon another's.
        (
            "journal",
            (status.journal_failed.as_ref().map(Fault::to_string)).or_else(|| {
                (status.lease_failed.as_ref()).map(|why| format!("lease not renewed: {why}"))
            }),
        ),
        (
            "issuers",
            (!down.is_empty()).then(|| format!("no link up for {}", down.join(", "))),
        ),
    ];
    let mut body = String::new();
    for (name, failure) in &checks {
        match failure {
            None => body.push_str(&format!("{name}: ok\n")),
            Some(why) => body.push_str(&format!("{name}: FAILED ({why})\n")),
        }
    }
    let code = match checks.iter().filter(|(_, f)| f.is_some()).count() {
        0 => StatusCode::OK,
        1 if status.draining => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, body)
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = code;
    answer
}
