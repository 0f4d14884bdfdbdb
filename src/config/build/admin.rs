//! `[admin]`: the admin listener, off unless `listen` is set. A token
//! without a listener is refused rather than ignored: the operator meant to
//! protect something that is not there.

use crate::config::check::{resolve, span};
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawAdmin;
use crate::config::AdminConfig;

/// `[admin]`, or `None` when the admin listener is off.
pub(super) fn build(raw: &RawAdmin, loc: &Locator<'_>) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(listen) = &raw.listen else {
        if let Some(token) = &raw.token {
            return Err(loc.error(
                span(token),
                "a token without [admin] listen: the admin listener is off",
            ));
        }
        return Ok(None);
    };
    let addr = resolve(listen.get_ref()).map_err(|m| loc.error(span(listen), m))?[0];
    let token = match &raw.token {
        Some(t) if t.get_ref().trim().is_empty() => {
            return Err(loc.error(span(t), "expected a non-empty token"));
        }
        Some(t) => Some(t.get_ref().clone()),
        None => None,
    };
    let mut allowed_hosts = Vec::new();
    for host in raw.allowed_hosts.iter().flatten() {
        let name = crate::host::normalize(host.get_ref());
        if name.is_empty() || name.contains(['/', ' ']) {
            return Err(loc.error(
                span(host),
                format!("expected a host name, found \"{}\"", host.get_ref()),
            ));
        }
        allowed_hosts.push(name);
    }
    Ok(Some(AdminConfig {
        listen: addr,
        token,
        allowed_hosts,
    }))
}
