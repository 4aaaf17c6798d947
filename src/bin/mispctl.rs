//! `mispctl`: a shim over `mispd::ctl`.
fn main() -> std::process::ExitCode {
    mispd::ctl::main()
}
