//! `cargo run --release --example shield_bench`
//!
//! Measures `Shield::sanitize` throughput on clean text, the per-body cost of
//! a non-streamed chat completion (bench/sentinel.lua's answer), the
//! per-event cost of `SseShield` in each stream format, and the hold-back for
//! a ~1,500-word system prompt.
//!
//! `-- --body-iters 1000` only sanitizes the chat completion body that many
//! times in `sanitize_bodies`, for an instruction count a loaded machine
//! cannot disturb: `valgrind --tool=callgrind --toggle-collect='*sanitize_bodies*'
//! target/release/examples/shield_bench --body-iters 1000`.

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use omi::shield::{Shield, ShieldConfig, StreamFormat};

/// Counts heap allocations, to check that clean text costs none.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const COMMON: &[&str] = &[
    "the", "you", "to", "and", "a", "of", "in", "is", "for", "that", "your", "it", "with", "on", "as", "are", "be",
    "this", "or", "can", "not", "we", "if", "any", "all", "our", "will", "by", "please", "customer", "order",
    "support", "account", "answer", "never", "always", "team", "refund", "policy", "product", "price", "help",
    "question", "time", "days", "service", "data",
];

/// Deterministic xorshift, so every run measures the same text.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn word(&mut self) -> String {
        if self.below(2) == 0 {
            return COMMON[self.below(COMMON.len())].to_owned();
        }
        let n = 3 + self.below(8);
        (0..n).map(|_| char::from(b'a' + self.below(26) as u8)).collect()
    }

    /// Prose with punctuation and, now and then, one of `specials` (version
    /// numbers, addresses, code). Prompt and answer get different specials:
    /// identical runs like "8.8.8.8 8.8.8.8" would be genuine 8-word leaks.
    fn prose(&mut self, words: usize, specials: &[&str]) -> String {
        let mut s = String::new();
        for i in 0..words {
            match self.below(10 * specials.len()) {
                k if k < specials.len() => s.push_str(specials[k]),
                _ => s.push_str(&self.word()),
            }
            s.push_str(match self.below(12) {
                0 => ". ",
                1 => ", ",
                2 => "\n",
                _ => " ",
            });
            if i % 17 == 16 {
                s.push_str("Café ✓ ");
            }
        }
        s
    }
}

/// bench/sentinel.lua's answer, as the mock upstream returns it.
const ANSWER_BODY: &str = concat!(
    r#"{"id":"chatcmpl-mock","object":"chat.completion","created":1764201600,"model":"gpt-4o-mini","#,
    r#""choices":[{"index":0,"message":{"role":"assistant","content":"Here is a draft for your FAQ page. "#,
    r#"Where do you deliver? We deliver within ten kilometres of the shop, Tuesday to Saturday, and orders "#,
    r#"placed before noon arrive the same day. Do your products contain allergens? Most of our bakes contain "#,
    r#"wheat, milk and eggs, and some contain nuts; every label lists them. How long does bread stay fresh? "#,
    r#"Sourdough keeps three days in a paper bag and freezes well for a month. Can I order a custom cake? "#,
    r#"Yes, with five days notice. Do you have gluten-free options? Our gluten-free range is baked on "#,
    r#"separate days with separate tools, so you can enjoy it with confidence.","refusal":null},"#,
    r#""logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":312,"completion_tokens":120,"#,
    r#""total_tokens":432},"system_fingerprint":"fp_mock"}"#
);

/// bench/sentinel.sh's kind of system prompt: ~1,500 words of support-bot
/// rules over a small vocabulary, so the answer shares many of its words.
fn support_prompt(rng: &mut Rng) -> String {
    let subjects = ["the assistant", "you", "every answer", "each reply", "the support team", "our policy"];
    let verbs = ["must mention", "should explain", "never reveals", "always checks", "politely declines"];
    let objects = [
        "the refund window of thirty days",
        "the shipping times for Europe",
        "the wholesale price list",
        "the loyalty programme tiers",
        "the internal escalation path",
        "the opening hours of the Berlin office",
        "the data retention rules",
        "the order number format",
    ];
    let tails =
        ["unless a manager approves it", "in plain language", "before closing the ticket", "in under fifty words"];
    let mut s = String::from("You are Nimbus, the support assistant of Acme Rockets Inc.");
    while s.split_whitespace().count() < 1500 {
        let pick = |rng: &mut Rng, xs: &[&'static str]| xs[rng.below(xs.len())];
        let line = [pick(rng, &subjects), pick(rng, &verbs), pick(rng, &objects), pick(rng, &tails)].join(" ");
        s.push(' ');
        s.push_str(&line);
        s.push('.');
    }
    s
}

/// The measured region for callgrind's `--toggle-collect`.
#[inline(never)]
fn sanitize_bodies(sh: &Shield, body: &[u8], iters: u32) {
    for _ in 0..iters {
        assert!(black_box(sh.sanitize_json_body(black_box(body))).is_none(), "the answer must be clean");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let body_iters = args.iter().position(|a| a == "--body-iters").and_then(|i| args.get(i + 1)?.parse().ok());
    let support = Shield::new(ShieldConfig {
        system_prompt: Some(support_prompt(&mut Rng(7))),
        canary: Some("omi-canary-3f9a71c2e4b8d6".to_owned()),
        ..ShieldConfig::default()
    });
    if let Some(iters) = body_iters {
        sanitize_bodies(&support, ANSWER_BODY.as_bytes(), iters);
        println!("sanitized a {} B chat completion body {iters} times", ANSWER_BODY.len());
        return;
    }
    let iters = 20_000;
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t0 = Instant::now();
        sanitize_bodies(&support, ANSWER_BODY.as_bytes(), iters);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "sanitize_json_body, {} B chat completion, 1,500-word support prompt: {:.2} us/body, best of 10",
        ANSWER_BODY.len(),
        best * 1e6 / f64::from(iters)
    );

    let mut rng = Rng(0x0b5e_55ed);
    let prompt = rng.prose(1500, &["v1.2.3", "8.8.8.8"]);
    let words = prompt.split_whitespace().count();
    let sh = Arc::new(Shield::new(ShieldConfig {
        system_prompt: Some(prompt),
        canary: Some("omi-canary-3f9a71c2e4b8d6".to_owned()),
        internal_hosts: vec!["db.internal.example".to_owned(), "*.corp.local".to_owned()],
        ..ShieldConfig::default()
    }));
    let bare = Shield::new(ShieldConfig::default());

    // Clean text from the same vocabulary (so prompt words occur often) but
    // a different random sequence.
    let mut rng = Rng(42);
    let text = rng.prose(200_000, &["v4.5.6", "1.1.1.1", "`Vec::new()`", "12:30"]);
    assert!(sh.sanitize(&text).is_none(), "bench text must be clean");
    let region = Region::new(GLOBAL);
    black_box(sh.sanitize(black_box(&text)));
    println!(
        "heap allocations in one sanitize() of {} KB clean text: {}",
        text.len() / 1000,
        region.change().allocations
    );
    let mb = text.len() as f64 / 1e6;
    // Best of several runs approximates an idle core on a shared machine;
    // the median shows the spread.
    for (name, s) in [("full config", &*sh), ("no prompt/canary/hosts", &bare)] {
        let mut secs: Vec<f64> = (0..15)
            .map(|_| {
                let t0 = Instant::now();
                black_box(s.sanitize(black_box(&text)));
                t0.elapsed().as_secs_f64()
            })
            .collect();
        secs.sort_by(f64::total_cmp);
        println!(
            "sanitize, clean text ({name}): best {:.0} MB/s, median {:.0} MB/s ({:.1} MB, 15 runs)",
            mb / secs[0],
            mb / secs[secs.len() / 2],
            mb
        );
    }

    // A streamed answer: token-sized deltas, one SSE event per push, in each stream format.
    let answer: String = text.chars().take(400_000).collect();
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut want = 1 + rng.below(6);
    for c in answer.chars() {
        cur.push(c);
        if cur.chars().count() >= want {
            tokens.push(serde_json::Value::from(std::mem::take(&mut cur)));
            want = 1 + rng.below(6);
        }
    }
    // One SSE event carrying a JSON string token.
    type Event = fn(&serde_json::Value) -> String;
    let formats: [(StreamFormat, Event); 3] = [
        (StreamFormat::Chat, |t| {
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{t}}},\"finish_reason\":null}}]}}\n\n"
            )
        }),
        (StreamFormat::Responses, |t| {
            format!(
                "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":{t},\"logprobs\":[],\"sequence_number\":5}}\n\n"
            )
        }),
        (StreamFormat::Messages, |t| {
            format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{t}}}}}\n\n"
            )
        }),
    ];
    for (format, event) in formats {
        let events: Vec<String> = tokens.iter().map(event).collect();
        let mut best = f64::MAX;
        let (mut fed, mut max_lag, mut lag_sum) = (0usize, 0usize, 0usize);
        for _ in 0..3 {
            let mut st = sh.sse_stream(format);
            let mut sent = 0;
            (fed, max_lag, lag_sum) = (0, 0, 0);
            let t0 = Instant::now();
            for e in &events {
                fed += e.len();
                sent += st.push(e.as_bytes()).0.len();
                let lag = fed - sent;
                max_lag = max_lag.max(lag);
                lag_sum += lag;
            }
            sent += st.finish().0.len();
            best = best.min(t0.elapsed().as_secs_f64());
            assert_eq!(fed, sent, "clean stream must pass unchanged");
        }
        let ev_len = fed / events.len();
        println!(
            "SseShield ({format:?}): {:.2} us/event over {} events ({:.0} MB/s of SSE bytes), best of 3",
            best * 1e6 / events.len() as f64,
            events.len(),
            fed as f64 / 1e6 / best
        );
        println!(
            "  observed hold-back on clean text: mean {:.1} events, max {:.1} events (event ~{ev_len} B)",
            lag_sum as f64 / events.len() as f64 / ev_len as f64,
            max_lag as f64 / ev_len as f64
        );
    }
    println!("holdback() bound for a {words}-word system prompt: {} bytes of answer text", sh.holdback());
}
