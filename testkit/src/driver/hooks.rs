//! [`FailAt`]: the stage's test seam, failing or crashing at one point; [`Gate`]: holding the
//! stage at one point until the test lets it go (a hung device, a slow KMS).

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use csi::Result;
use csi::driver::{StageHooks, StagePoint};

/// What happens at the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The step fails with INTERNAL: the stage rolls back what it set up.
    Error,
    /// The process "dies": a panic unwinds through the stage, nothing is rolled back, and the
    /// fakes keep what the kernel would keep (attachment, mapping, files).
    Crash,
}

/// Fails (or crashes) when the stage reaches `point`.
#[derive(Debug, Clone, Copy)]
pub struct FailAt {
    /// Where.
    pub point: StagePoint,
    /// How.
    pub how: Failure,
}

impl StageHooks for FailAt {
    fn at(&self, point: StagePoint) -> Result<()> {
        if point != self.point {
            return Ok(());
        }
        match self.how {
            Failure::Error => Err(csi::Error::internal(format!(
                "injected failure at {}",
                point.as_str()
            ))),
            Failure::Crash => panic!("injected crash at {}", point.as_str()),
        }
    }
}

/// Holds the first stage that reaches `point` until [`Gate::open`] (its thread waits, as one on
/// a hung device would); later stages pass.
#[derive(Debug)]
pub struct Gate {
    point: StagePoint,
    /// (reached, open)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Gate {
    /// A closed gate at `point`.
    pub fn at(point: StagePoint) -> Self {
        Gate {
            point,
            state: Mutex::new((false, false)),
            cv: Condvar::new(),
        }
    }

    /// Blocks until a stage waits at the gate (panics after a minute).
    pub fn wait_reached(&self) {
        let g = self.state.lock().unwrap();
        let (g, t) = self
            .cv
            .wait_timeout_while(g, Duration::from_secs(60), |s| !s.0)
            .unwrap();
        assert!(
            !t.timed_out() || g.0,
            "no stage reached {}",
            self.point.as_str()
        );
    }

    /// Lets the held stage go.
    pub fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

impl StageHooks for Gate {
    fn at(&self, point: StagePoint) -> Result<()> {
        if point != self.point {
            return Ok(());
        }
        let mut g = self.state.lock().unwrap();
        if g.0 {
            return Ok(());
        }
        g.0 = true;
        self.cv.notify_all();
        while !g.1 {
            g = self.cv.wait(g).unwrap();
        }
        Ok(())
    }
}
