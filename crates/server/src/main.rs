//! The `myelin` binary.

fn main() -> std::process::ExitCode {
    // The process-wide rustls provider, once, for any dependency that builds a TLS configuration
    // without naming one. Myelin's own listeners and clients pass the ring provider explicitly.
    // This is the first thing the process does, so no other provider can be installed yet.
    let _ = rustls::crypto::ring::default_provider().install_default();
    myelin_server::cli::main()
}
