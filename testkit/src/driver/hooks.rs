//! [`FailAt`]: the stage's test seam, failing or crashing at one point.

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
