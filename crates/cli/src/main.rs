//! `cloudai`: the CloudAI operator CLI (see `cloudai --help`).

fn main() -> std::process::ExitCode {
    cloudai_cli::app::main()
}
