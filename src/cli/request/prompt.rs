//! Line-based prompts for `keyward request`: the question on stderr, the answer from stdin,
//! re-asked until it passes its check. Must not prompt without a terminal (the caller
//! decides) nor echo anything but the requester's own answers.

use anyhow::{Result, bail};
use std::io::{BufRead, Write};

/// Split repeatable flag values and typed answers on commas and whitespace.
pub fn words<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items
        .iter()
        .flat_map(|s| {
            s.as_ref()
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Line-based questions: the question on stderr, the answer from stdin; re-asked until
/// it passes its check (at most `MAX_TRIES` times).
pub struct Prompter<R: BufRead> {
    pub input: R,
}

const MAX_TRIES: usize = 10;

impl<R: BufRead> Prompter<R> {
    pub fn say(&self, text: &str) {
        eprintln!("{text}");
    }

    pub fn ask<T>(
        &mut self,
        question: &str,
        default: Option<&str>,
        mut check: impl FnMut(&str) -> Result<T, String>,
    ) -> Result<T> {
        for _ in 0..MAX_TRIES {
            match default {
                Some(d) if !d.is_empty() => eprint!("{question} [{d}]: "),
                _ => eprint!("{question}: "),
            }
            std::io::stderr().flush().ok();
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                eprintln!();
                bail!("the input ended before the request was complete; nothing was written");
            }
            let mut answer = line.trim().to_string();
            if answer.is_empty()
                && let Some(d) = default
            {
                answer = d.to_string();
            }
            match check(&answer) {
                Ok(v) => return Ok(v),
                Err(why) => {
                    for l in why.lines() {
                        eprintln!("  ✗ {l}");
                    }
                }
            }
        }
        bail!("no acceptable answer after {MAX_TRIES} tries; nothing was written")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_commas_and_spaces() {
        assert_eq!(
            words(&["bibs:read, users:write", "courses"]),
            ["bibs:read", "users:write", "courses"]
        );
    }

    #[test]
    fn prompts_reask_until_the_check_passes_and_stop_at_end_of_input() {
        let mut p = Prompter {
            input: std::io::Cursor::new(b"Bad Name\nok-name\n".to_vec()),
        };
        let got = p
            .ask("name", None, |a| {
                if keyward::spec::keys::valid_key_name(a) {
                    Ok(a.to_string())
                } else {
                    Err("bad".to_string())
                }
            })
            .expect("second answer passes");
        assert_eq!(got, "ok-name");
        let mut p = Prompter {
            input: std::io::Cursor::new(b"\n".to_vec()),
        };
        assert_eq!(
            p.ask("x", Some("dflt"), |a| Ok::<_, String>(a.to_string()))
                .expect("default"),
            "dflt"
        );
        let err = p
            .ask("x", None, |a| Ok::<_, String>(a.to_string()))
            .expect_err("input ended");
        assert!(err.to_string().contains("nothing was written"));
    }
}
