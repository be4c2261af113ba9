fn main() {
    std::process::exit(trainer::cli::main());
}
