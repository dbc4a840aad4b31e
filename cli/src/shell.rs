//! `party shell`: one handle kept open, commands read line by line in the one-shot syntax.
//! With `--json` every command prints exactly one JSON object on one line; otherwise
//! results print as text, with a prompt and history when stdin is a terminal.

use std::io::{BufRead, IsTerminal, Write};

use clap::Parser;
use party_core::Db;

use crate::command::{self, Failure, Op, Outcome};
use crate::encoding::Encoding;

/// One shell line: an operation in the one-shot syntax.
#[derive(Debug, Parser)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct Line {
    #[command(subcommand)]
    op: Op,
}

pub async fn run(db: &Db, encoding: Encoding, json: bool) -> Result<(), Failure> {
    let interactive = std::io::stdin().is_terminal() && !json;
    let mut editor = if interactive {
        rustyline::DefaultEditor::new().ok()
    } else {
        None
    };
    let mut stdin = std::io::stdin().lock();
    loop {
        let line = match &mut editor {
            Some(editor) => match editor.readline("party> ") {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    line
                }
                Err(_) => return Ok(()),
            },
            None => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => line,
                }
            }
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        if matches!(words.as_slice(), ["exit"] | ["quit"]) {
            return Ok(());
        }
        let outcome = match Line::try_parse_from(&words) {
            Ok(Line { op: Op::Batch }) => {
                Err(Failure::usage("batch is not available in the shell"))
            }
            Ok(parsed) => command::run(db, encoding, &parsed.op, &mut std::io::empty()).await,
            Err(error) => Err(Failure::usage(
                error
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("bad command")
                    .to_owned(),
            )),
        };
        let mut out = std::io::stdout().lock();
        if json {
            let _ = writeln!(out, "{}", command::json(&outcome, encoding));
        } else {
            match &outcome {
                Ok(Outcome::Value(None)) => {
                    let _ = writeln!(out, "(not found)");
                }
                Ok(Outcome::Done) => {
                    let _ = writeln!(out, "ok");
                }
                Ok(outcome) => {
                    for line in command::text(outcome, encoding) {
                        let _ = writeln!(out, "{line}");
                    }
                }
                Err(failure) => {
                    let _ = writeln!(out, "error ({}): {}", failure.kind, failure.message);
                }
            }
        }
        let _ = out.flush();
    }
}
