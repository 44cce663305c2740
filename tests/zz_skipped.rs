//! The end-of-run summary of what `cargo test` skipped for a missing outside tool. Not a
//! libtest harness (`harness = false` in Cargo.toml), so what it prints is never captured;
//! cargo runs test targets in name order, so this one (`zz_`) runs after every other one.
//! It reads the lines `tests/needs` recorded during this run (the same parent cargo
//! process) and removes them; it never fails.

mod needs;

fn main() {
    // `cargo test -- --list` lists tests; this target has none.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let path = needs::log_path();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let run = needs::run_id();
    let mut mine = Vec::new();
    let mut others = String::new();
    for line in text.lines() {
        match line.split_once('\t') {
            Some((r, skip)) if r == run => mine.push(skip.to_string()),
            Some((r, _)) if still_running(r) => {
                others.push_str(line);
                others.push('\n');
            }
            _ => {}
        }
    }
    if mine.is_empty() {
        println!("keyward tests: nothing skipped for a missing outside tool.");
    } else {
        mine.sort();
        mine.dedup();
        println!(
            "keyward tests: {} skipped (or partly skipped) for a missing outside tool; \
             CI=true fails them instead (.ci/run installs every tool):",
            mine.len()
        );
        for skip in &mine {
            println!("  {skip}");
        }
    }
    // Keep only the lines of other runs still going (another `cargo test` in this target
    // directory); a run whose cargo has exited is over.
    let _ = std::fs::write(&path, others);
}

/// Is the run `pid:start` still going? (Linux: its cargo process exists with that start
/// time; elsewhere its lines are kept until a run with the same id reads them.)
fn still_running(run: &str) -> bool {
    let Some((pid, start)) = run.split_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if !std::path::Path::new("/proc/self/stat").exists() {
        return true;
    }
    needs::start_time(pid).as_deref() == Some(start)
}
