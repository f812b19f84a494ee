//! The `rwp` binary; everything is in the library (see its docs).

fn main() -> std::process::ExitCode {
    rwp_cli::main()
}
