//! `mock-upstream --port 9000 [--latency-ms N] [--chunks N] [--chunk-delay-ms N]`:
//! a fake OpenAI and Anthropic API for demos and benchmarks (see `omi::mock_upstream`): chat
//! completions, completions, embeddings, responses and models, and Anthropic's messages.

use clap::Parser;
use omi::mock_upstream::{MockConfig, MockUpstream};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 9000)]
    port: u16,
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    #[arg(long, default_value_t = 3)]
    chunks: usize,
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mock = MockUpstream::new(MockConfig {
        latency_ms: args.latency_ms,
        chunk_delay_ms: args.chunk_delay_ms,
        chunks: args.chunks,
        ..MockConfig::default()
    });
    let addr = format!("{}:{}", args.host, args.port);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mock-upstream: cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    println!(
        "mock-upstream listening on http://{addr}/v1 (chat/completions, completions, embeddings, responses, models, messages)"
    );
    if let Err(e) = axum::serve(listener, mock.router()).await {
        eprintln!("mock-upstream: {e}");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}
