//! The fetch phase: choose a backend of the route's pool and send the
//! request to it. Retries, backoff and the retry budget belong here.

use http::request::Parts;
use http::{Request, Response};

use super::RequestCtx;
use crate::backend::{FetchError, Pool};
use crate::body::Body;

/// Sends the prepared backend request to a backend of `pool`; records the
/// backend tried in `ctx`.
pub(super) async fn fetch(
    pool: &Pool,
    parts: Parts,
    body: Body,
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, FetchError> {
    let backend = pool.pick()?;
    ctx.backend = Some(backend.name().clone());
    backend.client.send(Request::from_parts(parts, body)).await
}
