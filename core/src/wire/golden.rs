//! The encodings of commands and their answers are part of the Raft log and of snapshots on
//! every node's disk (stored answers for exactly-once retries), so they must not change by
//! accident: a reordered variant or field would make an upgraded node misread its own log.
//! These pin one message of every variant byte for byte.

use serde::Serialize;

use super::*;
use crate::error::{LockRefusal, QueueRefusal};

fn hex(value: &impl Serialize) -> String {
    postcard::to_stdvec(value).unwrap().iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn commands() -> Vec<Command> {
    let name = || "n".to_string();
    vec![
        Command::KvPut { key: b"k".to_vec(), value: b"v".to_vec() },
        Command::KvDelete { key: b"k".to_vec() },
        Command::CloseSession,
        Command::LockAcquire { name: name(), actor: 7, mode: LockMode::Shared, wait: LockWait::TimeoutMs(5) },
        Command::LockUpgrade { name: name(), actor: 7, wait: LockWait::Forever },
        Command::LockRelease { name: name(), actor: 7, token: 9 },
        Command::LockCancel { name: name(), actor: 7, queued_revision: 3, upgrade: true },
        Command::QueueCreate { queue: name(), options: QueueOptions::default() },
        Command::QueueDelete { queue: name() },
        Command::QueuePut {
            queue: name(),
            messages: vec![PutMessage { body: b"b".to_vec(), dedup_id: Some("d".into()) }],
        },
        Command::QueueGet { queue: name(), request: 2, max: 3, visibility_ms: Some(4), wait_ms: 5, detach: true },
        Command::QueueAck { queue: name(), tags: vec![1, 2] },
        Command::QueueNack { queue: name(), tags: vec![3] },
        Command::QueueExtend { queue: name(), tag: 4, visibility_ms: 500 },
        Command::CacheSet { key: b"k".to_vec(), value: b"v".to_vec(), ttl_ms: Some(6) },
        Command::CacheDelete { key: b"k".to_vec() },
        Command::QueueCancel { queue: name(), request: 8 },
    ]
}

pub(super) fn command_responses() -> Vec<CommandResponse> {
    let delivery = QueueDelivery {
        id: 1,
        tag: 2,
        attempt: 3,
        body: b"b".to_vec(),
        enqueued_ms: 4,
        visible_at_ms: 5,
        history: vec![DeliveryAttempt {
            queue: "q".into(),
            attempt: 1,
            session: 6,
            delivered_ms: 7,
            ended_ms: 8,
            outcome: AttemptOutcome::TimedOut,
        }],
    };
    vec![
        CommandResponse::KvPut { version: 1 },
        CommandResponse::KvDelete { existed: true },
        CommandResponse::SessionClosed,
        CommandResponse::LockGranted { token: 2 },
        CommandResponse::LockQueued { revision: 3, ahead: 4 },
        CommandResponse::LockReleased,
        CommandResponse::LockCancelled { released: true },
        CommandResponse::QueueCreated { created: true },
        CommandResponse::QueueDeleted { messages: 5 },
        CommandResponse::QueuePut { outcomes: vec![PutOutcome { id: 6, duplicate: true }] },
        CommandResponse::QueueDelivered { deliveries: vec![delivery] },
        CommandResponse::QueueWaiting { revision: 7 },
        CommandResponse::QueueAcked { stale: vec![8] },
        CommandResponse::QueueNacked { stale: vec![9] },
        CommandResponse::QueueExtended { visible_at_ms: 10 },
        CommandResponse::CacheSet { version: 11 },
        CommandResponse::CacheDeleted { existed: false },
        CommandResponse::QueueCancelled { returned: 12 },
    ]
}

/// The answers the state machine stores: `Result<Response, ServerError>`.
pub(super) fn answers() -> Vec<Result<Response, ServerError>> {
    let owner = Owner { session: 1, actor: 2 };
    vec![
        Ok(Response::SessionOpened { session: 1, ttl_ms: 2 }),
        Ok(Response::KeptAlive),
        Ok(Response::Written(CommandResponse::LockReleased)),
        Ok(Response::Done),
        Err(ServerError::NotLeader { leader: Some(LeaderInfo { id: 1, address: "a".into() }) }),
        Err(ServerError::Unavailable { reason: "r".into() }),
        Err(ServerError::SessionExpired { session: 3 }),
        Err(ServerError::StaleSequence { session: 4, seq: 5, oldest_kept: 6 }),
        Err(ServerError::InvalidArgument { reason: "r".into() }),
        Err(ServerError::Lock(LockRefusal::WouldBlock { name: "n".into() })),
        Err(ServerError::Lock(LockRefusal::AlreadyHeld { name: "n".into() })),
        Err(ServerError::Lock(LockRefusal::Deadlock { name: "n".into(), cycle: vec![(owner, "m".into())] })),
        Err(ServerError::Lock(LockRefusal::NotHeld { name: "n".into(), token: 7 })),
        Err(ServerError::Lock(LockRefusal::NotShared { name: "n".into() })),
        Err(ServerError::Queue(QueueRefusal::NoSuchQueue { queue: "q".into() })),
        Err(ServerError::Queue(QueueRefusal::StaleTag { queue: "q".into(), tag: 8 })),
        Err(ServerError::Queue(QueueRefusal::MessageTooLarge { queue: "q".into(), bytes: 9, max: 10 })),
        Err(ServerError::Queue(QueueRefusal::Full {
            queue: "q".into(),
            what: "w".into(),
            limit: 2,
            reason: "r".into(),
        })),
        Err(ServerError::LimitReached { what: "w".into(), limit: 2, reason: "r".into() }),
        Err(ServerError::FaultInjectionDisabled),
        Err(ServerError::Internal { reason: "r".into() }),
        Err(ServerError::PermissionDenied { identity: "a".into(), resource: "kv:k".into(), needed: Permission::Write }),
        Err(ServerError::IdentityDisabled { identity: "a".into() }),
        Err(ServerError::SessionNotOwned { session: 3 }),
        Err(ServerError::SequenceReused { session: 4, seq: 5 }),
        Ok(Response::AdminApplied { changed: true }),
    ]
}

/// Admin commands are log entries too.
pub(super) fn admin_commands() -> Vec<AdminCommand> {
    let resource = Resource { kind: ResourceKind::Queue, prefix: b"q".to_vec() };
    vec![
        AdminCommand::Grant {
            identity: "a".into(),
            target: AclTarget::Resource(resource),
            permission: Permission::Read,
        },
        AdminCommand::Grant { identity: "a".into(), target: AclTarget::Admin, permission: Permission::Admin },
        AdminCommand::Revoke { identity: "a".into(), target: AclTarget::Admin },
        AdminCommand::SetEnabled { identity: "a".into(), enabled: false },
    ]
}

#[test]
fn admin_commands_and_writes_keep_their_encoding() {
    let expected = ["0001610102017100", "0001610002", "01016100", "02016100"];
    let actual: Vec<String> = admin_commands().iter().map(hex).collect();
    assert_eq!(actual, expected);
    let write = WriteRequest {
        session: 1,
        seq: 2,
        acked_below: 3,
        command: Command::CloseSession,
        secret: SessionSecret([9; 16]),
    };
    assert_eq!(hex(&write), "0102030209090909090909090909090909090909");
}

#[test]
fn commands_keep_their_encoding() {
    let expected = [
        "00016b0176",
        "01016b",
        "02",
        "03016e07010105",
        "04016e0702",
        "05016e0709",
        "06016e070301",
        "07016e05b0ea01808010c0a907",
        "08016e",
        "09016e010162010164",
        "0a016e020301040501",
        "0b016e020102",
        "0c016e0103",
        "0d016e04f403",
        "0e016b01760106",
        "0f016b",
        "10016e08",
    ];
    let actual: Vec<String> = commands().iter().map(hex).collect();
    assert_eq!(actual, expected);
}

#[test]
fn command_responses_keep_their_encoding() {
    let expected = [
        "0001",
        "0101",
        "02",
        "0302",
        "040304",
        "05",
        "0601",
        "0701",
        "0805",
        "09010601",
        "0a01010203016204050101710106070801",
        "0b07",
        "0c0108",
        "0d0109",
        "0e0a",
        "0f0b",
        "1000",
        "110c",
    ];
    let actual: Vec<String> = command_responses().iter().map(hex).collect();
    assert_eq!(actual, expected);
}

#[test]
fn stored_answers_keep_their_encoding() {
    let expected = [
        "00000102",
        "0001",
        "000205",
        "0005",
        "010001010161",
        "01010172",
        "010203",
        "0103040506",
        "01040172",
        "010500016e",
        "010501016e",
        "010502016e010102016d",
        "010503016e07",
        "010504016e",
        "0106000171",
        "010601017108",
        "0106020171090a",
        "01060301710177020172",
        "01070177020172",
        "0108",
        "01090172",
        "010a0161046b763a6b01",
        "010b0161",
        "010c03",
        "010d0405",
        "000c01",
    ];
    let actual: Vec<String> = answers().iter().map(hex).collect();
    assert_eq!(actual, expected);
}
