//! The limits phase: what is refused before any route or cache is looked
//! at — maintenance mode, a malformed or oversized head (`limits`, 400 /
//! 431 / 501, with the connection closed since its framing cannot be
//! trusted), and `[[rate_limit]]` quotas (429).

use http::{Request, Response};

use super::deliver::close_connection;
use super::{invalidate, Proxy, RequestCtx};
use crate::body::Body;
use crate::limits;
use crate::reason::Reason;
use crate::synth::Synthetic;

impl Proxy {
    /// The refusal for `req`, if it gets one.
    pub(super) fn gate<B>(
        &self,
        req: &Request<B>,
        framing: Option<limits::RawFraming>,
        ctx: &mut RequestCtx,
    ) -> Option<Response<Body>> {
        if let Some(retry_after) = self.ops.maintenance(self.config.server.retry_after) {
            return Some(self.synthetic(ctx, Synthetic::maintenance(retry_after)));
        }
        if let Err(refusal) = limits::check(req, framing, &self.config.server) {
            // The method is checked last: a Drupal `BAN` passed every other check.
            let drupal_ban = refusal.reason == Reason::UnknownMethod
                && invalidate::is_drupal_ban(self.config.cache.invalidation, req.method().as_str());
            if drupal_ban {
                return None;
            }
            let response = self.synthetic(ctx, refusal);
            return Some(close_connection(response, req.version()));
        }
        // An ESI include is part of its page's request, not one more.
        if !self.rate_limits.is_empty() && ctx.esi_depth == 0 {
            if let Some(wait) =
                self.rate_limits
                    .check(req.uri().path(), ctx.client_ip, req.headers())
            {
                return Some(self.synthetic(ctx, Synthetic::rate_limited(wait)));
            }
        }
        None
    }
}
