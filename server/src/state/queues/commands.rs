//! The queue commands of the state machine: what each does to [`Queues`](super::Queues), with fresh revisions
//! for message ids and delivery tags, and which sessions' waiting gets must look again.

use distsync::wire::{CommandResponse, PutMessage, QueueAwaitOutcome, QueueOptions};
use distsync::{ServerError, SessionId};

use super::{AwaitState, GetOutcome};
use crate::state::{next, StateMachine};

/// What a `QueueGet` asks for, besides its queue.
#[derive(Debug, Clone, Copy)]
pub struct Get {
    /// The client's id of the get, unique within its session.
    pub request: u64,
    /// At most this many messages.
    pub max: u32,
    /// The visibility timeout; the queue's default if absent.
    pub visibility_ms: Option<u64>,
    /// How long to wait for a message.
    pub wait_ms: u64,
    /// Whether the deliveries outlive the session.
    pub detach: bool,
    /// The consumer session's secret, which keys the delivery tags.
    pub tag_key: distsync::wire::SessionSecret,
}

impl StateMachine {
    /// `QueueCreate`: creates the queue or sets its options.
    pub(in crate::state) fn queue_create(
        &mut self,
        queue: &str,
        options: QueueOptions,
        identity: &str,
    ) -> Result<CommandResponse, ServerError> {
        Ok(CommandResponse::QueueCreated { created: self.queues.create(queue, options, identity, &self.limits)? })
    }

    /// `QueueDelete`: deletes the queue and its messages; waiting gets end.
    pub(in crate::state) fn queue_delete(&mut self, queue: &str) -> Result<CommandResponse, ServerError> {
        Ok(CommandResponse::QueueDeleted { messages: self.queues.delete(queue, &mut self.touched)? })
    }

    /// `QueuePut`: enqueues the messages, each id a fresh revision, and hands them to waiting gets.
    pub(in crate::state) fn queue_put(
        &mut self,
        queue: &str,
        messages: &[PutMessage],
        identity: &str,
    ) -> Result<CommandResponse, ServerError> {
        let counter = &mut self.revision;
        let outcomes = self.queues.put(
            queue,
            messages,
            self.now_ms,
            &mut || next(counter),
            &mut self.touched,
            identity,
            &self.limits,
        )?;
        Ok(CommandResponse::QueuePut { outcomes })
    }

    /// `QueueGet` at `revision`: delivers now, or leaves the get waiting.
    pub(in crate::state) fn queue_get(
        &mut self,
        revision: u64,
        session: SessionId,
        queue: &str,
        get: Get,
        identity: &str,
    ) -> Result<CommandResponse, ServerError> {
        let Get { request, max, visibility_ms, wait_ms, detach, tag_key } = get;
        let counter = &mut self.revision;
        let outcome = self.queues.get(
            queue,
            (session, request),
            tag_key,
            max,
            visibility_ms,
            wait_ms,
            detach,
            self.now_ms,
            &mut || next(counter),
            identity,
            &self.limits,
        )?;
        Ok(match outcome {
            GetOutcome::Delivered(deliveries) => CommandResponse::QueueDelivered { deliveries },
            GetOutcome::Waiting => {
                // Whoever waits for this get on another node learns of it by this.
                self.touched.push(session);
                CommandResponse::QueueWaiting { revision }
            }
        })
    }

    /// `QueueAck`: deletes the delivered messages for good.
    pub(in crate::state) fn queue_ack(
        &mut self,
        session: SessionId,
        queue: &str,
        tags: &[u64],
    ) -> Result<CommandResponse, ServerError> {
        Ok(CommandResponse::QueueAcked { stale: self.queues.ack(queue, session, tags)? })
    }

    /// `QueueNack`: makes the delivered messages deliverable again (or dead-letters them).
    pub(in crate::state) fn queue_nack(
        &mut self,
        session: SessionId,
        queue: &str,
        tags: &[u64],
    ) -> Result<CommandResponse, ServerError> {
        let counter = &mut self.revision;
        let stale = self.queues.nack(queue, session, tags, self.now_ms, &mut || next(counter), &mut self.touched)?;
        Ok(CommandResponse::QueueNacked { stale })
    }

    /// `QueueExtend`: keeps a delivery invisible longer.
    pub(in crate::state) fn queue_extend(
        &mut self,
        session: SessionId,
        queue: &str,
        tag: u64,
        visibility_ms: u64,
    ) -> Result<CommandResponse, ServerError> {
        Ok(CommandResponse::QueueExtended {
            visible_at_ms: self.queues.extend(queue, session, tag, visibility_ms, self.now_ms)?,
        })
    }

    /// `QueueCancel`: gives up a get of `session` whose caller stopped waiting.
    pub(in crate::state) fn queue_cancel(&mut self, session: SessionId, queue: &str, request: u64) -> CommandResponse {
        let counter = &mut self.revision;
        let returned =
            self.queues.cancel(queue, (session, request), self.now_ms, &mut || next(counter), &mut self.touched);
        CommandResponse::QueueCancelled { returned }
    }

    /// Where a get of `session` that started waiting at `queued_revision` stands, as far as this
    /// replica has applied.
    pub fn queue_await(
        &self,
        queue: &str,
        session: SessionId,
        request: u64,
        queued_revision: u64,
    ) -> QueueAwaitOutcome {
        if self.revision < queued_revision {
            return QueueAwaitOutcome::Pending;
        }
        match self.queues.await_state(queue, (session, request)) {
            AwaitState::Waiting => QueueAwaitOutcome::Pending,
            AwaitState::Delivered(deliveries) => QueueAwaitOutcome::Delivered(deliveries),
            AwaitState::Gone if self.sessions.contains(session) => QueueAwaitOutcome::Empty,
            AwaitState::Gone => QueueAwaitOutcome::SessionEnded,
        }
    }
}
