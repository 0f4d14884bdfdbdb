//! ESI at delivery: a template (a stored object or a fetched response,
//! always kept unprocessed) is parsed as it streams out (`crate::esi`) and
//! the page assembled in document order: literal text goes out at once,
//! each `<esi:include>` is a sub-request through the whole pipeline
//! ([`Proxy::handle`]: its own key, freshness, grace, coalescing; nested
//! ESI in it processed one level deeper), up to [`FAN_OUT`] of a page's
//! includes fetched at once, started as soon as the parser reaches them
//! and emitted in order.
//!
//! Activation: a matching `[[rule]]` with `esi = true`, or the backend's
//! `Surrogate-Control: content="ESI/1.0"` (removed from every response);
//! only a `200` to a `GET` whose `Content-Type` is in `[esi] types`. The
//! page goes out chunked, without the template's `Content-Length`,
//! `ETag`, `Last-Modified` or `Accept-Ranges`, always identity (a template
//! stored gzip, or delivered as its `br` copy, is decoded first).
//!
//! A failed include (an answer other than 2xx, a failed body, a foreign
//! host, past `max_depth`) inserts nothing, is logged and counted
//! (`shellac_esi_include_errors_total`); with `onerror="abort"` the page
//! stops there instead. docs/caching.md, "ESI", has the choices and why.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::{Handled, Proxy, RequestCtx};
use crate::body::gunzip::Gunzip;
use crate::body::{Body, BodyError};
use crate::esi::{Event, Include, OnError, Parser};
use crate::ops::Ops;
use crate::peer::ClientAddr;

/// The Edge Architecture Specification's header: `content="ESI/1.0"`
/// asks for processing. Meant for the surrogate, never sent on.
const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// How many of one page's includes are fetched at once.
pub(super) const FAN_OUT: usize = 8;

/// How many pieces (text or started includes) the parser may be ahead of
/// what the client has taken.
const AHEAD: usize = 64;

/// The request headers a fragment's sub-request does not inherit: a
/// fragment is fetched whole and identity, never as a range or a 304, and
/// a framing or upgrade header of the page's request means nothing for it.
const NOT_INHERITED: [HeaderName; 12] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::ACCEPT_ENCODING,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::UPGRADE,
    header::EXPECT,
];

/// The ESI depth of a sub-request (a request extension, which no client
/// can set): the page a client asked for is depth 0.
#[derive(Clone, Copy, Debug)]
pub(super) struct Depth(pub(super) u32);

/// What a page's includes need of the request that asked for it: the
/// URL they resolve against and the headers they carry (after rules).
pub(super) struct Template {
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Template {
    /// For a `GET` only (`HEAD` has no body to assemble).
    pub(super) fn of(parts: &Parts) -> Option<Template> {
        (parts.method == Method::GET).then(|| Template {
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        })
    }

    /// The host the page was asked for, without its port.
    fn host(&self) -> Option<&str> {
        let authority = match self.headers.get(header::HOST) {
            Some(host) => host.to_str().ok()?,
            None => self.uri.authority()?.as_str(),
        };
        Some(strip_port(authority))
    }
}

/// The backend asked for ESI processing of this response
/// (`Surrogate-Control: content="ESI/1.0"`).
fn asks_for_esi(value: &HeaderValue) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.to_ascii_lowercase().contains("content=\"esi/1.0\""))
}

/// A template that its backend marked for ESI: a stored or fetched
/// response whose range or validators describe the template's bytes, not
/// the page assembled from it, so delivery answers it whole (200), never
/// 206 or 304 — as an `esi = true` rule does for the request
/// (`rules::esi_request`).
pub(super) fn is_marked_template(headers: &HeaderMap) -> bool {
    headers.get(SURROGATE_CONTROL).is_some_and(asks_for_esi)
}

/// What goes out next, in document order.
enum Piece {
    Text(Bytes),
    /// An include being fetched.
    Fragment {
        src: String,
        onerror: OnError,
        task: JoinHandle<Result<Bytes, String>>,
    },
    /// An include not made (foreign host, too deep, a bad `src`).
    Skipped {
        src: String,
        onerror: OnError,
        why: &'static str,
    },
    /// The template's own body failed.
    Failed(BodyError),
}

impl Proxy {
    /// Whether `response` is a template to assemble for this request;
    /// `Surrogate-Control` is removed from it either way. One header
    /// removal on a response that asks for nothing.
    pub(super) fn esi_wanted(
        &self,
        ctx: &RequestCtx,
        method: &Method,
        response: &mut Response<Body>,
    ) -> bool {
        let surrogate = response.headers_mut().remove(SURROGATE_CONTROL);
        if !ctx.esi_rule && surrogate.is_none() {
            return false;
        }
        let asked = ctx.esi_rule || surrogate.as_ref().is_some_and(asks_for_esi);
        let headers = response.headers();
        asked
            && method == Method::GET
            && response.status() == StatusCode::OK
            && headers
                .get(header::CONTENT_TYPE)
                .and_then(|t| t.to_str().ok())
                .is_some_and(|t| self.config.esi.parses(t))
            && decodable(headers.get(header::CONTENT_ENCODING))
    }

    /// The ESI step of delivery for a request whose `Parts` are at hand
    /// (a hit answered at once).
    pub(super) fn esi_deliver(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        parts: &Parts,
        mut response: Response<Body>,
    ) -> Response<Body> {
        if !self.esi_wanted(ctx, &parts.method, &mut response) {
            return response;
        }
        match Template::of(parts) {
            Some(template) => self.assemble(ctx, template, response),
            None => response,
        }
    }

    /// The ESI step for a request that waited (`template`: taken before
    /// its `Parts` went into the fetch).
    pub(super) fn esi_waited(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        template: Option<Template>,
        mut response: Response<Body>,
    ) -> Response<Body> {
        let method = if template.is_some() {
            Method::GET
        } else {
            Method::HEAD
        };
        if !self.esi_wanted(ctx, &method, &mut response) {
            return response;
        }
        match template {
            Some(template) => self.assemble(ctx, template, response),
            None => response,
        }
    }

    /// The assembled page: the template's head without what described the
    /// template's bytes, and a body made by a task of its own.
    fn assemble(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        template: Template,
        response: Response<Body>,
    ) -> Response<Body> {
        let (mut head, body) = response.into_parts();
        let encoding = head.headers.remove(header::CONTENT_ENCODING);
        for name in [
            header::CONTENT_LENGTH,
            header::ETAG,
            header::LAST_MODIFIED,
            header::ACCEPT_RANGES,
        ] {
            head.headers.remove(name);
        }
        let (tx, rx) = mpsc::channel(16);
        let page = Page {
            proxy: self.clone(),
            client: ctx.client,
            tls: ctx.tls,
            xid: ctx.xid,
            depth: ctx.esi_depth,
            template,
        };
        tokio::spawn(page.run(encoding, body, tx));
        Response::from_parts(head, Body::Channel(rx))
    }
}

/// One page being assembled.
struct Page {
    proxy: Arc<Proxy>,
    client: ClientAddr,
    tls: bool,
    xid: u64,
    depth: u32,
    template: Template,
}

impl Page {
    /// Reads and parses the template while the pieces go out in order.
    async fn run(
        self,
        encoding: Option<HeaderValue>,
        body: Body,
        out: mpsc::Sender<Result<Bytes, BodyError>>,
    ) {
        let body = match identity(encoding.as_ref(), body).await {
            Ok(body) => body,
            Err(error) => {
                let _ = out.send(Err(error)).await;
                return;
            }
        };
        let (pieces, received) = mpsc::channel(AHEAD);
        let ops = self.proxy.ops.clone();
        let writer = tokio::spawn(write(received, out, ops, self.xid));
        self.read(body, pieces).await;
        let _ = writer.await;
    }

    /// The parser's side: each include started as soon as it is reached,
    /// at most [`FAN_OUT`] at once.
    async fn read(&self, mut body: Body, pieces: mpsc::Sender<Piece>) {
        let mut parser = Parser::new();
        let mut events = Vec::new();
        let limit = Arc::new(Semaphore::new(FAN_OUT));
        loop {
            let end = match body.frame().await {
                None => {
                    parser.finish(&mut events);
                    true
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        parser.feed(&data, &mut events);
                    }
                    false
                }
                Some(Err(error)) => {
                    let _ = pieces.send(Piece::Failed(error)).await;
                    return;
                }
            };
            for event in events.drain(..) {
                let piece = match event {
                    Event::Text(text) => Piece::Text(text),
                    Event::Include(include) => self.include(include, &limit).await,
                };
                if pieces.send(piece).await.is_err() {
                    return; // The client went away.
                }
            }
            if end {
                return;
            }
        }
    }

    /// Starts one include, or says why it is not made.
    async fn include(&self, include: Include, limit: &Arc<Semaphore>) -> Piece {
        let Include { src, onerror } = include;
        self.proxy.ops.metrics.esi_includes.inc();
        let skipped = |why| Piece::Skipped {
            src: src.clone(),
            onerror,
            why,
        };
        let depth = self.depth + 1;
        if depth > self.proxy.config.esi.max_depth {
            return skipped("deeper than [esi] max_depth");
        }
        let target = match resolve(&self.template, &src) {
            Ok(target) => target,
            Err(why) => return skipped(why),
        };
        let Some(request) = sub_request(&self.template, target, depth) else {
            return skipped("src is not a valid URL");
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return skipped("the page was abandoned");
        };
        let task = tokio::spawn(fragment(
            self.proxy.clone(),
            request,
            self.client,
            self.tls,
            permit,
        ));
        Piece::Fragment { src, onerror, task }
    }
}

/// The client's side: the pieces in order, each fragment awaited in turn.
async fn write(
    mut pieces: mpsc::Receiver<Piece>,
    out: mpsc::Sender<Result<Bytes, BodyError>>,
    ops: Arc<Ops>,
    xid: u64,
) {
    while let Some(piece) = pieces.recv().await {
        let failed = match piece {
            Piece::Text(text) => {
                if out.send(Ok(text)).await.is_err() {
                    return;
                }
                None
            }
            Piece::Fragment { src, onerror, task } => match task.await {
                Ok(Ok(bytes)) => {
                    if !bytes.is_empty() && out.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                    None
                }
                Ok(Err(why)) => Some((src, onerror, why)),
                Err(_) => Some((src, onerror, "the fragment's task failed".to_string())),
            },
            Piece::Skipped { src, onerror, why } => Some((src, onerror, why.to_string())),
            Piece::Failed(error) => {
                let _ = out.send(Err(error)).await;
                return;
            }
        };
        if let Some((src, onerror, why)) = failed {
            ops.metrics.esi_include_errors.inc();
            tracing::warn!(xid, src = %src, why = %why, "ESI include inserted nothing");
            if onerror == OnError::Abort {
                let _ = out.send(Err(BodyError::EsiAbort(src))).await;
                return;
            }
        }
    }
}

/// One fragment through the pipeline, whole, in identity, at most
/// `[cache] max_object_size` (a fragment is held in memory until its turn
/// comes); the permit is held until its body is read.
async fn fragment(
    proxy: Arc<Proxy>,
    request: Request<Body>,
    client: ClientAddr,
    tls: bool,
    _permit: OwnedSemaphorePermit,
) -> Result<Bytes, String> {
    let response = match proxy.handle(request, client, tls, None) {
        Handled::Ready(response) => response,
        Handled::Waiting(future) => future.await,
    };
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the fragment's status is {}", status.as_u16()));
    }
    let (head, body) = response.into_parts();
    let body = identity(head.headers.get(header::CONTENT_ENCODING), body)
        .await
        .map_err(|e| e.to_string())?;
    let max = usize::try_from(proxy.config.cache.max_object_size).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(format!(
            "the fragment's body failed or exceeds max_object_size: {error}"
        )),
    }
}

/// Whether a body in `encoding` can be turned into identity here.
fn decodable(encoding: Option<&HeaderValue>) -> bool {
    encoding.is_none_or(|e| {
        let e = e.as_bytes();
        e.eq_ignore_ascii_case(b"identity")
            || e.eq_ignore_ascii_case(b"gzip")
            || e.eq_ignore_ascii_case(b"br")
    })
}

/// `body` in identity: gzip decoded as it streams, `br` (only ever the
/// stored copy, so bounded by `max_object_size`) decoded whole.
async fn identity(encoding: Option<&HeaderValue>, body: Body) -> Result<Body, BodyError> {
    let Some(encoding) = encoding.map(HeaderValue::as_bytes) else {
        return Ok(body);
    };
    if encoding.eq_ignore_ascii_case(b"gzip") {
        return Ok(Body::Gunzip(Box::new(Gunzip::new(body, None))));
    }
    if encoding.eq_ignore_ascii_case(b"br") {
        let bytes = body.collect().await?.to_bytes();
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&bytes[..], 4096)
            .read_to_end(&mut decoded)
            .map_err(BodyError::Decode)?;
        return Ok(Body::full(decoded));
    }
    if encoding.eq_ignore_ascii_case(b"identity") {
        return Ok(body);
    }
    Err(BodyError::Decode(std::io::Error::other(
        "a content coding ESI cannot decode",
    )))
}

/// The path and query an include's `src` names: relative to the page's
/// path, absolute, or an absolute URL on the page's own host (any other
/// host is refused: Shellac fetches only from the backends of the sites
/// it serves).
fn resolve(template: &Template, src: &str) -> Result<PathAndQuery, &'static str> {
    let lower = src.get(..8).unwrap_or(src).to_ascii_lowercase();
    let absolute = lower.starts_with("http://") || lower.starts_with("https://");
    let target = if absolute || src.starts_with("//") {
        let uri: Uri = if src.starts_with("//") {
            format!("http:{src}").parse()
        } else {
            src.parse()
        }
        .map_err(|_| "src is not a valid URL")?;
        let same = match (uri.host(), template.host()) {
            (Some(theirs), Some(ours)) => theirs.eq_ignore_ascii_case(ours),
            _ => false,
        };
        if !same {
            return Err("src names another host");
        }
        uri.path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
    } else if src.starts_with('/') {
        src.to_string()
    } else {
        let path = template.uri.path();
        let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
        format!("{dir}{src}")
    };
    target.parse().map_err(|_| "src is not a valid URL")
}

/// The sub-request for `target`: `GET`, the page's headers (after rules)
/// minus [`NOT_INHERITED`], one level deeper.
fn sub_request(template: &Template, target: PathAndQuery, depth: u32) -> Option<Request<Body>> {
    let uri = match template.uri.authority() {
        Some(authority) => Uri::builder()
            .scheme(template.uri.scheme().cloned().unwrap_or(Scheme::HTTP))
            .authority(authority.clone())
            .path_and_query(target)
            .build()
            .ok()?,
        None => Uri::from(target),
    };
    let mut headers = template.headers.clone();
    for name in NOT_INHERITED {
        headers.remove(name);
    }
    let mut request = Request::new(Body::Empty);
    *request.uri_mut() = uri;
    *request.version_mut() = template.version;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(Depth(depth));
    Some(request)
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(uri: &str, host: &str) -> Template {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).expect("host"));
        Template {
            uri: uri.parse().expect("uri"),
            version: Version::HTTP_11,
            headers,
        }
    }

    #[test]
    fn srcs_resolve_against_the_page() {
        let t = template("/shop/cart?x=1", "Example.com:8080");
        let r = |src| resolve(&t, src).map(|p| p.as_str().to_string());
        assert_eq!(r("/a?b=1").as_deref(), Ok("/a?b=1"));
        assert_eq!(r("frag").as_deref(), Ok("/shop/frag"));
        assert_eq!(r("http://example.com/x").as_deref(), Ok("/x"));
        assert_eq!(r("HTTPS://EXAMPLE.com:9/x?y").as_deref(), Ok("/x?y"));
        assert_eq!(r("//example.com/z").as_deref(), Ok("/z"));
        assert_eq!(r("http://other.example/x"), Err("src names another host"));
        assert!(r("/a b").is_err());
    }
}
