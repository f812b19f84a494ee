//! The sandbox process that runs uploaded model code for rwp-server and
//! rwp-worker (see the `rwp_sandbox` crate); they start it, never a user.

fn main() -> std::process::ExitCode {
    rwp_sandbox::sandbox_main()
}
