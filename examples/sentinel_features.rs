//! Exports the Sentinel model's features for the trainer (`scripts/sentinel/train_model.py`):
//! reads JSON lines `{"id": ..., "text": ...}` on stdin, writes one line per input,
//! `{"id": ..., "normalized": "...", "features": [indices], "signals": [[index, value]]}`: every
//! n-gram occurrence in order, then the features of what the rules saw (`model::Signals`).
//! `cargo run --release --example sentinel_features -- [--bits 18] < in.jsonl > out.jsonl`
use std::io::{BufRead, Write};

use omi::agents::sentinel::{Rules, model};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bits = match args.iter().position(|a| a == "--bits") {
        Some(i) => args.get(i + 1).ok_or_else(|| anyhow::anyhow!("--bits needs a value"))?.parse()?,
        None => 18,
    };
    let rules = Rules::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        let row: serde_json::Value = serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
        let text = row["text"].as_str().ok_or_else(|| anyhow::anyhow!("line {}: no string `text`", n + 1))?;
        let normal = model::normalized(text);
        let mut features = Vec::new();
        model::for_each_feature(&normal, bits, |i| features.push(i));
        let mut signals = Vec::new();
        model::for_each_signal(&rules.signals(text), bits, |i, value| signals.push((i, value)));
        let record =
            serde_json::json!({"id": row["id"], "normalized": normal, "features": features, "signals": signals});
        serde_json::to_writer(&mut out, &record)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}
