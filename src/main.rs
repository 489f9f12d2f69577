// glibc's malloc contends on its arena locks between tokio's worker threads; the gateway
// allocates on every request (headers, bodies, JSON), so a thread-caching allocator pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    omi::install_crypto_provider();
    omi::cli::run()
}
