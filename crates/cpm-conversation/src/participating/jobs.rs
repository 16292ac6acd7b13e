//! The B2BUA job lifecycle every message flow shares (PROTOCOL.md 2.1; SYSTEM.md rule 3):
//! store outcomes (a job's records committed, then sent on or acknowledged) and the final
//! answers of the PF's own client legs, dispatched by what each was for.

use std::time::Instant;

use cpm_sip::{Request, StatusCode};
use cpm_sip_core::transaction::{ClientKey, ServerKey, response_to};
use cpm_store::{DeliveryState, Direction, OpError, OpId, Outcome, StoreOp};

use super::message::{MessageBody, asserted_identity};
use super::{ClientPurpose, EXPIRY_BATCH, Job, JobKind, OpPurpose, ParticipatingFunction, Refusal};
use crate::ids::aor_of;

impl ParticipatingFunction {
    pub(super) fn new_job(
        &mut self,
        server: ServerKey,
        req: Request,
        kind: JobKind,
        waiting: usize,
    ) -> u64 {
        let id = self.next_job;
        self.next_job += 1;
        self.jobs.insert(
            id,
            Job {
                server,
                req,
                kind,
                receipt: None,
                waiting,
                failed: false,
                refused: None,
            },
        );
        id
    }

    pub(super) fn on_stored(&mut self, now: Instant, id: OpId, result: Result<Outcome, OpError>) {
        let Some(purpose) = self.ops.remove(&id) else {
            return;
        };
        if result.is_err() {
            self.stats.store_failures += 1;
        }
        match purpose {
            OpPurpose::Job(job_id) => {
                let Some(job) = self.jobs.get_mut(&job_id) else {
                    return;
                };
                job.waiting = job.waiting.saturating_sub(1);
                match result {
                    Ok(Outcome::Appended {
                        receipt,
                        duplicate,
                        state,
                    }) => {
                        if duplicate {
                            self.stats.duplicates += 1;
                        }
                        if let JobKind::Term { answer, .. } = &mut job.kind
                            && duplicate
                            && state >= DeliveryState::Delivered
                        {
                            // Stored and delivered before (a resend after a crash): it was
                            // delivered, whatever the devices said this time.
                            *answer = Some(StatusCode::OK);
                        }
                        // Keep one receipt (all of a 1-N job's records commit in order; the
                        // last one proves the whole batch).
                        job.receipt = Some(receipt);
                    }
                    Ok(Outcome::Updated { receipt, .. }) => job.receipt = Some(receipt),
                    Err(OpError::QuotaExceeded(q)) => job.refused = Some(q.into()),
                    Ok(_) | Err(_) => job.failed = true,
                }
                if job.waiting == 0 {
                    self.job_stored(now, job_id);
                }
            }
            OpPurpose::DeferredRead { owner } => {
                let records = match result {
                    Ok(Outcome::Messages(r)) => r,
                    _ => Vec::new(),
                };
                self.on_deferred_read(now, owner, records);
            }
            OpPurpose::Expiry => {
                self.expiry_running = false;
                if let Ok(Outcome::Expired { receipt, records }) = result {
                    let full = records.len() >= EXPIRY_BATCH;
                    drop(receipt);
                    for r in records {
                        self.stats.expired += 1;
                        self.on_expired(now, &r);
                    }
                    if full {
                        // More may be due: check again at once.
                        self.next_expiry = now;
                    }
                }
            }
            OpPurpose::Background => {}
            OpPurpose::Session(st) => self.session_stored(now, *st, result),
        }
    }

    /// Every store operation of a job is done.
    pub(super) fn job_stored(&mut self, now: Instant, job_id: u64) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.refused.is_some() && !job.failed {
            // Nothing was written: the sender is told the queue is full, and may try later.
            self.stats.deferred_refused += 1;
            if let Some(job) = self.jobs.remove(&job_id)
                && let Some(refusal) = job.refused
            {
                self.refuse(now, &job.server, &job.req, refusal);
            }
            return;
        }
        if job.failed || (job.receipt.is_none() && !matches!(job.kind, JobKind::Imdn { .. })) {
            let job = self.jobs.remove(&job_id);
            if let Some(job) = job {
                self.refuse(now, &job.server, &job.req, Refusal::StorageFailure);
            }
            return;
        }
        match &mut job.kind {
            JobKind::Orig { out } | JobKind::Imdn { out } => {
                let out = out.clone();
                self.send_leg(now, out, ClientPurpose::Job(job_id));
            }
            JobKind::OrigList { outs, .. } => {
                let outs = std::mem::take(outs);
                let Some(job) = self.jobs.remove(&job_id) else {
                    return;
                };
                let JobKind::OrigList { record, .. } = job.kind else {
                    return;
                };
                if let Some(receipt) = job.receipt {
                    // RFC 5365: the list server accepts the request; the outcome per
                    // recipient comes later (here as failure IMDNs).
                    self.acknowledge(now, &job.server, &job.req, StatusCode::ACCEPTED, receipt);
                }
                for (aor, out) in outs {
                    let mut rec = record.clone();
                    rec.peer = aor;
                    rec.recipient = out.uri.to_string();
                    self.send_leg(
                        now,
                        out,
                        ClientPurpose::ListCopy {
                            record: Box::new(rec),
                        },
                    );
                }
            }
            JobKind::Term { .. } => {
                let Some(job) = self.jobs.remove(&job_id) else {
                    return;
                };
                let JobKind::Term {
                    owner,
                    answer,
                    epoch,
                    ..
                } = job.kind
                else {
                    return;
                };
                let answer = answer.unwrap_or(StatusCode::ACCEPTED);
                if let Some(receipt) = job.receipt {
                    self.acknowledge(now, &job.server, &job.req, answer, receipt);
                }
                // Stored as pending while the user registered: that registration's queue run
                // could not see it, so run the queue again.
                if answer == StatusCode::ACCEPTED
                    && self.reg_epoch.get(&owner).copied().unwrap_or(0) != epoch
                {
                    self.start_deferred_run(owner);
                }
            }
        }
    }

    /// A leg of ours got its final answer (or timed out, as 408).
    pub(super) fn leg_final(
        &mut self,
        now: Instant,
        ckey: &ClientKey,
        status: StatusCode,
        reason: &str,
    ) {
        let Some(purpose) = self.clients.remove(ckey) else {
            return;
        };
        let unix = self.unix_ms(now);
        match purpose {
            ClientPurpose::Job(job_id) => self.job_final(now, job_id, status, reason),
            ClientPurpose::ListCopy { record } => {
                if !status.is_success() {
                    self.sender_failed(now, &record, unix);
                }
            }
            ClientPurpose::LateTerm {
                owner,
                peer,
                message_id,
            } => {
                self.in_flight
                    .remove(&(owner.clone(), peer.clone(), message_id.clone()));
                if status.is_success() {
                    self.stats.delivered += 1;
                    self.mark(
                        &owner,
                        &peer,
                        Direction::Received,
                        &message_id,
                        DeliveryState::Delivered,
                        unix,
                    );
                } else if self.rerun.remove(&owner) {
                    self.start_deferred_run(owner);
                }
            }
            ClientPurpose::Deferred { owner } => {
                let Some(run) = self.runs.get_mut(&owner) else {
                    return;
                };
                run.sending = None;
                let Some(record) = run.queue.pop_front() else {
                    return;
                };
                if status.is_success() {
                    self.stats.deferred_delivered += 1;
                    self.mark(
                        &record.owner,
                        &record.peer,
                        Direction::Received,
                        &record.message_id,
                        DeliveryState::Delivered,
                        unix,
                    );
                    self.deferred_next(now, owner);
                } else {
                    // The device went away again: the rest waits for the next registration.
                    self.runs.remove(&owner);
                }
            }
            ClientPurpose::Notice => {}
            ClientPurpose::Session(sid) => self.on_session_leg_failed(now, sid, status),
        }
    }

    fn job_final(&mut self, now: Instant, job_id: u64, status: StatusCode, reason: &str) {
        let Some(mut job) = self.jobs.remove(&job_id) else {
            return;
        };
        // Interworking with a device that is not a CPM client (e.g. a plain RFC 3428 UA): it
        // refused CPIM with 415, so the text inside is offered once more, unwrapped.
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE
            && let JobKind::Term { plain_retry, .. } = &mut job.kind
            && !*plain_retry
            && let Some(out) = self.unwrapped_leg(&job.req)
        {
            *plain_retry = true;
            self.jobs.insert(job_id, job);
            self.send_leg(now, out, ClientPurpose::Job(job_id));
            return;
        }
        let unix = self.unix_ms(now);
        match job.kind {
            JobKind::Orig { ref out } => {
                if status.is_success() {
                    if let Some(receipt) = job.receipt.take() {
                        self.acknowledge(now, &job.server, &job.req, status, receipt);
                    }
                } else {
                    // The recipient's side refused it: the sender's record says so. (A
                    // timeout or server error says nothing final: the other side may have
                    // stored it, and its notifications may still come.)
                    let final_refusal =
                        status != StatusCode::REQUEST_TIMEOUT && status.class() != 5;
                    if final_refusal
                        && let (Some(owner), Some(peer)) = (
                            asserted_identity(&job.req).as_ref().and_then(aor_of),
                            aor_of(&out.uri),
                        )
                    {
                        let mid = MessageBody::parse(&job.req)
                            .map(|b| b.message_id(&job.req))
                            .unwrap_or_default();
                        self.mark(
                            &owner,
                            &peer,
                            Direction::Sent,
                            &mid,
                            DeliveryState::Failed,
                            unix,
                        );
                    }
                    self.relay_failure(now, &job, status, reason);
                }
            }
            JobKind::Imdn { .. } => {
                if status.is_success() {
                    if let Some(receipt) = job.receipt.take() {
                        self.acknowledge(now, &job.server, &job.req, status, receipt);
                    } else {
                        // Nothing was stored for it (a processing notification): its 2xx
                        // acknowledges no message of ours.
                        let tag = self.tag();
                        let resp = response_to(&job.req, status, Some(&tag));
                        let _ = self.tx.respond_owned(now, &job.server, resp);
                    }
                } else if let Some(receipt) = job.receipt.take() {
                    // The state is recorded in the history even if no device took the
                    // notification now.
                    self.acknowledge(now, &job.server, &job.req, StatusCode::ACCEPTED, receipt);
                } else {
                    self.relay_failure(now, &job, status, reason);
                }
            }
            JobKind::Term {
                ref owner,
                ref peer,
                ref message_id,
                ..
            } => {
                self.in_flight
                    .remove(&(owner.clone(), peer.clone(), message_id.clone()));
                if is_permanent_failure(status) {
                    // The user does not exist or refuses: nothing to keep.
                    return self.relay_failure(now, &job, status, reason);
                }
                let (state, answer) = if status.is_success() {
                    self.stats.delivered += 1;
                    (DeliveryState::Delivered, StatusCode::OK)
                } else {
                    // No device now (480), none answered (408), or a device error: the
                    // message waits in the deferred queue.
                    self.stats.deferred += 1;
                    (DeliveryState::Pending, StatusCode::ACCEPTED)
                };
                self.jobs.insert(job_id, job);
                self.store_term(now, job_id, state, answer);
            }
            JobKind::OrigList { .. } => {}
        }
    }

    pub(super) fn mark(
        &mut self,
        owner: &str,
        peer: &str,
        direction: Direction,
        message_id: &str,
        state: DeliveryState,
        at_ms: u64,
    ) {
        self.store(
            OpPurpose::Background,
            StoreOp::UpdateState {
                owner: owner.to_owned(),
                peer: Some(peer.to_owned()),
                direction: Some(direction),
                message_id: message_id.to_owned(),
                state,
                at_ms,
            },
        );
    }
}

/// Permanent failures of a terminating delivery: the user does not exist or refuses; the
/// message is not kept for later.
fn is_permanent_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 403 | 404 | 410 | 484 | 603 | 604)
}
