//! The commands the documentation gives users, read from README.md, docs/*.md and
//! docs/argocd/*.md:
//!
//! * every command of a ```` ```sh ```` (or `bash`, `shell`) block, multi-line ones included:
//!   a command continues while a quote, a `$(`, a `(` is open or the line ends with `\`;
//!   comments are dropped as bash drops them;
//! * in any other fenced block, lines that are `make` targets (README's "Two commands");
//! * inline code spans that start like a command ([`COMMAND_STARTS`]).
//!
//! Commands are compared by [`key`] (whitespace runs collapsed), so a command and its copy in
//! another file are one command.

use std::path::{Path, PathBuf};

/// An inline code span is a command when it starts with one of these, or when its first word
/// is a script of the repository (`tests/....sh`).
pub const COMMAND_STARTS: &[&str] = &[
    "kubectl ",
    "perps-bot ",
    "curl ",
    "make ",
    "helm ",
    "argocd ",
    "python3 ",
];

/// Whether an inline code span is a command (not a name or a path).
pub fn is_inline_command(span: &str) -> bool {
    let first = span.split_whitespace().next().unwrap_or_default();
    COMMAND_STARTS.iter().any(|p| span.starts_with(p)) || (first.starts_with("tests/") && first.ends_with(".sh"))
}

/// One documented command and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocCommand {
    /// The file, relative to the repository.
    pub file: String,
    /// 1-based line of the command's first line.
    pub line: usize,
    /// The command as bash runs it (comments dropped, continuation lines kept).
    pub text: String,
}

impl DocCommand {
    pub fn key(&self) -> String {
        key(&self.text)
    }
}

/// The identity of a command: whitespace runs collapsed to one space.
pub fn key(command: &str) -> String {
    command.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The documentation files, in a stable order.
pub fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "docs/argocd"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.retain(|p| p.extension().is_some_and(|x| x == "md"));
        found.sort();
        files.extend(found);
    }
    files
}

/// Every documented command of the repository at `root`.
pub fn documented_commands(root: &Path) -> Vec<DocCommand> {
    let mut commands = Vec::new();
    for file in doc_files(root) {
        let name = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        commands.extend(commands_in(&name, &text));
    }
    commands
}

/// What kind of fenced block a line is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fence {
    None,
    Shell,
    Other,
}

fn fence_of(info: &str) -> Fence {
    match info.trim() {
        "sh" | "bash" | "shell" => Fence::Shell,
        _ => Fence::Other,
    }
}

/// The commands in one markdown file.
pub fn commands_in(file: &str, markdown: &str) -> Vec<DocCommand> {
    let mut commands = Vec::new();
    let mut fence = Fence::None;
    let mut pending: Option<(usize, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = if fence == Fence::None {
                fence_of(info)
            } else {
                Fence::None
            };
            if let Some((at, text)) = pending.take() {
                panic!("{file}:{at}: the command does not end before its block does: {text}");
            }
            continue;
        }
        let mut push = |line: usize, text: String| {
            commands.push(DocCommand {
                file: file.to_string(),
                line,
                text,
            })
        };
        match fence {
            Fence::Shell => {
                let (at, mut text) = pending.take().unwrap_or((number, String::new()));
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(trimmed);
                let scan = scan(&text);
                if !scan.complete {
                    pending = Some((at, text));
                } else if !scan.code.trim().is_empty() {
                    push(at, scan.code.trim().to_string());
                }
            }
            Fence::Other => {
                if trimmed.starts_with("make ") {
                    push(number, scan(trimmed).code.trim().to_string());
                }
            }
            Fence::None => {
                for span in line.split('`').skip(1).step_by(2) {
                    if is_inline_command(span) {
                        push(number, span.to_string());
                    }
                }
            }
        }
    }
    commands
}

/// What bash would make of some shell text.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// Whether the text is a whole command (no open quote, substitution, parenthesis or
    /// trailing line continuation).
    pub complete: bool,
    /// The text without its comments.
    pub code: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    /// Plain words (top level, inside `$(...)` or `(...)`).
    Words,
    Single,
    Double,
}

/// Scan shell text the way bash tokenises quotes, `$(`, `(`, `\` and `#` comments.
pub fn scan(text: &str) -> Scan {
    let mut stack: Vec<Context> = vec![Context::Words];
    let mut code = String::new();
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    let mut continued = false;
    while let Some(c) = chars.next() {
        continued = false;
        let context = *stack.last().unwrap_or(&Context::Words);
        match (context, c) {
            (Context::Single, '\'') => {
                stack.pop();
            }
            (Context::Single, _) => {}
            (_, '\\') => {
                code.push(c);
                match chars.next() {
                    Some(next) => {
                        continued = next == '\n';
                        code.push(next);
                        previous = next;
                    }
                    None => continued = true,
                }
                continue;
            }
            (Context::Double, '"') => {
                stack.pop();
            }
            (_, '$') if chars.peek() == Some(&'(') => {
                code.push(c);
                code.push(chars.next().unwrap_or('('));
                stack.push(Context::Words);
                previous = '(';
                continue;
            }
            (Context::Double, _) => {}
            (Context::Words, '#') if previous.is_whitespace() || previous == '(' || previous == ';' => {
                while chars.peek().is_some_and(|&n| n != '\n') {
                    chars.next();
                }
                continue;
            }
            (Context::Words, '\'') => stack.push(Context::Single),
            (Context::Words, '"') => stack.push(Context::Double),
            (Context::Words, '(') => stack.push(Context::Words),
            (Context::Words, ')') if stack.len() > 1 => {
                stack.pop();
            }
            (Context::Words, _) => {}
        }
        code.push(c);
        previous = c;
    }
    Scan {
        complete: stack.len() == 1 && !continued,
        code: code.lines().map(str::trim_end).collect::<Vec<_>>().join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(markdown: &str) -> Vec<String> {
        commands_in("x.md", markdown).into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn comments_are_dropped_but_hashes_in_words_and_quotes_kept() {
        assert_eq!(scan("kubectl get tb  # all bots").code.trim(), "kubectl get tb");
        assert_eq!(scan("# a comment").code.trim(), "");
        assert_eq!(scan("echo a#b").code, "echo a#b");
        assert_eq!(scan("echo '# not a comment'").code, "echo '# not a comment'");
        assert_eq!(scan(r#"echo "x # y""#).code, r#"echo "x # y""#);
    }

    #[test]
    fn open_quotes_substitutions_and_continuations_are_incomplete() {
        assert!(!scan("echo 'a").complete);
        assert!(!scan("echo \"$(").complete);
        assert!(!scan("echo a \\").complete);
        assert!(scan("echo \"$(date)\"").complete);
        assert!(scan("echo 'it''s'").complete);
        assert!(scan(r#"kubectl get tb -o jsonpath='{.status.mode}{"\n"}'"#).complete);
    }

    #[test]
    fn a_multi_line_command_is_one_command() {
        let markdown = "```sh\nkubectl -n argocd patch configmap argocd-cm --type merge -p \"$(\n  python3 -c 'print(1)' \\\n    docs/x.lua)\"\nkubectl get tb\n```\n";
        assert_eq!(
            texts(markdown),
            vec![
                "kubectl -n argocd patch configmap argocd-cm --type merge -p \"$(\npython3 -c 'print(1)' \\\ndocs/x.lua)\""
                    .to_string(),
                "kubectl get tb".to_string()
            ]
        );
    }

    #[test]
    fn inline_commands_and_make_targets_in_other_blocks_are_found() {
        let markdown = "Run `kubectl get tb -A`, `make lint` or `tests/x/test.sh -k a`; `perps-bot` alone is a name, `tests/x/` a path.\n\n```\nmake demo    # the demo\n==> output\n```\n\n```yaml\nkind: X\n```\n";
        assert_eq!(
            texts(markdown),
            vec!["kubectl get tb -A", "make lint", "tests/x/test.sh -k a", "make demo"]
        );
    }

    #[test]
    #[should_panic(expected = "does not end before its block does")]
    fn an_unterminated_command_is_an_error() {
        texts("```sh\necho 'a\n```\n");
    }

    #[test]
    fn keys_ignore_layout() {
        assert_eq!(key("a  b\n   c"), "a b c");
    }
}
