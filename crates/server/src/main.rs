//! The `myelin` binary.

fn main() -> std::process::ExitCode {
    myelin_server::cli::main()
}
