fn main() -> std::process::ExitCode {
    omi::install_crypto_provider();
    omi::cli::run()
}
