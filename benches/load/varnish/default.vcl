# Varnish 7 in front of the benchmark origin. Nothing but the backends:
# the built-in VCL decides everything else (cache on Cache-Control max-age,
# hit-for-miss for no-store/private responses such as /slow).
# /burst/* goes to the slow origin (slow_origin.py, :8081) for the coalescing burst.
vcl 4.1;

backend default {
    .host = "127.0.0.1";
    .port = "8080";
}

backend slow {
    .host = "127.0.0.1";
    .port = "8081";
    .first_byte_timeout = 10s;
}

sub vcl_recv {
    if (req.url ~ "^/burst/") {
        set req.backend_hint = slow;
    }
}
