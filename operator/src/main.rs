//! The operator binary; its subcommands land with issue 4.
fn main() {
    eprintln!("attache-operator: not built yet (see issue 4)");
    std::process::exit(2);
}
