//! `party shell`: one handle kept open, commands read line by line in the one-shot syntax,
//! quoted as in a POSIX shell. Every line gets an answer: a bad one an error, and the
//! shell goes on. With `--json` every line gets exactly one JSON object on one line;
//! otherwise results print as text, and on a terminal with a prompt, completion, Ctrl-C
//! to drop the line, and a history kept across sessions.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use party_core::Db;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;

use crate::command::{self, Op, Outcome};
use crate::encoding::Encoding;
use crate::failure::Failure;
use crate::out;

/// Commands, one a line, as after `party DIR`; words quoted as in a shell.
#[derive(Debug, Parser)]
#[command(
    no_binary_name = true,
    disable_help_subcommand = true,
    name = "",
    after_help = "Also: help, exit (or quit, or Ctrl-D). Quote words with spaces: put \"a b\" \"c d\"."
)]
struct Line {
    #[command(subcommand)]
    op: Op,
}

/// What the shell does with one line.
enum Step {
    Skip,
    Exit,
    /// Help to print: the shell's, or a command's (`put --help`), as in the one-shot form.
    Help(String),
    Run(Op),
}

fn step(line: &[u8]) -> Result<Step, Failure> {
    let words = command::split_words(line)?;
    let Some(first) = words.first() else {
        return Ok(Step::Skip);
    };
    // A first word that is not UTF-8 names no command; it gets its answer all the same.
    let first = first
        .to_str()
        .ok_or_else(|| Failure::usage(format!("no command {}", first.to_string_lossy())))?;
    Ok(match first {
        "exit" | "quit" if words.len() == 1 => Step::Exit,
        "help" if words.len() == 1 => Step::Help(help_text()),
        "dump" | "load" | "watch" => {
            return Err(Failure::usage(format!(
                "{first} is a one-shot command: run `party DIR {first}` outside the shell"
            )))
        }
        _ => match Line::try_parse_from(&words) {
            Ok(Line {
                op: Op::Batch { writes },
            }) if writes.is_empty() => {
                return Err(Failure::usage(
                    "give the writes on the line: batch put KEY VALUE del KEY ...",
                ))
            }
            Ok(Line { op }) => Step::Run(op),
            Err(error) if error.kind() == clap::error::ErrorKind::DisplayHelp => {
                Step::Help(error.render().to_string())
            }
            Err(error) => return Err(Failure::usage(usage_message(&error.to_string()))),
        },
    })
}

/// clap's message on one line: what comes before its usage, without its `error: ` (a
/// missing argument's name is on the line after the first).
pub(crate) fn usage_message(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    match lines.join(" ").trim_start_matches("error: ") {
        "" => "bad command".to_owned(),
        message => message.to_owned(),
    }
}

fn help_text() -> String {
    Line::command().render_long_help().to_string()
}

pub async fn run(db: &Db, encoding: Encoding, json: bool) -> Result<(), Failure> {
    let mut lines = Lines::start(json);
    while let Some(line) = lines.next().await? {
        let outcome = match step(&line) {
            Ok(Step::Skip) => continue,
            Ok(Step::Exit) => break,
            Ok(Step::Help(help)) if json => {
                out::line(serde_json::json!({"ok": true, "help": help}))?;
                continue;
            }
            Ok(Step::Help(help)) => {
                out::line(help.trim_end())?;
                continue;
            }
            Ok(Step::Run(op)) => command::run(db, encoding, &op, &mut std::io::empty()).await,
            Err(failure) => Err(failure),
        };
        answer(&outcome, encoding, json)?;
    }
    Ok(())
}

/// The shell's lines, read on a thread of their own: waiting for input must not keep the
/// process from handling a signal (a leader hands over on SIGTERM).
struct Lines {
    ask: std::sync::mpsc::Sender<()>,
    lines: tokio::sync::mpsc::Receiver<Result<Option<Vec<u8>>, Failure>>,
}

impl Lines {
    fn start(json: bool) -> Lines {
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (send, lines) = tokio::sync::mpsc::channel(1);
        std::thread::spawn(move || {
            let mut input = if std::io::stdin().is_terminal() && !json {
                Input::terminal()
            } else {
                Input::Lines(std::io::stdin().lock())
            };
            // A line is read only when asked for, so that a prompt shows only once the
            // answer to the line before it has been printed.
            while asked.recv().is_ok() {
                let line = input.next_line();
                let more = matches!(line, Ok(Some(_)));
                if send.blocking_send(line).is_err() || !more {
                    return;
                }
            }
        });
        Lines { ask, lines }
    }

    /// The next line, without its end; `None` at the end of the input.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        if self.ask.send(()).is_err() {
            return Ok(None);
        }
        self.lines.recv().await.unwrap_or(Ok(None))
    }
}

fn answer(
    outcome: &Result<Outcome, Failure>,
    encoding: Encoding,
    json: bool,
) -> Result<(), Failure> {
    if json {
        return out::line(command::json(outcome, encoding));
    }
    match outcome {
        Ok(Outcome::Value(None)) => out::line("(not found)"),
        Ok(Outcome::Done) => out::line("ok"),
        Ok(Outcome::Conflict(None)) => out::line("(not swapped: absent)"),
        Ok(Outcome::Conflict(Some(value))) => {
            let mut text = b"(not swapped) ".to_vec();
            text.extend(command::text(
                &Outcome::Value(Some(value.clone())),
                encoding,
            ));
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&text)
                .and_then(|()| stdout.flush())
                .map_err(out::written)
        }
        Ok(outcome) => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&command::text(outcome, encoding))
                .and_then(|()| stdout.flush())
                .map_err(out::written)
        }
        Err(failure) => out::line(format_args!(
            "error ({}): {}",
            failure.kind, failure.message
        )),
    }
}

/// Where the shell's lines come from.
enum Input {
    /// A person at a terminal.
    Terminal {
        editor: Box<rustyline::Editor<Commands, FileHistory>>,
        history: Option<PathBuf>,
    },
    /// A script or a program: lines as bytes, whatever they hold.
    Lines(std::io::StdinLock<'static>),
}

impl Input {
    fn terminal() -> Input {
        let Ok(mut editor) = rustyline::Editor::<Commands, FileHistory>::new() else {
            return Input::Lines(std::io::stdin().lock());
        };
        editor.set_helper(Some(Commands));
        let history = history_file();
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        Input::Terminal {
            editor: Box::new(editor),
            history,
        }
    }

    /// The next line, without its end; `None` at the end of the input.
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        match self {
            Input::Terminal { editor, history } => loop {
                match editor.readline("party> ") {
                    Ok(line) => {
                        let _ = editor.add_history_entry(line.as_str());
                        save_history(editor, history.as_deref());
                        return Ok(Some(line.into_bytes()));
                    }
                    // Ctrl-C drops the line being typed, as in a shell.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(error) => return Err(format!("cannot read the terminal: {error}").into()),
                }
            },
            Input::Lines(stdin) => {
                let mut line = Vec::new();
                match stdin.read_until(b'\n', &mut line) {
                    Ok(0) => Ok(None),
                    Ok(_) => {
                        if line.ends_with(b"\n") {
                            line.pop();
                        }
                        if line.ends_with(b"\r") {
                            line.pop();
                        }
                        Ok(Some(line))
                    }
                    Err(error) => Err(format!("cannot read stdin: {error}").into()),
                }
            }
        }
    }
}

/// Keeps the history after every line, so that no way of ending the shell loses it.
fn save_history(editor: &mut rustyline::Editor<Commands, FileHistory>, path: Option<&Path>) {
    let Some(path) = path else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(error) = editor.save_history(path) {
        out::note(format_args!(
            "party shell: cannot save the history in {}: {error}",
            path.display()
        ));
    }
}

/// `$PARTY_HISTORY`, else `$XDG_STATE_HOME/party/history`, else
/// `~/.local/state/party/history`.
fn history_file() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|value: &OsString| !value.is_empty());
    if let Some(file) = var("PARTY_HISTORY") {
        return Some(file.into());
    }
    let state = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".local/state")))?;
    Some(state.join("party").join("history"))
}

/// Completes the first word of a line with the shell's command names.
struct Commands;

impl Completer for Commands {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let typed = &line[..pos];
        if typed.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let names = Line::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .chain(["help", "exit"].map(String::from))
            .filter(|name| name.starts_with(typed))
            .map(|name| Pair {
                display: name.clone(),
                replacement: name,
            })
            .collect();
        Ok((0, names))
    }
}

impl rustyline::hint::Hinter for Commands {
    type Hint = String;
}
impl rustyline::highlight::Highlighter for Commands {}
impl rustyline::validate::Validator for Commands {}
impl rustyline::Helper for Commands {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_like_a_shell_and_bad_ones_are_answered() {
        let Ok(Step::Run(Op::Put { key, value })) = step(br#"put "a b" 'c d'"#) else {
            panic!("a quoted put is one put");
        };
        assert_eq!((key.to_str(), value.to_str()), (Some("a b"), Some("c d")));
        assert!(matches!(step(b"   "), Ok(Step::Skip)));
        assert!(matches!(step(b"help"), Ok(Step::Help(help)) if help.contains("Commands:")));
        // As in the one-shot form: a command's help, not a key named `--help`.
        assert!(matches!(step(b"del --help"), Ok(Step::Help(help)) if help.contains("del <KEY>")));
        let Ok(Step::Run(Op::Del { key })) = step(b"del -- --help") else {
            panic!("after --, --help is a key");
        };
        assert_eq!(key.to_str(), Some("--help"));
        assert!(matches!(step(b"quit"), Ok(Step::Exit)));
        assert!(matches!(
            step(b"batch put a 1 del b"),
            Ok(Step::Run(Op::Batch { .. }))
        ));
        for bad in [&b"put \"a"[..], b"frobnicate", b"batch", b"get"] {
            assert_eq!(
                step(bad).err().map(|f| f.kind),
                Some(crate::failure::Kind::Usage),
                "{bad:?}"
            );
        }
        assert!(help_text().contains("scan"));
        for one_shot in ["dump", "load", "watch --from 3"] {
            let refused = step(one_shot.as_bytes()).err().unwrap();
            assert_eq!(refused.kind, crate::failure::Kind::Usage);
            assert!(refused.message.contains("one-shot"), "{}", refused.message);
        }
    }
}
