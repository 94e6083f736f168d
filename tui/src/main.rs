fn main() {
    eprintln!("mreg-dashboard: not built yet");
    std::process::exit(2);
}
