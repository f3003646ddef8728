//! Optimisation: SGD with momentum (PyTorch's `torch.optim.SGD`) and
//! learning-rate schedules with warm-up.

mod schedule;
mod sgd;

pub use schedule::{Schedule, ScheduleKind};
pub use sgd::{Sgd, SgdConfig};
