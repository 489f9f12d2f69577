//! Quality report of the Sentinel's local rules on the labelled set in `tests/data/sentinel/`:
//! `cargo run --release --example sentinel_eval [-- --verbose]`.
//!
//! Attacks: every row of the PurpleLlama and Giskard files. Benign: `benign.jsonl`.
//! Held-out split: every third row of each file (index % 3 == 2) is `test`, the rest `tune`.
//! `context_dependent.json` lists PurpleLlama rows that carry no attack cue on their
//! own (an innocuous question that only breaks its system prompt's topic rule); metrics
//! are printed with and without them.
#![allow(
    clippy::expect_used,
    reason = "a dev tool over the repo's own data files: a missing or broken file stops it with that message"
)]

use std::collections::BTreeMap;
use std::fs;

use omi::agents::sentinel::Rules;

struct Case {
    text: String,
    attack: bool,
    source: String,
    /// Row index in its file, printed by `--verbose`.
    row: usize,
    tag: String,
    held_out: bool,
    context_dependent: bool,
}

fn main() {
    let verbose = std::env::args().any(|a| a == "--verbose");
    let cases = load();
    let rules = Rules::new();
    let flags: Vec<bool> = cases.iter().map(|c| rules.scan(&c.text).injection).collect();

    report("full set", &cases, &flags, |_| true);
    report("held-out (every 3rd row)", &cases, &flags, |c| c.held_out);
    report("tune (other rows)", &cases, &flags, |c| !c.held_out);
    report("self-contained attacks (no context-dependent rows)", &cases, &flags, |c| !c.context_dependent);
    report("self-contained, held-out", &cases, &flags, |c| !c.context_dependent && c.held_out);

    println!("\nper-source recall (full set | held-out):");
    let mut groups: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for (c, &f) in cases.iter().zip(&flags).filter(|(c, _)| c.attack) {
        let g = groups.entry(format!("{} / {}", c.source, c.tag)).or_default();
        g[0] += usize::from(f);
        g[1] += 1;
        if c.held_out {
            g[2] += usize::from(f);
            g[3] += 1;
        }
    }
    for (name, [hit, n, thit, tn]) in &groups {
        println!("  {name:<52} {hit:>3}/{n:<3} {:>5.1}% | {thit}/{tn}", pct(*hit, *n));
    }
    let borderline: Vec<_> = cases.iter().zip(&flags).filter(|(c, _)| c.tag == "borderline").collect();
    let bflag = borderline.iter().filter(|(_, f)| **f).count();
    println!("\nborderline benign (quote an attack to ask about it): {bflag}/{} flagged", borderline.len());

    if verbose {
        println!("\nfalse positives:");
        for (c, _) in cases.iter().zip(&flags).filter(|(c, f)| !c.attack && **f) {
            let v = rules.scan(&c.text);
            println!("  {}#{} [{:.2} {:?}] {}", c.source, c.row, v.score, v.rules, short(&c.text));
        }
        println!("\nmissed attacks:");
        for (c, _) in cases.iter().zip(&flags).filter(|(c, f)| c.attack && !**f) {
            let v = rules.scan(&c.text);
            let ctx = if c.context_dependent { " (context-dependent)" } else { "" };
            let held = if c.held_out { " held-out" } else { "" };
            println!(
                "  {}#{}{held} [{:.2} {:?}] {}{ctx} | {}",
                c.source,
                c.row,
                v.score,
                v.rules,
                c.tag,
                short(&c.text)
            );
        }
    }
}

fn report(name: &str, cases: &[Case], flags: &[bool], keep: impl Fn(&Case) -> bool) {
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    let (mut strict_fp, mut strict_n) = (0, 0);
    for (c, &f) in cases.iter().zip(flags).filter(|(c, _)| keep(c)) {
        match (c.attack, f) {
            (true, true) => tp += 1,
            (true, false) => fn_ += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
        }
        if !c.attack && c.tag != "borderline" {
            strict_n += 1;
            strict_fp += usize::from(f);
        }
    }
    let recall = pct(tp, tp + fn_);
    let tnr = pct(tn, tn + fp);
    println!("\n== {name}: {} attacks, {} benign", tp + fn_, tn + fp);
    println!("  precision          {:>6.1}%", pct(tp, tp + fp));
    println!("  recall             {recall:>6.1}%");
    println!("  balanced accuracy  {:>6.1}%", (recall + tnr) / 2.0);
    println!("  benign FPR         {:>6.1}%  ({fp}/{})", pct(fp, tn + fp), tn + fp);
    println!("  benign FPR w/o borderline {:>6.1}%  ({strict_fp}/{strict_n})", pct(strict_fp, strict_n));
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 }
}

fn short(t: &str) -> String {
    let one: String = t.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    if one.chars().count() > 150 { format!("{}...", one.chars().take(150).collect::<String>()) } else { one }
}

/// A file of the evaluation set, wherever the example is run from.
fn data(name: &str) -> String {
    format!("{}/tests/data/sentinel/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn load() -> Vec<Case> {
    let mut cases = Vec::new();
    let ctx: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(data("context_dependent.json")).expect("read context_dependent"))
            .expect("parse context_dependent");
    let ctx_ids: Vec<u64> = ctx.as_array().expect("array").iter().filter_map(|r| r["prompt_id"].as_u64()).collect();
    let pl: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(data("purplellama_prompt_injection.json")).expect("read purplellama"))
            .expect("parse purplellama");
    for (i, row) in pl.as_array().expect("array").iter().enumerate() {
        cases.push(Case {
            text: row["user_input"].as_str().unwrap_or_default().to_string(),
            attack: true,
            source: "purplellama".into(),
            row: i,
            tag: row["injection_variant"].as_str().unwrap_or_default().to_string(),
            held_out: i % 3 == 2,
            context_dependent: row["prompt_id"].as_u64().is_some_and(|id| ctx_ids.contains(&id)),
        });
    }
    let csv = fs::read_to_string(data("giskard_prompt_injections.csv")).expect("read giskard");
    let rows = parse_csv(&csv);
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).expect("column");
    let (prompt, group) = (col("prompt"), col("group"));
    for (i, r) in rows[1..].iter().enumerate() {
        cases.push(Case {
            text: r[prompt].clone(),
            attack: true,
            source: "giskard".into(),
            row: i,
            tag: r[group].clone(),
            held_out: i % 3 == 2,
            context_dependent: false,
        });
    }
    let benign = fs::read_to_string(data("benign.jsonl")).expect("read benign");
    for (i, line) in benign.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("benign json line");
        cases.push(Case {
            text: v["text"].as_str().unwrap_or_default().to_string(),
            attack: false,
            source: "benign".into(),
            row: i,
            tag: v["tag"].as_str().unwrap_or("normal").to_string(),
            held_out: i % 3 == 2,
            context_dependent: false,
        });
    }
    cases
}

/// Minimal RFC 4180 reader: quoted fields may hold commas, newlines and `""`.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, _) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}
