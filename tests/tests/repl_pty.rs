//! The REPL in a real pseudo-terminal: tab completion, hints, persistent
//! history, a live `--watch` view stopped with Ctrl-C (the master keeps
//! running), and Ctrl-D exiting cleanly.

use rexpect::reader::Options;
use rexpect::session::{PtySession, spawn_with_options};
use std::path::Path;
use std::process::Command;

fn master_in_pty(data_dir: &Path) -> PtySession {
    let mut command = Command::new(cloudai_e2e::bin_dir().join("cloudai-master"));
    command
        .args([
            "--insecure",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "500ms",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("TERM", "xterm");
    // Raw output: rustyline's redraws use private-mode escapes, so checks below
    // look for what only the completed or recalled command can print.
    let options = Options::new()
        .timeout_ms(Some(20_000))
        .strip_ansi_escape_codes(false);
    let mut session = spawn_with_options(command, options).expect("start the master in a pty");
    session.exp_string("cloudai> ").expect("the prompt");
    session
}

#[test]
fn completion_history_live_view_and_ctrl_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("master");
    let mut repl = master_in_pty(&data);

    // A hint finishes the command name as it is typed; Tab completes it: only
    // the completed `unregister` can answer "no worker" (`unreg` is unknown).
    repl.send("unreg").unwrap();
    repl.flush().unwrap();
    repl.exp_string("unreg").unwrap();
    repl.exp_string("ister").expect("the hint");
    repl.send("\t").unwrap();
    repl.flush().unwrap();
    repl.send(" w1\r").unwrap();
    repl.flush().unwrap();
    repl.exp_string("error: no worker 'w1'")
        .expect("completed to `unregister`");
    repl.exp_string("cloudai> ").unwrap();
    repl.send("hel\t\r").unwrap();
    repl.flush().unwrap();
    repl.exp_string("commands:")
        .expect("help ran after completion");
    repl.exp_string("cloudai> ").unwrap();

    // History: Up recalls the last command.
    repl.send_line("status").unwrap();
    repl.exp_string("workers: 0 active").unwrap();
    repl.exp_string("cloudai> ").unwrap();
    repl.send("\x1b[A").unwrap();
    repl.flush().unwrap();
    repl.send("\r").unwrap();
    repl.flush().unwrap();
    repl.exp_string("workers: 0 active")
        .expect("status recalled from history");
    repl.exp_string("cloudai> ").unwrap();

    // A live view redraws until Ctrl-C, which returns to the prompt.
    repl.send_line("status --watch").unwrap();
    repl.exp_string("Ctrl-C stops").expect("the live view");
    repl.exp_string("Ctrl-C stops").expect("a redraw");
    repl.send_control('c').unwrap();
    repl.flush().unwrap();
    repl.exp_string("cloudai> ")
        .expect("back at the prompt after Ctrl-C");
    repl.send_line("workers").unwrap();
    repl.exp_string("no workers registered")
        .expect("the master still runs");
    repl.exp_string("cloudai> ").unwrap();

    // Any key stops a live view too.
    repl.send_line("stats --watch").unwrap();
    repl.flush().unwrap();
    repl.exp_string("any key or Ctrl-C stops")
        .expect("the stats view");
    repl.send("q").unwrap();
    repl.flush().unwrap();
    repl.exp_string("cloudai> ")
        .expect("back at the prompt after a key");
    repl.send_line("workers").unwrap();
    repl.exp_string("no workers registered")
        .expect("the line editor works after raw mode");
    repl.exp_string("cloudai> ").unwrap();

    // Ctrl-C at the prompt only clears the line; Ctrl-D exits cleanly.
    repl.send("garbage").unwrap();
    repl.flush().unwrap();
    repl.send_control('c').unwrap();
    repl.flush().unwrap();
    repl.exp_string("cloudai> ").unwrap();
    repl.send_control('d').unwrap();
    repl.flush().unwrap();
    repl.exp_eof().expect("the master exits on Ctrl-D");
    let status = repl.process().wait().expect("exit status");
    assert!(
        format!("{status:?}").starts_with("Exited(") && format!("{status:?}").ends_with(", 0)"),
        "{status:?}"
    );

    // The history survived the restart.
    let history = std::fs::read_to_string(data.join("repl_history")).expect("history file");
    assert!(history.contains("status --watch"), "{history}");
    let mut again = master_in_pty(&data);
    again.send("\x1b[A").unwrap();
    again.flush().unwrap();
    again
        .exp_string("workers")
        .expect("the last command of the previous session");
    again.send_control('c').unwrap();
    again.flush().unwrap();
    again
        .exp_string("cloudai> ")
        .expect("a fresh prompt after Ctrl-C");
    again.send_line("exit").unwrap();
    again.exp_eof().unwrap();
}
