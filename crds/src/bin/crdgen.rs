//! Writes the TradingBot CRD YAML: to stdout, or to the file given as the only argument.

fn main() {
    let yaml = tradingbot_crds::crd_yaml();
    match std::env::args().nth(1) {
        Some(path) => {
            if let Err(error) = std::fs::write(&path, yaml) {
                eprintln!("crdgen: cannot write {path}: {error}");
                std::process::exit(1);
            }
        }
        None => print!("{yaml}"),
    }
}
