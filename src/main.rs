//! The `scanway` binary: see `scanway --help` and README.md.

fn main() -> std::process::ExitCode {
    scanway::cli::main()
}
