//! The `maestro` binary. Keep this file tiny: everything lives in `maestro-cli`.

fn main() -> std::process::ExitCode {
    maestro_cli::main()
}
