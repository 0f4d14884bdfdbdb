# Varnish for the hit-ratio replay (benches/replay/run.sh): the usual
# recipe for what config/shellac.toml's three example rules do, as it is
# copied from the Varnish docs and tutorials. Accept-Encoding is left to
# Varnish's default http_gzip_support (on): the client's header becomes
# "gzip" or nothing before the lookup, and the backend is asked for gzip.
vcl 4.1;

import std;

backend default {
    .host = "127.0.0.1";
    .port = "18180";
}

sub vcl_recv {
    # Marketing parameters out of the URL (the hash and the backend's URL),
    # then the rest sorted: one object for every campaign link.
    if (req.url ~ "[?&](utm_[a-z]+|gclid|fbclid|msclkid|mc_eid)=") {
        set req.url = regsuball(req.url, "(utm_[a-z]+|gclid|fbclid|msclkid|mc_eid)=[^&]*&?", "");
        set req.url = regsub(req.url, "[?&]+$", "");
    }
    set req.url = std.querysort(req.url);

    # Static files: no cookies (and no Set-Cookie, below), so they are cached.
    if (req.url ~ "\.(css|js|mjs|png|jpe?g|gif|svg|webp|avif|ico|woff2?)(\?.*)?$") {
        unset req.http.Cookie;
    }

    # Pages: keep only the session cookie; none left, no Cookie at all, and
    # the builtin vcl_recv no longer passes the request.
    if (req.http.Cookie) {
        set req.http.Cookie = ";" + req.http.Cookie;
        set req.http.Cookie = regsuball(req.http.Cookie, "; +", ";");
        set req.http.Cookie = regsuball(req.http.Cookie, ";(sessionid)=", "; \1=");
        set req.http.Cookie = regsuball(req.http.Cookie, ";[^ ][^;]*", "");
        set req.http.Cookie = regsuball(req.http.Cookie, "^[; ]+|[; ]+$", "");
        if (req.http.Cookie == "") {
            unset req.http.Cookie;
        }
    }
    # The builtin vcl_recv follows: a Cookie or Authorization left passes.
}

sub vcl_backend_response {
    if (bereq.url ~ "\.(css|js|mjs|png|jpe?g|gif|svg|webp|avif|ico|woff2?)(\?.*)?$") {
        unset beresp.http.Set-Cookie;
    }
    # The builtin vcl_backend_response follows (Set-Cookie, no-cache,
    # private, Vary: * make a hit-for-miss object).
}

sub vcl_deliver {
    # Only for the replay's HIT count; it changes no caching decision.
    if (obj.uncacheable) {
        set resp.http.X-Cache = "PASS";
    } elsif (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
