//! Wall-clock text for CPIM `DateTime` and IMDN `datetime` (from `cpm-content`). The core
//! never reads a clock: the driver gives `unix_ms` at construction and the core adds the `now`
//! offsets to it.

pub use cpm_content::time::{rfc3339_ms, rfc3339_secs};
