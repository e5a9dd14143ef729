//! The `wasmgate` binary.

fn main() -> std::process::ExitCode {
    wasmgate::cli::main()
}
