//! `speechvault completions SHELL` and `speechvault completions --man DIR`: shell completion
//! scripts and man pages, generated from the same clap definitions as `--help`.

use std::path::PathBuf;

use clap_complete::Shell;
use speechvault::Error;

use crate::outcome::Outcome;

/// Print a shell completion script, or write man pages.
///
/// bash: `speechvault completions bash > /etc/bash_completion.d/speechvault`; zsh, fish,
/// elvish and powershell likewise. `--man DIR` writes speechvault.1 and one page per
/// command (speechvault-backup.1, ...) into DIR instead.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(required_unless_present = "man", conflicts_with = "man")]
    pub shell: Option<Shell>,
    /// Write the man pages into this directory (created when missing).
    #[arg(long, value_name = "DIR")]
    pub man: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<Outcome, Error> {
    let mut cmd = crate::cli();
    if let Some(dir) = args.man {
        let written = man_pages(cmd, &dir)
            .map_err(|e| Error::failed(format!("cannot write man pages into {}: {e}", dir.display())))?;
        return Ok(Outcome::Text(format!("wrote {written} man pages into {}\n", dir.display())));
    }
    let shell = args.shell.ok_or_else(|| Error::bad_input("name a shell, or --man DIR"))?;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "speechvault", &mut out);
    Ok(Outcome::Text(String::from_utf8_lossy(&out).into_owned()))
}

/// Writes `speechvault.1` and `speechvault-<command>[-<sub>].1` for every command.
pub fn man_pages(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let cmd = cmd.name("speechvault");
    let mut written = 0;
    let mut pending = vec![(String::from("speechvault"), cmd)];
    while let Some((name, cmd)) = pending.pop() {
        let cmd = cmd.name(name.clone());
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
        written += 1;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            pending.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
    }
    Ok(written)
}
