//! Cancelling a build (Ctrl-C, SIGTERM): a flag that steps check before
//! they start, and a wake-up socket pair, so that the thread that kills
//! running containers sleeps until a cancel or the end of the build
//! instead of polling the flag. A signal handler may only write a byte
//! (`signal_hook::low_level::pipe`), which is what wakes it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A build's cancel flag and its wake-up channel.
pub(crate) struct Cancel {
    flag: Arc<AtomicBool>,
    /// (write end, read end); None when no socket pair could be made (out of
    /// file descriptors): [`Cancel::wait`] then sleeps briefly instead.
    wake: Option<(UnixStream, UnixStream)>,
}

impl Cancel {
    pub(crate) fn new() -> Cancel {
        let wake = UnixStream::pair().ok().filter(|(tx, _)| tx.set_nonblocking(true).is_ok());
        Cancel { flag: Arc::new(AtomicBool::new(false)), wake }
    }

    /// The flag itself (setting it stops new steps; [`Cancel::cancel`] also
    /// wakes the watcher).
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Cancel: set the flag and wake the watcher.
    pub(crate) fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Wake the watcher (a cancel, or the end of the build). A full buffer
    /// already holds a wake-up, so a failed write is fine.
    pub(crate) fn wake(&self) {
        if let Some((tx, _)) = &self.wake {
            let _ = (&*tx).write(&[1]);
        }
    }

    /// Block until [`Cancel::wake`] or a registered signal.
    pub(crate) fn wait(&self) {
        match &self.wake {
            Some((_, rx)) => {
                let mut b = [0u8; 64];
                let _ = (&*rx).read(&mut b);
            }
            None => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }

    /// Cancel on each of `signals`: the handler sets the flag and writes
    /// the wake-up byte.
    pub(crate) fn on_signals(&self, signals: &[std::ffi::c_int]) -> std::io::Result<()> {
        for &sig in signals {
            signal_hook::flag::register(sig, self.flag.clone())?;
            if let Some((tx, _)) = &self.wake {
                signal_hook::low_level::pipe::register(sig, tx.try_clone()?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_wakes_a_waiting_thread() {
        let c = Cancel::new();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                c.wait();
                c.is_set()
            });
            c.cancel();
            assert!(waiter.join().unwrap_or(false), "woke without the flag set");
        });
    }
}
