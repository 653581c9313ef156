//! The CronJob controller's parts: the schedule grammar (`schedule`).

pub mod schedule;
