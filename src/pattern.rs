//! The two pattern kinds `[[rule]]` matches with: name globs (cookie and
//! query-parameter names, `*` the only wildcard) and host patterns
//! (`*.example.com`).
//!
//! A leaf: only [`crate::host`] below it. Both are checked once when the
//! configuration loads and matched on the request path without allocating.
//! Why no `?` or `[...]`: cookie names cannot contain them and a query
//! parameter name rarely does, while `?` in particular would be read as
//! "one character" by some and as a literal by others; one wildcard is one
//! meaning.

use std::fmt;

/// A name pattern where `*` matches any run of characters (none included)
/// and everything else matches itself, case-sensitively (cookie names and
/// query parameters are case-sensitive): `utm_*`, `wp-*`, `*`.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob(Box<str>);

impl Glob {
    /// The glob `text`, or what is wrong with it: empty, or holding a
    /// character no cookie or parameter name can (space, `;`, `=`, `&`,
    /// `,`, a control character) or the wildcard `?`.
    pub fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err(
                "expected a name or a glob such as \"utm_*\", found an empty string".into(),
            );
        }
        if let Some(bad) = text
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || ";=&,?".contains(*c))
        {
            return Err(format!(
                "expected a name or a glob where only \"*\" is a wildcard, found {bad:?} in {text:?}"
            ));
        }
        Ok(Glob(text.into()))
    }

    /// Whether `name` matches: the literal pieces between the stars appear
    /// in order, the first at the start and the last at the end unless a
    /// star stands there. With `*` the only wildcard, taking each piece at
    /// its first possible place is exact (no backtracking needed).
    pub fn matches(&self, name: &str) -> bool {
        let mut pieces = self.0.split('*');
        let first = pieces.next().unwrap_or("");
        let Some(mut rest) = name.strip_prefix(first) else {
            return false;
        };
        // What follows each star; no star at all means an exact name.
        let mut pieces = pieces.peekable();
        if pieces.peek().is_none() {
            return rest.is_empty();
        }
        while let Some(piece) = pieces.next() {
            if pieces.peek().is_none() {
                // The last piece ends the name.
                return rest.ends_with(piece);
            }
            match rest.find(piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A host to match: exact (`example.com`), or `*.example.com`, which
/// matches one or more labels before `example.com` (`a.example.com`,
/// `a.b.example.com`) but not `example.com` itself, as in nginx's
/// `server_name *.example.com`. Compared case-insensitively, without the
/// request's port or trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// This name exactly (lower-case).
    Exact(Box<str>),
    /// Any name ending in `.` and this (lower-case, without the dot).
    Below(Box<str>),
}

impl HostPattern {
    /// The pattern `text`, or what is wrong with it.
    pub fn new(text: &str) -> Result<HostPattern, String> {
        let text = crate::host::normalize(text);
        let (below, name) = match text.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, text.as_str()),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
        if !valid {
            return Err(format!(
                "expected a host name such as \"example.com\" or \"*.example.com\", found {text:?}"
            ));
        }
        Ok(if below {
            HostPattern::Below(name.into())
        } else {
            HostPattern::Exact(name.into())
        })
    }

    /// Whether the request's `host` (as sent: maybe a port, any case)
    /// matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = crate::host::without_port(host);
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Below(name) => {
                let Some(cut) = host.len().checked_sub(name.len() + 1) else {
                    return false;
                };
                cut > 0
                    && host.is_char_boundary(cut)
                    && host.as_bytes()[cut] == b'.'
                    && host[cut + 1..].eq_ignore_ascii_case(name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> Glob {
        Glob::new(text).expect("valid glob")
    }

    #[test]
    fn globs_match_with_stars_only() {
        assert!(glob("wp-*").matches("wp-settings-1"));
        assert!(glob("wp-*").matches("wp-"));
        assert!(!glob("wp-*").matches("xwp-settings"));
        assert!(glob("*").matches(""));
        assert!(glob("*").matches("anything"));
        assert!(glob("utm_*").matches("utm_source"));
        assert!(!glob("utm_*").matches("utm"));
        assert!(glob("gclid").matches("gclid"));
        assert!(!glob("gclid").matches("gclid2"));
        assert!(!glob("gclid").matches("Gclid"));
        assert!(glob("*_ga").matches("x_ga"));
        assert!(!glob("*_ga").matches("_gax"));
        assert!(glob("a*b*c").matches("abc"));
        assert!(glob("a*b*c").matches("axxbyyc"));
        assert!(!glob("a*b*c").matches("acb"));
        assert!(!glob("ab*ba").matches("aba"));
        assert!(glob("**").matches("x"));
    }

    #[test]
    fn bad_globs_are_refused() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("a b").is_err());
        assert!(Glob::new("a?").is_err());
        assert!(Glob::new("a=b").is_err());
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::new("Example.com").expect("valid");
        assert!(exact.matches("EXAMPLE.com:8080"));
        assert!(exact.matches("example.com."));
        assert!(!exact.matches("www.example.com"));
        let below = HostPattern::new("*.example.com").expect("valid");
        assert!(below.matches("a.example.com"));
        assert!(below.matches("A.B.Example.COM:81"));
        assert!(!below.matches("example.com"));
        assert!(!below.matches(".example.com"));
        assert!(!below.matches("badexample.com"));
        assert!(HostPattern::new("").is_err());
        assert!(HostPattern::new("*.").is_err());
        assert!(HostPattern::new("a*.com").is_err());
    }
}
