//! The one quantity parser lives in `berth-names` (the apiserver shares it); re-exported here.

pub use berth_names::quantity::{Quantity, QuantityError};
