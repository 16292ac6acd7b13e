//! What the backends share: running a batch (validation, then one transaction over the valid
//! operations) and turning answers into outcomes, with receipts only after the commit.

use crate::StoreOp;
use crate::ops::{BindingRecord, DeliveryState, MessageRecord, OpError, OpId, Outcome, Receipt};

/// An operation's answer before its transaction committed: an [`Outcome`] without the
/// receipt, which [`run`] adds once the backend reported the commit.
#[derive(Debug)]
pub(crate) enum Answer {
    /// See [`Outcome::Appended`].
    Appended {
        duplicate: bool,
        state: DeliveryState,
    },
    /// See [`Outcome::Updated`].
    Updated { changed: u32 },
    /// See [`Outcome::Expired`].
    Expired(Vec<MessageRecord>),
    /// See [`Outcome::Messages`].
    Messages(Vec<MessageRecord>),
    /// See [`Outcome::Bindings`].
    Bindings(Vec<BindingRecord>),
    /// See [`Outcome::Done`].
    Done,
    /// The operation was refused inside the transaction without writing anything (a deferred
    /// queue's quota); the rest of the batch committed.
    Refused(OpError),
}

impl Answer {
    /// The outcome of operation `op`, whose transaction has committed.
    fn committed(self, op: OpId) -> Result<Outcome, OpError> {
        Ok(match self {
            Self::Appended { duplicate, state } => Outcome::Appended {
                receipt: Receipt::committed(op),
                duplicate,
                state,
            },
            Self::Updated { changed } => Outcome::Updated {
                receipt: Receipt::committed(op),
                changed,
            },
            Self::Expired(records) => Outcome::Expired {
                receipt: Receipt::committed(op),
                records,
            },
            Self::Messages(records) => Outcome::Messages(records),
            Self::Bindings(bindings) => Outcome::Bindings(bindings),
            Self::Done => Outcome::Done {
                receipt: Receipt::committed(op),
            },
            Self::Refused(e) => return Err(e),
        })
    }
}

/// Runs a batch the way every backend does. Each operation is validated first
/// ([`StoreOp::validate`]); an invalid one is answered with its error and takes no part.
/// `transaction` gets the valid ones, in order, and must apply all of them and commit, or
/// apply none: it answers one [`Answer`] per operation only once the commit succeeded, or the
/// reason of the failure. On failure every valid operation is answered with
/// [`OpError::Backend`]; no receipt exists before `transaction` returned `Ok`.
pub(crate) fn run(
    batch: Vec<(OpId, StoreOp)>,
    transaction: impl FnOnce(&[&StoreOp]) -> Result<Vec<Answer>, String>,
) -> Vec<(OpId, Result<Outcome, OpError>)> {
    let mut results: Vec<(OpId, Option<Result<Outcome, OpError>>)> =
        Vec::with_capacity(batch.len());
    let mut valid = Vec::with_capacity(batch.len());
    for (id, op) in &batch {
        match op.validate() {
            Ok(()) => {
                results.push((*id, None));
                valid.push(op);
            }
            Err(e) => results.push((*id, Some(Err(e)))),
        }
    }
    if !valid.is_empty() {
        let answers = match transaction(&valid) {
            Ok(answers) if answers.len() == valid.len() => Ok(answers),
            Ok(answers) => Err(format!(
                "the backend answered {} of {} operations",
                answers.len(),
                valid.len()
            )),
            Err(reason) => Err(reason),
        };
        match answers {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                for (id, result) in &mut results {
                    if result.is_none() {
                        *result = answers.next().map(|a| a.committed(*id));
                    }
                }
            }
            Err(reason) => {
                for (_, result) in &mut results {
                    if result.is_none() {
                        *result = Some(Err(OpError::Backend(reason.clone())));
                    }
                }
            }
        }
    }
    results
        .into_iter()
        .map(|(id, result)| {
            (
                id,
                result.unwrap_or_else(|| Err(OpError::Backend("no answer".to_owned()))),
            )
        })
        .collect()
}
