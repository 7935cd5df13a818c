//! The live and stored views of work: a task's output (`monitor`, `logs`,
//! `task --follow`) as the master streams it, and the `--watch` redraw loop;
//! all stop on Ctrl-C.

use crate::client::Client;
use crate::exec::Failure;
use crate::views;
use cloudai_common::units::format_duration;
use cloudai_proto::v1::TaskView;
use cloudai_proto::v1::task_output::Item;
use futures::StreamExt;
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Prints a view once, or (with `--watch`) redraws it in place every
/// `interval` until Ctrl-C or a key: the cursor goes home and each line is
/// overwritten, so the screen does not flicker or fill the scrollback.
pub(crate) async fn watch_or_once<F, Fut>(
    out: &mut dyn Write,
    interrupt: &CancellationToken,
    watch: Option<Duration>,
    render: F,
) -> Result<(), Failure>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, Failure>>,
{
    let Some(interval) = watch else {
        write!(out, "{}", render().await?)?;
        return Ok(());
    };
    // On a terminal any key stops the view too (raw mode while it runs).
    let keys = crate::keys::KeyStop::start();
    let _ = write!(out, "\x1b[2J");
    let outcome = loop {
        let frame = match render().await {
            Ok(frame) => frame,
            Err(error) => break Err(error),
        };
        let mut screen = String::from("\x1b[H");
        for line in frame.lines() {
            screen.push_str(line);
            screen.push_str("\x1b[K\r\n");
        }
        screen.push_str(&format!(
            "(redraws every {}; any key or Ctrl-C stops)\x1b[K\r\n\x1b[J",
            format_duration(interval)
        ));
        let _ = out.write_all(screen.as_bytes());
        let _ = out.flush();
        tokio::select! {
            _ = interrupt.cancelled() => break Ok(()),
            _ = keys.pressed() => break Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    };
    keys.stop().await;
    outcome
}

/// Streams a task's output to `out`: the stored output of a finished task,
/// or (with `follow`) the live output until it ends, then its outcome line.
/// Returns the task as it ended (`None` when interrupted).
pub(crate) async fn output(
    client: &Client,
    task_id: &str,
    follow: bool,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Option<TaskView>, Failure> {
    let mut stream = client.output(task_id, follow).await?;
    let mut shown = String::new();
    let mut ends_in_newline = true;
    loop {
        let item = tokio::select! {
            _ = interrupt.cancelled() => {
                if !ends_in_newline {
                    writeln!(out)?;
                }
                writeln!(
                    out,
                    "[stopped following {task_id}; it keeps running: `monitor {task_id}` resumes]"
                )?;
                return Ok(None);
            }
            item = stream.next() => item,
        };
        let Some(item) = item else {
            return Err(Failure::Api(tonic::Status::unavailable(format!(
                "the output of {task_id} ended early (the master stopped?); `monitor {task_id}` resumes"
            ))));
        };
        match item?.item {
            Some(Item::Data(data)) => {
                out.write_all(&data)?;
                out.flush()?;
                if let Some(last) = data.last() {
                    ends_in_newline = *last == b'\n';
                }
            }
            Some(Item::Progress(progress)) => {
                // While its worker pulls the image, a line per change.
                let line = views::progress(&progress);
                if line != shown {
                    writeln!(out, "[{line}]")?;
                    out.flush()?;
                    shown = line;
                }
            }
            Some(Item::Note(note)) => {
                writeln!(out, "[{note}]")?;
                out.flush()?;
            }
            Some(Item::Finished(task)) => {
                if !ends_in_newline {
                    writeln!(out)?;
                }
                writeln!(out, "{}", views::outcome(&task))?;
                return Ok(Some(task));
            }
            None => {}
        }
    }
}
