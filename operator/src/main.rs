fn main() {
    eprintln!("tradingbot-operator: under construction");
    std::process::exit(1);
}
