//! A local load test: the load generator on this machine against every replica of the target.
//! (Waiting for loadgen::run_blocking to land on main.)

use super::{Applied, Context, Inputs, ProviderError};
use crate::stack::types::LoadtestConfig;

pub fn run(
    _ctx: &Context,
    _l: &LoadtestConfig,
    _inputs: &Inputs,
) -> Result<Applied, ProviderError> {
    Err(ProviderError::Failed(
        "load generator not merged yet".into(),
    ))
}
