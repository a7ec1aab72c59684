//! A fake [`Executor`] for tests that cannot run containers: it records every
//! request, can be primed to fail, and can run a closure to simulate the
//! command's effect on the rootfs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::{ExecError, ExecOutcome, ExecRequest, Executor, OutputSink};

/// A closure standing in for the command: it may change `req.rootfs` and returns
/// the exit code.
pub type Behaviour = std::sync::Arc<dyn Fn(&ExecRequest) -> i32 + Send + Sync>;

/// What to do when a request's joined args contain a string.
enum Primed {
    Exit(i32),
    Error(String),
}

/// Records requests instead of running them.
#[derive(Default)]
pub struct FakeExecutor {
    requests: Mutex<Vec<ExecRequest>>,
    primed: Mutex<Vec<(String, Primed)>>,
    behaviour: Mutex<Option<Behaviour>>,
    output: Mutex<Vec<u8>>,
    kills: AtomicUsize,
    recovers: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeExecutor {
    /// A fake that succeeds (exit 0) for everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` for every request (after primed matches are checked); its return value
    /// is the exit code.
    pub fn with_behaviour(self, f: impl Fn(&ExecRequest) -> i32 + Send + Sync + 'static) -> Self {
        *lock(&self.behaviour) = Some(std::sync::Arc::new(f));
        self
    }

    /// Requests whose args (joined by spaces) contain `pattern` exit with `code`.
    pub fn prime_exit(&self, pattern: &str, code: i32) {
        lock(&self.primed).push((pattern.to_string(), Primed::Exit(code)));
    }

    /// Requests whose args (joined by spaces) contain `pattern` fail with
    /// [`ExecError::Runtime`] carrying `message`.
    pub fn prime_error(&self, pattern: &str, message: &str) {
        lock(&self.primed).push((pattern.to_string(), Primed::Error(message.to_string())));
    }

    /// Bytes sent to the output sink on every run.
    pub fn set_output(&self, bytes: &[u8]) {
        *lock(&self.output) = bytes.to_vec();
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<ExecRequest> {
        lock(&self.requests).clone()
    }

    /// How many times [`Executor::kill_all`] was called.
    pub fn kill_count(&self) -> usize {
        self.kills.load(Ordering::SeqCst)
    }

    /// How many times [`Executor::recover`] was called.
    pub fn recover_count(&self) -> usize {
        self.recovers.load(Ordering::SeqCst)
    }
}

impl Executor for FakeExecutor {
    fn run(&self, req: &ExecRequest, output: OutputSink<'_>) -> Result<ExecOutcome, ExecError> {
        lock(&self.requests).push(req.clone());
        let out = lock(&self.output).clone();
        if !out.is_empty() {
            output(&out);
        }
        let joined = req.args.join(" ");
        for (pattern, primed) in lock(&self.primed).iter() {
            if joined.contains(pattern.as_str()) {
                return match primed {
                    Primed::Exit(code) => Ok(ExecOutcome { exit_code: *code }),
                    Primed::Error(message) => {
                        Err(ExecError::Runtime { step: "fake run", message: message.clone() })
                    }
                };
            }
        }
        // Called without holding the lock: concurrent runs really overlap.
        let behaviour = lock(&self.behaviour).clone();
        let exit_code = behaviour.map(|f| f(req)).unwrap_or(0);
        Ok(ExecOutcome { exit_code })
    }

    fn kill_all(&self) {
        self.kills.fetch_add(1, Ordering::SeqCst);
    }

    fn recover(&self) -> Result<(), ExecError> {
        self.recovers.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::PathBuf;

    fn req(args: &[&str], rootfs: PathBuf) -> ExecRequest {
        ExecRequest {
            id: "x".into(),
            rootfs,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: "h".into(),
            network: Default::default(),
            mounts: vec![],
            tmpfs: vec![],
            insecure: false,
        }
    }

    #[test]
    fn records_primes_and_behaves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeExecutor::new().with_behaviour(|r| {
            std::fs::write(r.rootfs.join("marker"), r.args.join(" ")).map(|_| 0).unwrap_or(1)
        });
        fake.prime_exit("false", 1);
        fake.prime_error("boom", "kaboom");
        fake.set_output(b"out");
        let mut seen = Vec::new();
        let mut sink = |b: &[u8]| seen.extend_from_slice(b);
        let ok = fake.run(&req(&["echo", "hi"], dir.path().into()), &mut sink).expect("run");
        assert_eq!(ok.exit_code, 0);
        assert_eq!(fake.run(&req(&["false"], dir.path().into()), &mut sink).expect("run").exit_code, 1);
        assert!(fake.run(&req(&["boom"], dir.path().into()), &mut sink).is_err());
        assert_eq!(fake.requests().len(), 3);
        assert_eq!(std::fs::read_to_string(dir.path().join("marker")).expect("marker"), "echo hi");
        fake.kill_all();
        fake.recover().expect("recover");
        assert_eq!((fake.kill_count(), fake.recover_count()), (1, 1));
        assert_eq!(seen, b"outoutout");
    }
}
