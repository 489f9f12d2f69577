//! The layering of ARCHITECTURE.md ("Layers"), locked in: every use goes down its list, and
//! there is no module cycle between the top-level modules of `src/` (a folder or a file),
//! except through the composition root (`app`, `server`, `cli`, `main`, `lib`), which handlers
//! may name for their `State<Arc<AppState>>`. Every `crate::…` path counts (`use`, `pub(crate) use`, groups,
//! paths in expressions, `$crate::` in macros), and so does a `super::` that climbs out of
//! its top-level module; comments and string literals do not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges into these are allowed: they hold `AppState`, the router and the entry points.
const ROOT: [&str; 5] = ["app", "server", "cli", "main", "lib"];

/// One reference from a top-level module to another: where it is written.
#[derive(Debug, Clone)]
struct Reference {
    file: String,
    line: usize,
}

type Graph = BTreeMap<String, BTreeMap<String, Vec<Reference>>>;

#[test]
fn no_module_cycle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = dependency_graph(&src);
    assert!(graph.len() > 10, "read too few modules under {}: {:?}", src.display(), graph.keys());
    let cycles = cycles(&graph);
    assert!(cycles.is_empty(), "module cycles between top-level folders of src/:\n{}", describe(&cycles, &graph));
}

#[test]
fn every_use_goes_down_the_layers_of_architecture_md() {
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root_dir.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let layers = layers(&text);
    let graph = dependency_graph(&root_dir.join("src"));
    let mut wrong = Vec::new();
    for (from, edges) in &graph {
        if ROOT.contains(&from.as_str()) {
            continue;
        }
        let Some(&own) = layers.get(from) else {
            wrong.push(format!("  `{from}` is in no layer: place it in the list"));
            continue;
        };
        for (to, references) in edges {
            if ROOT.contains(&to.as_str()) || layers.get(to).is_some_and(|&layer| layer < own) {
                continue;
            }
            let theirs = layers.get(to).map_or("no layer".to_owned(), |layer| format!("layer {layer}"));
            let at: Vec<String> = references.iter().map(|r| format!("{}:{}", r.file, r.line)).collect();
            wrong.push(format!("  {from} (layer {own}) uses {to} ({theirs}): {}", at.join(", ")));
        }
    }
    assert!(wrong.is_empty(), "uses that do not go down the layers of ARCHITECTURE.md:\n{}", wrong.join("\n"));
}

/// `module -> layer number`, from the numbered list under `## Layers`: each line names its
/// modules in backticks before its first colon.
fn layers(architecture: &str) -> BTreeMap<String, usize> {
    let Some(section) = architecture.split("\n## Layers\n").nth(1) else {
        panic!("ARCHITECTURE.md has no `## Layers` section");
    };
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut layers = BTreeMap::new();
    for line in section.lines() {
        let Some((number, rest)) = line.split_once(". ") else { continue };
        let Ok(number) = number.parse::<usize>() else { continue };
        let names = rest.split(':').next().unwrap_or_default();
        for name in names.split('`').skip(1).step_by(2) {
            let earlier = layers.insert(name.to_owned(), number);
            assert!(earlier.is_none(), "`{name}` is in two layers of ARCHITECTURE.md");
        }
    }
    assert!(layers.len() > 10, "read too few modules from the layers of ARCHITECTURE.md: {layers:?}");
    layers
}

#[test]
fn groups_super_comments_and_strings_are_read_as_rust_reads_them() {
    let modules: BTreeSet<String> = ["keys", "store", "events", "web", "billing", "agents"].map(String::from).into();
    let text = r##"
        use crate::{keys::{ApiKey, KeyHash}, self, store::Store};
        // use crate::billing::Nothing;
        /* crate::agents /* nested */ crate::agents */
        const S: &str = "crate::billing";
        const R: &str = r#"crate::billing "quoted""#;
        const C: char = '{';
        pub(crate) use crate::events::Event;
        fn f<'a>(x: &'a str) { let _ = $crate::web::error::ApiError::new(); }
        mod tests {
            use super::keys::Local;
            use super::super::store::Cross;
        }
    "##;
    let found: BTreeSet<String> =
        references("src/x.rs", 1, text, &modules).into_iter().map(|(target, _)| target).collect();
    assert_eq!(found, ["events", "keys", "store", "web"].map(String::from).into());

    // At the file level of `src/x/mod.rs`, `super::` is the crate root; one level deeper it is `x`.
    let found: BTreeSet<String> =
        references("src/x/mod.rs", 1, "use super::keys::A;", &modules).into_iter().map(|(target, _)| target).collect();
    assert_eq!(found, ["keys"].map(String::from).into());
    assert!(references("src/x/y.rs", 2, "use super::keys::A;", &modules).is_empty());
}

#[test]
fn a_cycle_is_found_and_edges_into_the_root_are_not_one() {
    let edge = |from: &str, to: &str| (from.to_owned(), to.to_owned());
    let graph_of = |edges: &[(String, String)]| -> Graph {
        let mut graph = Graph::new();
        for (from, to) in edges {
            graph
                .entry(from.clone())
                .or_default()
                .entry(to.clone())
                .or_default()
                .push(Reference { file: format!("src/{from}.rs"), line: 1 });
            graph.entry(to.clone()).or_default();
        }
        graph
    };
    let cyclic = graph_of(&[edge("store", "keys"), edge("keys", "events"), edge("events", "store")]);
    assert_eq!(cycles(&cyclic), vec![["events", "store", "keys"].map(String::from).to_vec()]);
    let through_root = graph_of(&[edge("app", "gateway"), edge("gateway", "app"), edge("server", "app")]);
    assert!(cycles(&through_root).is_empty());
}

/// `top-level module -> module it names -> where`, read from every `.rs` file under `src/`
/// (but `src/bin/`: binaries are crates of their own and name the library as `omi::`).
fn dependency_graph(src: &Path) -> Graph {
    let files = rust_files(src);
    let modules: BTreeSet<String> = files.iter().map(|file| top_level_module(src, file).0).collect();
    let mut graph = Graph::new();
    for file in &files {
        let (module, depth) = top_level_module(src, file);
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let shown = file.strip_prefix(src.parent().unwrap_or(src)).unwrap_or(file).display().to_string();
        let edges = graph.entry(module.clone()).or_default();
        for (target, reference) in references(&shown, depth, &text, &modules) {
            if target != module {
                edges.entry(target).or_default().push(reference);
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("list {}: {e}", dir.display())).path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "bin") {
                files.extend(rust_files(&path));
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The top-level module a file belongs to, and how deep the file's own module sits
/// (`src/lib.rs`: 0, `src/config.rs` and `src/store/mod.rs`: 1, `src/store/keys.rs`: 2).
fn top_level_module(src: &Path, file: &Path) -> (String, usize) {
    let relative = file.strip_prefix(src).unwrap_or(file);
    let parts: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
    let top = parts[0].trim_end_matches(".rs").to_owned();
    let depth = match parts.last().map(String::as_str) {
        _ if parts.len() == 1 && (top == "lib" || top == "main") => 0,
        Some("mod.rs") => parts.len() - 1,
        _ => parts.len(),
    };
    (top, depth)
}

/// The top-level modules a file's text names, each with its line. `depth` is the depth of
/// the file's own module, so that `super::` climbing to the crate root counts.
fn references(file: &str, depth: usize, text: &str, modules: &BTreeSet<String>) -> Vec<(String, Reference)> {
    let code = without_comments_and_strings(text);
    let bytes = code.as_bytes();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    // Inline `mod name { … }` blocks deepen `super::` by one each: the brace depth they opened at.
    let mut inline_modules: Vec<usize> = Vec::new();
    let mut braces = 0usize;
    let mut at = 0;
    while at < bytes.len() {
        let rest = &code[at..];
        let after_identifier = at > 0 && is_identifier_byte(bytes[at - 1]);
        if bytes[at] == b'{' {
            braces += 1;
        } else if bytes[at] == b'}' {
            braces = braces.saturating_sub(1);
            if inline_modules.last() == Some(&braces) {
                inline_modules.pop();
            }
        } else if !after_identifier && rest.starts_with("mod ") {
            let name_end = identifier_end(rest, 4);
            if rest[name_end..].trim_start().starts_with('{') {
                inline_modules.push(braces);
            }
        } else if !after_identifier && rest.starts_with("crate::") {
            for name in path_heads(&rest["crate::".len()..]) {
                // Anything else at the crate root (`crate::DEFAULT_PLAN`) is in lib.rs.
                let target = if modules.contains(&name) { name } else { "lib".to_owned() };
                found.push((target, Reference { file: file.to_owned(), line: line_of(at) }));
            }
            at += "crate::".len();
            continue;
        } else if !after_identifier && rest.starts_with("super::") {
            let mut climbs = 0;
            let mut tail = rest;
            while let Some(next) = tail.strip_prefix("super::") {
                climbs += 1;
                tail = next;
            }
            if climbs >= depth + inline_modules.len() {
                for name in path_heads(tail).into_iter().filter(|name| modules.contains(name)) {
                    found.push((name, Reference { file: file.to_owned(), line: line_of(at) }));
                }
            }
            at += rest.len() - tail.len();
            continue;
        }
        at += 1;
    }
    found
}

/// The first segment of the path(s) that `text` starts: `a::b` gives `a`, `{a::b, c}` gives
/// `a` and `c` (`self` is the root itself and names nothing).
fn path_heads(text: &str) -> Vec<String> {
    let text = text.trim_start();
    let Some(group) = text.strip_prefix('{') else {
        let end = identifier_end(text, 0);
        return if end == 0 { Vec::new() } else { vec![text[..end].to_owned()] };
    };
    let mut heads = Vec::new();
    let mut nesting = 0usize;
    let mut item_start = true;
    for (at, c) in group.char_indices() {
        match c {
            '{' => nesting += 1,
            '}' if nesting == 0 => break,
            '}' => nesting -= 1,
            ',' if nesting == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                item_start = false;
                let end = identifier_end(group, at);
                if end > at && &group[at..end] != "self" {
                    heads.push(group[at..end].to_owned());
                }
            }
            _ => {}
        }
    }
    heads
}

fn identifier_end(text: &str, from: usize) -> usize {
    text[from..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |end| from + end)
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The text with comments removed and every string or char literal emptied, so that neither
/// a path in a string nor a brace in a literal is taken for code. Line breaks are kept.
fn without_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let keep_lines = |out: &mut String, skipped: &[char]| {
        out.extend(skipped.iter().filter(|&&c| c == '\n'));
    };
    while i < chars.len() {
        let c = chars[i];
        let previous_is_identifier = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let start = i;
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            keep_lines(&mut out, &chars[start..i.min(chars.len())]);
        } else if !previous_is_identifier && (c == 'r' || (c == 'b' && at(i + 1) == 'r')) && {
            let hashes_from = if c == 'b' { i + 2 } else { i + 1 };
            let mut j = hashes_from;
            while at(j) == '#' {
                j += 1;
            }
            at(j) == '"' && (c == 'b' || at(i + 1) == '"' || at(i + 1) == '#')
        } {
            // A raw string: r"…", r#"…"#, br"…"; it ends at a quote followed by as many hashes.
            let start = i;
            i += if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            while i < chars.len() && !(chars[i] == '"' && (1..=hashes).all(|h| at(i + h) == '#')) {
                i += 1;
            }
            i += 1 + hashes;
            out.push_str("\"\"");
            keep_lines(&mut out, &chars[start..i.min(chars.len())]);
        } else if c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
            keep_lines(&mut out, &chars[start..i.min(chars.len())]);
        } else if c == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A char literal ('{', '\n', '\u{7f}'); a lifetime ('a) has no closing quote.
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The shortest cycle through each module that is on one, without the edges into the root;
/// each once, as the modules along it starting at the smallest name.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let successors = |node: &str| -> Vec<String> {
        let edges = graph.get(node).map(|edges| edges.keys());
        edges.into_iter().flatten().filter(|to| !ROOT.contains(&to.as_str())).cloned().collect()
    };
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in graph.keys() {
        // Breadth first from `start` until an edge leads back to it.
        let mut previous: BTreeMap<String, String> = BTreeMap::new();
        let mut frontier = vec![start.clone()];
        let mut closing = None;
        while closing.is_none() && !frontier.is_empty() {
            let mut next = Vec::new();
            for node in &frontier {
                for to in successors(node) {
                    if to == *start {
                        closing.get_or_insert_with(|| node.clone());
                    } else if !previous.contains_key(&to) {
                        previous.insert(to.clone(), node.clone());
                        next.push(to);
                    }
                }
            }
            frontier = next;
        }
        let Some(mut node) = closing else { continue };
        let mut cycle = vec![node.clone()];
        while node != *start {
            node = previous[&node].clone();
            cycle.push(node.clone());
        }
        cycle.reverse();
        let smallest = cycle.iter().enumerate().min_by_key(|(_, name)| *name).map_or(0, |(at, _)| at);
        cycle.rotate_left(smallest);
        found.insert(cycle);
    }
    found.into_iter().collect()
}

fn describe(cycles: &[Vec<String>], graph: &Graph) -> String {
    let mut text = String::new();
    for cycle in cycles {
        text.push_str(&format!("  {} -> {}\n", cycle.join(" -> "), cycle[0]));
        for (from, to) in cycle.iter().zip(cycle.iter().cycle().skip(1)) {
            let references = &graph[from][to];
            let shown: Vec<String> = references.iter().take(3).map(|r| format!("{}:{}", r.file, r.line)).collect();
            let more = references.len().saturating_sub(3);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            text.push_str(&format!("    {from} -> {to}: {}{more}\n", shown.join(", ")));
        }
    }
    text
}
