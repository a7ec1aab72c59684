//! The retry policy of registry calls: failures that may be transient
//! ([`RegistryError::is_retryable`]: connection errors, 5xx, 429, corrupted
//! transfers) are tried again with exponential backoff; anything else is
//! returned at once. Pushes and pulls wrap each registry call (one blob
//! upload, one download, one manifest put) in [`retry`], so a retried call
//! restarts that unit of work, never the whole image.
//!
//! `STROMATEKT_REGISTRY_RETRIES` overrides the number of attempts (default
//! 5, at least 1); the first wait is 200 ms, doubling up to 5 s.

use super::RegistryError;
use std::time::Duration;

/// Attempts in all, unless `STROMATEKT_REGISTRY_RETRIES` says otherwise.
pub const DEFAULT_ATTEMPTS: u32 = 5;

/// The policy: how many attempts and how long to wait between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (>= 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub first_delay: Duration,
    /// Upper bound of a wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: DEFAULT_ATTEMPTS, first_delay: Duration::from_millis(200), max_delay: Duration::from_secs(5) }
    }
}

impl RetryPolicy {
    /// The default policy with `STROMATEKT_REGISTRY_RETRIES` applied.
    pub fn from_env() -> RetryPolicy {
        let mut p = RetryPolicy::default();
        if let Some(n) = std::env::var("STROMATEKT_REGISTRY_RETRIES").ok().and_then(|v| v.trim().parse::<u32>().ok()) {
            p.attempts = n.max(1);
        }
        p
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Run `f` under this policy. The last error is returned, its message
    /// extended with the number of attempts when there were several.
    pub fn run<T>(&self, mut f: impl FnMut() -> Result<T, RegistryError>) -> Result<T, RegistryError> {
        let mut attempt = 1;
        loop {
            match f() {
                Err(e) if e.is_retryable() && attempt < self.attempts => {
                    tracing_note(&e, attempt, self.attempts);
                    std::thread::sleep(self.delay(attempt));
                    attempt += 1;
                }
                Err(e) if e.is_retryable() && attempt > 1 => return Err(with_attempts(e, attempt)),
                other => return other,
            }
        }
    }
}

/// Run `f` under [`RetryPolicy::from_env`].
pub fn retry<T>(f: impl FnMut() -> Result<T, RegistryError>) -> Result<T, RegistryError> {
    RetryPolicy::from_env().run(f)
}

fn tracing_note(e: &RegistryError, attempt: u32, attempts: u32) {
    // No logging crate in the dependency set; keep quiet unless asked.
    if std::env::var_os("STROMATEKT_DEBUG").is_some() {
        eprintln!("stromatekt: registry: attempt {attempt}/{attempts} failed, retrying: {e}");
    }
}

fn with_attempts(e: RegistryError, attempts: u32) -> RegistryError {
    match e {
        RegistryError::Unavailable { reference, message } => {
            RegistryError::Unavailable { reference, message: format!("{message} (gave up after {attempts} attempts)") }
        }
        RegistryError::Transport { reference, message } => {
            RegistryError::Transport { reference, message: format!("{message} (gave up after {attempts} attempts)") }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy { attempts, first_delay: Duration::from_millis(1), max_delay: Duration::from_millis(4) }
    }

    fn unavailable() -> RegistryError {
        RegistryError::Unavailable { reference: "r".into(), message: "503".into() }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(200));
        assert_eq!(p.delay(2), Duration::from_millis(400));
        assert_eq!(p.delay(3), Duration::from_millis(800));
        assert_eq!(p.delay(10), Duration::from_secs(5));
        assert_eq!(p.delay(100), Duration::from_secs(5));
    }

    #[test]
    fn retries_transient_failures_only() {
        let mut calls = 0;
        let r = fast(5).run(|| {
            calls += 1;
            if calls < 3 {
                Err(unavailable())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.ok(), Some(3));
        let mut calls = 0;
        let r: Result<(), _> = fast(5).run(|| {
            calls += 1;
            Err(RegistryError::NotFound { what: "blob".into(), reference: "r".into() })
        });
        assert!(matches!(r, Err(RegistryError::NotFound { .. })));
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r: Result<(), _> = fast(3).run(|| {
            calls += 1;
            Err(unavailable())
        });
        assert_eq!(calls, 3);
        let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("gave up after 3 attempts"), "{msg}");
    }
}
