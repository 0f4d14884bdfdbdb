//! The admin listener (`[admin] listen`): what `varnishstat`, `varnishadm`
//! and a load balancer's health check give Varnish users, over HTTP on its
//! own port so that client traffic can never reach it.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /health` | 200 while serving; 503 while draining or in maintenance (no token needed) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /backends` | each backend's health, probe window, in-flight, queue, ejection |
//! | `POST /backends/<name>` | `{"health": "sick" \| "healthy" \| "auto"}` (Varnish's `backend.set_health`) |
//! | `POST /ban` | `{"path_prefix": …}`, `{"path_regex": …}`, `{"host": …}` or `{"tag": …}` |
//! | `POST /reload` | same as SIGHUP |
//! | `POST /maintenance` | `{"on": true, "retry_after": 120}` |
//! | `GET /` and `GET /status.json` | the status page and the numbers it shows |
//!
//! With `[admin] token`, every request but `GET /health` needs
//! `Authorization: Bearer <token>` (or `?token=` for the browser page),
//! compared in constant time.

mod guard;
mod page;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::backend::Forced;
use crate::cache::BanMatcher;
use crate::generation::Current;
use crate::metrics::{BackendSnapshot, Snapshot};
use crate::reload::Reloader;

/// The largest admin request body read.
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin endpoints on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, current: Current, reloader: Arc<Reloader>) {
    let startup_token = current
        .load()
        .config()
        .admin
        .as_ref()
        .and_then(|a| a.token.clone());
    let admin = Arc::new(Admin {
        current,
        reloader,
        startup_token,
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.answer(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct Admin {
    current: Current,
    reloader: Arc<Reloader>,
    startup_token: Option<String>,
}

type AdminResponse = Response<Full<Bytes>>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json_response(status: StatusCode, value: serde_json::Value) -> AdminResponse {
    respond(status, "application/json", value.to_string())
}

fn error(status: StatusCode, message: impl Into<String>) -> AdminResponse {
    json_response(status, json!({ "error": message.into() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetHealth {
    health: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    path_prefix: Option<String>,
    path_regex: Option<String>,
    host: Option<String>,
    tag: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Maintenance {
    on: bool,
    retry_after: Option<u64>,
}

impl Admin {
    async fn answer(&self, req: Request<Incoming>) -> AdminResponse {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let proxy = self.current.load();
        let allowed_hosts = proxy
            .config()
            .admin
            .as_ref()
            .map_or(&[][..], |a| &a.allowed_hosts);
        if let Err((status, message)) = guard::check(&method, &path, req.headers(), allowed_hosts) {
            return error(status, message);
        }
        drop(proxy);
        if (method == Method::GET || method == Method::HEAD) && path == "/health" {
            return self.health();
        }
        if !self.authorized(&req) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs Authorization: Bearer <token>",
            );
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return response;
        }
        match (method, path.as_str()) {
            (Method::GET, "/") => respond(StatusCode::OK, "text/html; charset=utf-8", page::HTML),
            (Method::GET, "/status.json") => json_response(StatusCode::OK, self.status()),
            // prometheus-client writes the OpenMetrics text format (`# EOF`,
            // counter families named without `_total`); say so, so that
            // Prometheus picks the matching parser.
            (Method::GET, "/metrics") => respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics(),
            ),
            (Method::GET, "/backends") => {
                json_response(StatusCode::OK, json!({ "backends": self.backends_json() }))
            }
            (Method::POST, p) if p.starts_with("/backends/") => {
                let name = p.trim_start_matches("/backends/").to_string();
                match read_json::<SetHealth>(req).await {
                    Ok(body) => self.set_health(&name, &body.health),
                    Err(e) => e,
                }
            }
            (Method::POST, "/ban") => match read_json::<BanRequest>(req).await {
                Ok(body) => self.ban(body),
                Err(e) => e,
            },
            (Method::POST, "/reload") => match self.reloader.reload() {
                Ok(()) => json_response(StatusCode::OK, json!({ "reloaded": true })),
                Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
            },
            (Method::POST, "/maintenance") => match read_json::<Maintenance>(req).await {
                Ok(body) => {
                    let proxy = self.current.load();
                    proxy
                        .ops()
                        .set_maintenance(body.on, body.retry_after.map(Duration::from_secs));
                    tracing::warn!(
                        on = body.on,
                        retry_after = body.retry_after,
                        "maintenance mode set by hand"
                    );
                    json_response(StatusCode::OK, json!({ "maintenance": body.on }))
                }
                Err(e) => e,
            },
            (
                _,
                "/" | "/status.json" | "/metrics" | "/backends" | "/ban" | "/reload"
                | "/maintenance",
            ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
            _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let proxy = self.current.load();
        // A reload that drops `[admin]` cannot close this listener (it is
        // bound once, at start); it must not open it either: the token it
        // started with stays in force.
        let token = match &proxy.config().admin {
            Some(admin) => admin.token.as_deref(),
            None => self.startup_token.as_deref(),
        };
        let Some(token) = token else {
            return true;
        };
        let from_header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let from_query = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
        [from_header, from_query]
            .into_iter()
            .flatten()
            .any(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes())))
    }

    fn health(&self) -> AdminResponse {
        let proxy = self.current.load();
        let ops = proxy.ops();
        if ops.is_draining() {
            return respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n");
        }
        if ops.maintenance(proxy.config().server.retry_after).is_some() {
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "maintenance\n",
            );
        }
        respond(StatusCode::OK, "text/plain", "ok\n")
    }

    fn snapshot(&self) -> Snapshot {
        let proxy = self.current.load();
        let cache = proxy.cache();
        cache.store().settle();
        Snapshot {
            cache_objects: cache.store().entry_count(),
            cache_bytes: cache.store().bytes(),
            bans_active: cache.bans.active(),
            backends: proxy
                .backends()
                .backends
                .iter()
                .map(|b| BackendSnapshot {
                    name: b.name().clone(),
                    healthy: b.is_usable(),
                    in_flight: b.in_flight(),
                    queued: b.queued(),
                    idle_connections: b.client.idle_connections(),
                })
                .collect(),
        }
    }

    fn metrics(&self) -> String {
        self.current.load().ops().metrics.render(&self.snapshot())
    }

    fn backends_json(&self) -> Vec<serde_json::Value> {
        let proxy = self.current.load();
        proxy
            .backends()
            .backends
            .iter()
            .map(|b| {
                json!({
                    "name": b.name().as_ref(),
                    "address": b.client.config().address,
                    "addresses": b.client.addresses_in_use(),
                    "resolve_error": b.client.resolve_error(),
                    "healthy": b.is_usable(),
                    "probe_healthy": b.probe_healthy(),
                    "forced": b.forced().as_str(),
                    "probe": b.probe_window(),
                    "in_flight": b.in_flight(),
                    "queued": b.queued(),
                    "ejected": b.is_ejected(),
                    "available_in_ms": b.available_in().map(|d| d.as_millis() as u64),
                    "idle_connections": b.client.idle_connections(),
                })
            })
            .collect()
    }

    fn status(&self) -> serde_json::Value {
        let proxy = self.current.load();
        let counts = proxy.ops().metrics.outcome_counts();
        json!({
            "requests": counts,
            "synth_503": proxy.ops().metrics.synth_503(),
            "cache_objects": proxy.cache().store().entry_count(),
            "cache_bytes": proxy.cache().store().bytes(),
            "draining": proxy.ops().is_draining(),
            "maintenance": proxy.ops().maintenance(proxy.config().server.retry_after).is_some(),
            "backends": self.backends_json(),
        })
    }

    fn set_health(&self, name: &str, health: &str) -> AdminResponse {
        let forced = match health {
            "auto" => Forced::Auto,
            "healthy" => Forced::Healthy,
            "sick" => Forced::Sick,
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("health must be \"sick\", \"healthy\" or \"auto\", not \"{other}\""),
                )
            }
        };
        let proxy = self.current.load();
        match proxy
            .backends()
            .backends
            .iter()
            .find(|b| b.name().as_ref() == name)
        {
            Some(backend) => {
                backend.force(forced);
                json_response(
                    StatusCode::OK,
                    json!({ "backend": name, "health": forced.as_str() }),
                )
            }
            None => error(
                StatusCode::NOT_FOUND,
                format!("no backend named \"{name}\""),
            ),
        }
    }

    fn ban(&self, body: BanRequest) -> AdminResponse {
        let proxy = self.current.load();
        let matcher = match body {
            BanRequest {
                path_prefix: Some(p),
                path_regex: None,
                host: None,
                tag: None,
            } => BanMatcher::PathPrefix(p),
            BanRequest {
                path_prefix: None,
                path_regex: Some(r),
                host: None,
                tag: None,
            } => match regex::Regex::new(&r) {
                Ok(regex) => BanMatcher::PathRegex(regex),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("path_regex: {e}")),
            },
            BanRequest {
                path_prefix: None,
                path_regex: None,
                host: Some(h),
                tag: None,
            } => BanMatcher::Host(crate::host::for_ban(&h)),
            BanRequest {
                path_prefix: None,
                path_regex: None,
                host: None,
                tag: Some(t),
            } => BanMatcher::Tag {
                header: proxy.config().cache.tag_header.clone(),
                tag: t,
            },
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "give exactly one of path_prefix, path_regex, host, tag",
                )
            }
        };
        tracing::info!(?matcher, "ban added");
        let active = proxy.cache().ban(matcher);
        json_response(StatusCode::OK, json!({ "bans_active": active }))
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, AdminResponse> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "body too large or broken"))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}
