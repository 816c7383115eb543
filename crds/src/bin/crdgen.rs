//! Writes the TradingBot CRD YAML: to stdout, or to the file given as the only argument.
//! With `--account PATH`, writes the TradingAccount CRD YAML to PATH as well. With
//! `--markdown PATH`, writes the API reference (`docs/CRD_REFERENCE.md`) to PATH as well;
//! given alone, `--markdown PATH` writes only the reference.
//!
//! ```text
//! crdgen                                    # TradingBot CRD YAML to stdout
//! crdgen crds/tradingbot.crd.yaml --account crds/tradingaccount.crd.yaml
//! crdgen --markdown docs/CRD_REFERENCE.md   # the reference to the file
//! ```

use std::process::ExitCode;

const USAGE: &str = "usage: crdgen [CRD_YAML_PATH] [--account ACCOUNT_CRD_YAML_PATH] [--markdown MARKDOWN_PATH]";

#[derive(Debug, Default, PartialEq)]
struct Outputs {
    yaml: Option<String>,
    account: Option<String>,
    markdown: Option<String>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Outputs, String> {
    let mut outputs = Outputs::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--markdown" => {
                let path = args.next().ok_or("--markdown needs a path")?;
                if outputs.markdown.replace(path).is_some() {
                    return Err("--markdown given twice".into());
                }
            }
            "--account" => {
                let path = args.next().ok_or("--account needs a path")?;
                if outputs.account.replace(path).is_some() {
                    return Err("--account given twice".into());
                }
            }
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ => {
                if outputs.yaml.replace(arg).is_some() {
                    return Err("more than one CRD YAML path".into());
                }
            }
        }
    }
    Ok(outputs)
}

fn write(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|error| format!("cannot write {path}: {error}"))
}

fn main() -> ExitCode {
    let outputs = match parse(std::env::args().skip(1)) {
        Ok(outputs) => outputs,
        Err(error) if error.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("crdgen: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut result = Ok(());
    match (&outputs.yaml, &outputs.markdown) {
        (Some(path), _) => result = write(path, &tradingbot_crds::crd_yaml()),
        (None, None) => print!("{}", tradingbot_crds::crd_yaml()),
        (None, Some(_)) => {}
    }
    if let (Ok(()), Some(path)) = (&result, &outputs.account) {
        result = write(path, &tradingbot_crds::account_crd_yaml());
    }
    if let (Ok(()), Some(path)) = (&result, &outputs.markdown) {
        result = write(path, &tradingbot_crds::reference::markdown());
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crdgen: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Outputs, String> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn yaml_path_markdown_path_or_both() {
        assert_eq!(args(&[]), Ok(Outputs::default()));
        let account = args(&["x.yaml", "--account", "a.yaml"]).unwrap();
        assert_eq!(account.account.as_deref(), Some("a.yaml"));
        assert_eq!(args(&["x.yaml"]).unwrap().yaml.as_deref(), Some("x.yaml"));
        let md = args(&["--markdown", "r.md"]).unwrap();
        assert_eq!((md.yaml, md.markdown.as_deref()), (None, Some("r.md")));
        let both = args(&["x.yaml", "--markdown", "r.md"]).unwrap();
        assert_eq!(
            (both.yaml.as_deref(), both.markdown.as_deref()),
            (Some("x.yaml"), Some("r.md"))
        );
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(args(&["--markdown"]).is_err());
        assert!(args(&["--account"]).is_err());
        assert!(args(&["a.yaml", "b.yaml"]).is_err());
        assert!(args(&["--yaml", "a"]).is_err());
        assert_eq!(args(&["--help"]), Err(String::new()));
    }
}
