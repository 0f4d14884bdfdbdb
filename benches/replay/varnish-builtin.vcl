# Varnish for the hit-ratio replay (benches/replay/run.sh) with nothing but
# the backend: the builtin VCL decides everything (any Cookie passes, the
# URL is hashed byte for byte, http_gzip_support on).
vcl 4.1;

backend default {
    .host = "127.0.0.1";
    .port = "18180";
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
