//! The dependency rule between Shellac's top-level modules, executable.
//!
//! It reads the sources under `src/` (std only, no parser crate), collects
//! every `crate::…` path (and `super::` paths that climb out of a folder)
//! outside comments, strings and `#[cfg(test)]` items, and builds the graph
//! of top-level modules: `src/x.rs` and everything under `src/x/` are the
//! node `x`; ties between files inside one folder are not edges. Then:
//!
//! 1. the graph has no cycle;
//! 2. the leaf modules import only what [`LEAVES`] lists;
//! 3. the request pipeline (`proxy`) is imported only by [`PIPELINE_USERS`];
//! 4. the one-way ties in [`ONE_WAY`] point the right way.
//!
//! `cargo test --test architecture -- --nocapture` prints the graph.
//! The tables below are the executable form of the dependency rule that
//! `docs/architecture.md` states in prose: change them together.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

// === The rule ===

/// Leaf modules, at the bottom of the graph, and all they may import.
/// The pipeline imports them; they import nothing from the request path.
const LEAVES: &[(&str, &[&str])] = &[
    // Why a fetch failed or Shellac answered itself: plain labels.
    ("reason", &[]),
    // Host normalisation (routes, cache keys, configuration, bans).
    ("host", &[]),
    // The name globs and host patterns of `[[rule]]`.
    ("pattern", &["host"]),
    // The client's address as a connection gives it (IP or Unix socket).
    ("peer", &[]),
    // Content codings: Accept-Encoding and the gzip / brotli codecs.
    ("encoding", &[]),
    // The ESI parser: bytes in, text and includes out.
    ("esi", &[]),
    // Every metric family and the values they count.
    ("metrics", &["reason"]),
    // Retry policy and budget; its settings are plain configuration data.
    ("retry", &["config"]),
    // The validated configuration: plain data, below everything that reads it.
    ("config", &["host", "pattern"]),
];

/// The request pipeline, and the entry points that may drive it: the server
/// serves it, `generation` builds it, `reload` swaps it, `admin` reads it.
/// (The crate root, `lib.rs`, wires everything and is not a node.)
const PIPELINE: &str = "proxy";
const PIPELINE_USERS: &[&str] = &["server", "generation", "reload", "admin"];

/// Ties that must go one way only: `(lower, upper, why)`; `lower` never
/// imports `upper`.
const ONE_WAY: &[(&str, &str, &str)] = &[
    (
        "backend",
        "body",
        "backend owns its response body; the crate's Body wraps it",
    ),
    (
        "cache",
        "admin",
        "the cache's metric handles live in metrics",
    ),
    (
        "admin",
        "server",
        "both take the current generation from generation",
    ),
];

// === The tests ===

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = Graph::of_crate();
    print!("{graph}");
    if let Some(cycle) = graph.cycle() {
        let mut message = format!(
            "import cycle between top-level modules: {}\n",
            cycle.join(" -> ")
        );
        for pair in cycle.windows(2) {
            message.push_str(&format!(
                "  {} -> {}: {}\n",
                pair[0],
                pair[1],
                graph.evidence(&pair[0], &pair[1])
            ));
        }
        panic!("{message}");
    }
}

#[test]
fn leaf_modules_import_only_what_the_rule_allows() {
    let graph = Graph::of_crate();
    let mut broken = Vec::new();
    for (leaf, allowed) in LEAVES {
        assert!(
            graph.has_node(leaf),
            "leaf module `{leaf}` not found under src/"
        );
        for import in graph.imports(leaf) {
            if !allowed.contains(&import.as_str()) {
                broken.push(format!(
                    "`{leaf}` is a leaf and may import only {allowed:?}, but imports `{import}`: {}",
                    graph.evidence(leaf, &import)
                ));
            }
        }
    }
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}

#[test]
fn only_the_entry_points_import_the_pipeline() {
    let graph = Graph::of_crate();
    let mut broken = Vec::new();
    for module in graph.nodes() {
        if module != PIPELINE
            && !PIPELINE_USERS.contains(&module.as_str())
            && graph.imports(&module).contains(PIPELINE)
        {
            broken.push(format!(
                "`{module}` imports `{PIPELINE}`, which only {PIPELINE_USERS:?} may: {}",
                graph.evidence(&module, PIPELINE)
            ));
        }
    }
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}

#[test]
fn one_way_ties_point_the_right_way() {
    let graph = Graph::of_crate();
    let mut broken = Vec::new();
    for (lower, upper, why) in ONE_WAY {
        if graph.imports(lower).contains(*upper) {
            broken.push(format!(
                "`{lower}` must not import `{upper}` ({why}): {}",
                graph.evidence(lower, upper)
            ));
        }
    }
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}

/// The scanner finds what is certainly there, so the rules above cannot
/// pass because it found nothing.
#[test]
fn the_scanner_sees_known_imports() {
    let graph = Graph::of_crate();
    for (from, to) in [
        ("proxy", "cache"),
        ("proxy", "backend"),
        ("body", "backend"),
    ] {
        assert!(
            graph.imports(from).contains(to),
            "expected `{from}` to import `{to}`; the scanner is broken"
        );
    }
    // Test modules are not part of the graph: `backend`'s tests use the
    // crate's `Body`, its code must not.
    assert!(!graph.imports("backend").contains("body"));
}

#[test]
fn the_scanner_reads_groups_super_paths_and_skips_tests() {
    let source = r#"
        //! Docs name crate::doc_only.
        use crate::{alpha::A, beta};
        use super::super::gamma::G; // crate::comment_only
        fn f() -> &'static str { let _c = 'x'; "crate::string_only" }
        #[cfg(test)]
        mod tests { use crate::test_only; }
        #[cfg(test)]
        use crate::test_use;
        fn g() { crate::delta::call(); }
        #[cfg(test)]
        pub(crate) mod more_tests;
    "#;
    let found: BTreeSet<String> = references(source, &["x".into(), "y".into()])
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let expected: BTreeSet<String> = ["alpha", "beta", "gamma", "delta"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
    assert_eq!(test_only_children(&code_only(source)), ["more_tests"]);
}

// === impl Graph ===

/// Top-level modules and, for each import, where it was first seen.
struct Graph {
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

impl Graph {
    /// The graph of the crate in `src/`.
    fn of_crate() -> Graph {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let tops: BTreeSet<String> = files
            .iter()
            .filter_map(|file| module_path(&src, file).into_iter().next())
            .collect();
        let read = |file: &Path| {
            fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
        };
        // Files of `#[cfg(test)] mod name;` are tests too.
        let mut test_only: Vec<Vec<String>> = Vec::new();
        for file in &files {
            let path = module_path(&src, file);
            for child in test_only_children(&code_only(&read(file))) {
                let mut child_path = path.clone();
                child_path.push(child);
                test_only.push(child_path);
            }
        }
        for file in &files {
            let path = module_path(&src, file);
            let Some(top) = path.first().cloned() else {
                // lib.rs and main.rs: the root wires everything together.
                continue;
            };
            if test_only.iter().any(|t| path.starts_with(t)) {
                continue;
            }
            let text = read(file);
            let imports = edges.entry(top.clone()).or_default();
            for (name, line) in references(&text, &path) {
                if name == top {
                    continue;
                }
                // `crate::Config` and the like: an item of the crate root.
                let target = if tops.contains(&name) {
                    name
                } else {
                    "lib (crate root)".to_string()
                };
                let shown = file.strip_prefix(&src).unwrap_or(file).display();
                imports
                    .entry(target)
                    .or_insert_with(|| format!("src/{shown}:{line}"));
            }
        }
        Graph { edges }
    }

    fn has_node(&self, module: &str) -> bool {
        self.edges.contains_key(module)
    }

    fn nodes(&self) -> Vec<String> {
        self.edges.keys().cloned().collect()
    }

    fn imports(&self, module: &str) -> BTreeSet<String> {
        self.edges
            .get(module)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Where `from` first imports `to`.
    fn evidence(&self, from: &str, to: &str) -> String {
        self.edges
            .get(from)
            .and_then(|m| m.get(to))
            .cloned()
            .unwrap_or_else(|| "?".to_string())
    }

    /// A cycle, as the modules on it with the first repeated at the end.
    fn cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        fn visit(
            graph: &Graph,
            node: &str,
            marks: &mut BTreeMap<String, Mark>,
            path: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            marks.insert(node.to_string(), Mark::OnPath);
            path.push(node.to_string());
            for next in graph.imports(node) {
                match marks.get(&next).copied().unwrap_or(Mark::New) {
                    Mark::OnPath => {
                        let start = path.iter().position(|n| *n == next).unwrap_or(0);
                        let mut cycle = path[start..].to_vec();
                        cycle.push(next);
                        return Some(cycle);
                    }
                    Mark::New => {
                        if let Some(cycle) = visit(graph, &next, marks, path) {
                            return Some(cycle);
                        }
                    }
                    Mark::Done => {}
                }
            }
            path.pop();
            marks.insert(node.to_string(), Mark::Done);
            None
        }
        let mut marks = BTreeMap::new();
        for node in self.edges.keys() {
            if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
                if let Some(cycle) = visit(self, node, &mut marks, &mut Vec::new()) {
                    return Some(cycle);
                }
            }
        }
        None
    }
}

impl std::fmt::Display for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "top-level module imports (crate::…, tests excluded):")?;
        for (module, imports) in &self.edges {
            let names: Vec<&str> = imports.keys().map(String::as_str).collect();
            let names = if names.is_empty() {
                "(nothing)".to_string()
            } else {
                names.join(", ")
            };
            writeln!(f, "  {module:<12} -> {names}")?;
        }
        Ok(())
    }
}

// === Reading the sources ===

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/cache/l2/mod.rs` is `[cache, l2]`,
/// `src/retry.rs` is `[retry]`, `src/lib.rs` and `src/main.rs` are `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// The top-level module names `source` refers to, each with the line it was
/// seen on. `path` is the file's module path, for `super::` paths.
fn references(source: &str, path: &[String]) -> Vec<(String, usize)> {
    let code = without_tests(&code_only(source));
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_ident(bytes[i - 1]);
        if at_word_start && bytes[i..].starts_with(b"crate::") {
            let line = line_of(&code, i);
            let mut j = i + "crate::".len();
            j = skip_space(bytes, j);
            if bytes.get(j) == Some(&b'{') {
                for name in group_heads(&code, j) {
                    found.push((name, line));
                }
            } else if let Some(name) = ident_at(&code, j) {
                found.push((name, line));
            }
            i = j;
            continue;
        }
        if at_word_start && bytes[i..].starts_with(b"super::") {
            let line = line_of(&code, i);
            let mut j = i;
            let mut ups = 0;
            while bytes[j..].starts_with(b"super::") {
                ups += 1;
                j += "super::".len();
            }
            // Climbing out of the top-level module reaches the crate root.
            if ups >= path.len() && !path.is_empty() {
                if let Some(name) = ident_at(&code, j) {
                    found.push((name, line));
                }
            }
            i = j;
            continue;
        }
        i += 1;
    }
    found
}

/// The first identifier of each entry of the `{…}` group opening at `open`.
fn group_heads(code: &str, open: usize) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut entry_start = true;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                depth += 1;
                if depth == 1 {
                    entry_start = true;
                }
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => entry_start = true,
            b if depth == 1 && entry_start && is_ident(b) => {
                if let Some(name) = ident_at(code, i) {
                    if name != "self" {
                        heads.push(name.clone());
                    }
                    i += name.len();
                    entry_start = false;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

/// `source` with comments, strings and character literals blanked out
/// (newlines kept, so line numbers still hold).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && raw_string_at(&chars, i) {
            // r"…" or r#"…"#: ends at a quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &skipped in &chars[i..j.min(chars.len())] {
                out.push(blank(skipped));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), or a lifetime.
            if next == Some('\\') {
                // Past the backslash and the escaped character ('\'' too).
                let mut j = i + 3;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                for _ in i..=j.min(chars.len() - 1) {
                    out.push(' ');
                }
                i = j + 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether a raw string starts at `i` (and not an identifier ending in r).
fn raw_string_at(chars: &[char], i: usize) -> bool {
    let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    !after_ident && chars.get(j) == Some(&'"')
}

/// `code` (already without comments and strings) with every item under
/// `#[cfg(test)]` blanked out: up to its `;`, or its whole `{…}` body.
fn without_tests(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = code.as_bytes().to_vec();
    let mut from = 0;
    while let Some(found) = code[from..].find(MARK) {
        let start = from + found;
        let mut i = start + MARK.len();
        let bytes = code.as_bytes();
        let mut depth = 0usize;
        while i < bytes.len() {
            match bytes[i] {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        for byte in &mut out[start..i.min(bytes.len())] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
        from = i.min(bytes.len());
    }
    // Only ASCII bytes were replaced by ASCII spaces, so this stays UTF-8;
    // were it not, the lossy copy still has every identifier the scan needs.
    String::from_utf8_lossy(&out).into_owned()
}

/// The names of `#[cfg(test)] mod name;` declarations in `code`.
fn test_only_children(code: &str) -> Vec<String> {
    let mut children = Vec::new();
    for (at, _) in code.match_indices("#[cfg(test)]") {
        let rest = code[at + "#[cfg(test)]".len()..].trim_start();
        let rest = rest.strip_prefix("pub").map_or(rest, |r| {
            let r = r.trim_start();
            match r.strip_prefix('(') {
                Some(inner) => inner.split_once(')').map_or(r, |(_, after)| after),
                None => r,
            }
        });
        let Some(rest) = rest.trim_start().strip_prefix("mod ") else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(name) = ident_at(rest, 0) {
            if rest[name.len()..].trim_start().starts_with(';') {
                children.push(name);
            }
        }
    }
    children
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn ident_at(code: &str, i: usize) -> Option<String> {
    let bytes = code.as_bytes();
    let end = (i..bytes.len())
        .find(|&j| !is_ident(bytes[j]))
        .unwrap_or(bytes.len());
    (end > i && !bytes[i].is_ascii_digit()).then(|| code[i..end].to_string())
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

fn line_of(code: &str, i: usize) -> usize {
    code[..i].bytes().filter(|&b| b == b'\n').count() + 1
}
