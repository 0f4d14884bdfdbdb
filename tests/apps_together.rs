//! Issue 19's pieces together, the way a Magento 2 store uses Varnish: a
//! full-page-cached template with an ESI block, both tagged, a tag purge
//! that must refresh only the block (the page's template stays a hit),
//! with compression on (the default) and a browser that asks for gzip.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use support::origin::Seen;
use support::{config, send, Origin, Reply, Shellac};

/// A Magento-shaped origin: `/catalog` is a template with an ESI block,
/// tagged `cat_c_3`; `/block/minicart` is the block, tagged `cart_7`, whose
/// body says how many times it was rendered.
async fn store() -> (Origin, Arc<Mutex<HashMap<String, usize>>>) {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let seen_counts = counts.clone();
    let origin = Origin::start(move |seen: Seen| {
        let n = {
            let mut counts = seen_counts.lock().expect("counts");
            let n = counts.entry(seen.target.clone()).or_insert(0);
            *n += 1;
            *n
        };
        async move {
            match seen.target.as_str() {
                "/catalog" => Reply::ok(format!(
                    "<html><body>{}<esi:include src=\"/block/minicart\"/></body></html>",
                    "catalog page text ".repeat(100)
                ))
                .header("content-type", "text/html; charset=UTF-8")
                .header("cache-control", "public, max-age=86400")
                .header("x-magento-tags", "cat_c,cat_c_3"),
                "/block/minicart" => Reply::ok(format!("<div>cart render {n}</div>"))
                    .header("content-type", "text/html; charset=UTF-8")
                    .header("cache-control", "public, max-age=86400")
                    .header("x-magento-tags", "cart_7"),
                _ => Reply::ok("not found").status(404),
            }
        }
    })
    .await;
    (origin, counts)
}

fn count(counts: &Arc<Mutex<HashMap<String, usize>>>, path: &str) -> usize {
    counts
        .lock()
        .expect("counts")
        .get(path)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_magento_tag_purge_refreshes_the_esi_block_and_keeps_the_page() {
    let (origin, counts) = store().await;
    let shellac = Shellac::start(&config(
        origin.addr,
        "[cache]\npurge_allow = [\"127.0.0.1/32\"]\ninvalidation = [\"magento2\"]\n\
         [[rule]]\npath_prefix = \"/catalog\"\nesi = true\n",
    ))
    .await;
    let browser = [("accept-encoding", "gzip, deflate, br, zstd")];

    for _ in 0..2 {
        let page = send(shellac.addr, "GET", "/catalog", &browser).await;
        assert_eq!(page.status.as_u16(), 200);
        let text = page.text();
        assert!(
            text.ends_with("<div>cart render 1</div></body></html>"),
            "{text}"
        );
        assert!(!text.contains("esi:include"), "{text}");
        assert!(
            page.header("x-magento-tags").is_none(),
            "internal tags leak"
        );
    }
    assert_eq!(count(&counts, "/catalog"), 1);
    assert_eq!(count(&counts, "/block/minicart"), 1);

    // Magento after a cart change: the block's tag only.
    let purged = send(
        shellac.addr,
        "PURGE",
        "/",
        &[("x-magento-tags-pattern", "((^|,)cart_7(,|$))")],
    )
    .await;
    assert_eq!(purged.status.as_u16(), 200);

    let page = send(shellac.addr, "GET", "/catalog", &browser).await;
    let text = page.text();
    assert!(
        text.ends_with("<div>cart render 2</div></body></html>"),
        "{text}"
    );
    assert_eq!(
        count(&counts, "/catalog"),
        1,
        "the page's template stays cached"
    );
    assert_eq!(count(&counts, "/block/minicart"), 2);

    // And the page's own tag takes the template, not the fresh block.
    let purged = send(
        shellac.addr,
        "PURGE",
        "/",
        &[("x-magento-tags-pattern", "((^|,)cat_c_3(,|$))")],
    )
    .await;
    assert_eq!(purged.status.as_u16(), 200);
    let text = send(shellac.addr, "GET", "/catalog", &browser).await.text();
    assert!(
        text.ends_with("<div>cart render 2</div></body></html>"),
        "{text}"
    );
    assert_eq!(count(&counts, "/catalog"), 2);
    assert_eq!(count(&counts, "/block/minicart"), 2);
    shellac.stop().await;
}
