fn main() -> std::process::ExitCode {
    benchstack::cli::main()
}
