//! The `fixture` example (a node with a control port) as a child process of a task.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Fixture {
    child: Child,
    /// The WebSocket URL, `ws://127.0.0.1:PORT/ws`.
    pub ws: String,
    /// The control URL, `http://127.0.0.1:PORT`.
    pub control: String,
}

impl Fixture {
    /// Starts the built example on free ports and waits for its `FIXTURE` line.
    pub fn start() -> Result<Fixture, String> {
        let binary = crate::root().join("target/debug/examples/fixture");
        let mut child = Command::new(&binary)
            .args(["0", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("fixture has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("fixture: {e}"))?;
        let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_owned);
        match (field("ws="), field("control=")) {
            (Some(ws), Some(control)) => Ok(Fixture { child, ws, control }),
            _ => {
                let _ = child.kill();
                Err(format!("fixture did not start: {line:?}"))
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
