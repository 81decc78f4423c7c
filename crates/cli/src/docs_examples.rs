//! Every `speechvault ...` command in the README and docs/ (in ```sh blocks) is parsed by the
//! real command line definition, so the docs cannot drift from the flags.

use std::path::{Path, PathBuf};

/// The docs that show commands.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut pages = vec![root.join("README.md"), root.join("deploy/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("a docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The commands of a page's shell blocks: continuation lines joined, comments and
/// redirections dropped, only those that run `speechvault`.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && (lang == "sh" || lang == "bash" || lang == "shell");
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = strip_comment(trimmed);
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        let full = std::mem::take(&mut pending);
        let full = full.split(['>', '|']).next().unwrap_or_default().trim().to_string();
        if full.starts_with("speechvault ") {
            out.push(full);
        }
    }
    out
}

/// The line without a trailing `# comment` (a `#` after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return line[..i].trim_end(),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Shell words, with single and double quotes.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in command.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[test]
fn every_example_command_in_the_docs_parses() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("a docs page");
        for command in commands(&text) {
            checked += 1;
            if let Err(e) = crate::cli().try_get_matches_from(words(&command)) {
                let first = e.render().to_string().lines().next().unwrap_or_default().to_string();
                failures.push(format!("{}: `{command}`: {first}", page.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} example commands do not parse:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 40, "only {checked} example commands found: is the extraction broken?");
}

#[test]
fn the_extraction_finds_commands_and_leaves_the_rest() {
    let text = "```sh\nspeechvault backup --from prod   # nightly\nspeechvault restore latest \\\n   --to dr\npsql -c 'x'\nspeechvault completions bash > /tmp/x\n```\n```toml\nspeechvault = 1\n```\n";
    assert_eq!(
        commands(text),
        ["speechvault backup --from prod", "speechvault restore latest  --to dr", "speechvault completions bash"]
    );
    assert_eq!(words(r#"speechvault --pre-hook "echo a # b" x"#), ["speechvault", "--pre-hook", "echo a # b", "x"]);
    assert!(crate::cli().try_get_matches_from(words("speechvault backup --form prod")).is_err(), "a typo fails");
}
