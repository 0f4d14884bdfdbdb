//! The ESI parser on arbitrary documents, fed in arbitrary chunks: never
//! panics, gives the same events whatever the chunking, and every byte of
//! text it lets through is a byte of the input, in order.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shellac::esi::{parse, Event, Parser};

fn text(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        match event {
            Event::Text(t) => out.extend_from_slice(t),
            Event::Include(i) => {
                out.push(0);
                out.extend_from_slice(i.src.as_bytes());
                out.push(0);
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, the rest is the document.
    let Some((&step, document)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let whole = parse(document);
    let mut parser = Parser::new();
    let mut chunked = Vec::new();
    for chunk in document.chunks(step) {
        parser.feed(chunk, &mut chunked);
    }
    parser.finish(&mut chunked);
    assert_eq!(text(&whole), text(&chunked));
    let mut input = document.iter();
    for event in &whole {
        if let Event::Text(t) = event {
            assert!(t.iter().all(|b| input.any(|c| c == b)));
        }
    }
});
