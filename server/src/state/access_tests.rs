//! Scenarios of access control in the state machine: sessions belong to their opener, stored
//! answers to their command, grants decide every write and read at their log position, and a
//! disabled identity is shut out at once.

use distsync::wire::{
    AclTarget, AdminCommand, LockWait, Permission, Query, QueryResponse, Resource, ResourceKind, ADMIN_IDENTITY,
};

use super::tests::{acquire, apply, at, kv_get, opened, opened_as, put, secret_of, write_as, write_op};
use super::*;

fn admin(command: AdminCommand) -> Op {
    Op::Admin { identity: ADMIN_IDENTITY.into(), command }
}

fn grant(identity: &str, resource: &str, permission: Permission) -> Op {
    let target: AclTarget = resource.parse().expect("a valid resource");
    admin(AdminCommand::Grant { identity: identity.into(), target, permission })
}

fn denied(identity: &str, resource: &str, needed: Permission) -> ServerError {
    ServerError::PermissionDenied { identity: identity.into(), resource: resource.into(), needed }
}

fn kv_put(key: &str, value: &str) -> Command {
    Command::KvPut { key: key.into(), value: value.into() }
}

#[test]
fn a_session_refuses_requests_from_another_identity_or_with_a_wrong_secret() {
    let mut machine = StateMachine::default();
    let victim = opened(&mut machine, 1, 0, 60_000);
    apply(&mut machine, 2, 1, &at(1, write_op(victim, 1, acquire("l", 1, LockWait::Try)))).unwrap();
    let mallory = opened_as(&mut machine, 3, 2, 60_000, "mallory");
    apply(&mut machine, 4, 1, &at(3, grant("mallory", "lock:", Permission::Write))).unwrap();
    let before = machine.clone();

    // Another identity naming the victim's session, even with its secret.
    let release = Command::LockRelease { name: "l".into(), actor: 1, token: 2 };
    let foreign = write_as("mallory", victim, 2, release.clone());
    assert_eq!(apply(&mut machine, 5, 1, &at(4, foreign)), Err(ServerError::SessionNotOwned { session: victim }));
    // The right identity with a guessed secret.
    let guessed =
        WriteRequest { session: victim, seq: 2, acked_below: 2, command: release, secret: secret_of(mallory) };
    let guessed = Op::Write { identity: ADMIN_IDENTITY.into(), write: guessed };
    assert_eq!(apply(&mut machine, 6, 1, &at(5, guessed)), Err(ServerError::SessionNotOwned { session: victim }));
    // Keepalives and closes the same.
    let keep = Op::KeepAlive { session: victim, identity: "mallory".into(), secret: secret_of(victim) };
    assert_eq!(apply(&mut machine, 7, 1, &at(6, keep)), Err(ServerError::SessionNotOwned { session: victim }));
    let close = write_as("mallory", victim, 3, Command::CloseSession);
    assert_eq!(apply(&mut machine, 8, 1, &at(7, close)), Err(ServerError::SessionNotOwned { session: victim }));
    assert_eq!(machine.lock_show("l"), before.lock_show("l"), "the victim still holds its lock");
    assert_eq!(machine.session_count(), 2);
    // Waits check the same.
    assert_eq!(
        machine.check_session_owner(victim, "mallory", &secret_of(victim)),
        Err(ServerError::SessionNotOwned { session: victim })
    );
    assert_eq!(machine.check_session_owner(victim, ADMIN_IDENTITY, &secret_of(victim)), Ok(()));
    machine.check_invariants();
}

#[test]
fn a_cancel_frees_a_grant_only_for_the_session_that_holds_it() {
    let mut machine = StateMachine::default();
    let holder = opened(&mut machine, 1, 0, 60_000);
    apply(&mut machine, 2, 1, &at(1, write_op(holder, 1, acquire("l", 1, LockWait::Try)))).unwrap();
    let other = opened(&mut machine, 3, 2, 60_000);
    // The same actor number, queued revision 0 (before any grant): from another session it is
    // another owner, so nothing of the holder's is freed.
    let cancel = Command::LockCancel { name: "l".into(), actor: 1, queued_revision: 0, upgrade: true };
    let answer = apply(&mut machine, 4, 1, &at(3, write_op(other, 1, cancel))).unwrap();
    assert_eq!(answer, Response::Written(CommandResponse::LockCancelled { released: false }));
    let QueryResponse::LockShow { lock: Some(lock) } = machine.lock_show("l") else { panic!("the lock is gone") };
    assert_eq!(lock.holders[0].owner.session, holder, "the grant is untouched");
    assert_eq!(lock.identities, vec![(holder, ADMIN_IDENTITY.to_string())], "lock show names the identity");
}

#[test]
fn a_different_command_under_a_seen_sequence_number_is_refused() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 0, 60_000);
    let first = apply(&mut machine, 2, 1, &at(1, put(session, 1, 1, "k", "v1"))).unwrap();
    assert_eq!(apply(&mut machine, 3, 1, &at(2, put(session, 1, 1, "k", "v1"))), Ok(first), "a true retry");
    let other = apply(&mut machine, 4, 1, &at(3, put(session, 1, 1, "k", "v2")));
    assert_eq!(other, Err(ServerError::SequenceReused { session, seq: 1 }));
    assert_eq!(kv_get(&machine, "k").map(|(value, _)| value), Some(b"v1".to_vec()), "nothing else applied");
}

#[test]
fn an_open_retried_with_the_same_secret_answers_the_first_session() {
    let mut machine = StateMachine::default();
    let secret = SessionSecret::random();
    let open = Op::OpenSession { ttl_ms: 5_000, identity: "alice".into(), secret };
    let first = apply(&mut machine, 1, 1, &at(0, open.clone())).unwrap();
    assert_eq!(apply(&mut machine, 2, 1, &at(1, open)), Ok(first));
    assert_eq!(machine.session_count(), 1, "no orphan session");
    // The same secret from another identity is another session.
    let theirs = Op::OpenSession { ttl_ms: 5_000, identity: "bob".into(), secret };
    apply(&mut machine, 3, 1, &at(2, theirs)).unwrap();
    assert_eq!(machine.session_count(), 2);
    machine.check_invariants();
}

#[test]
fn an_identity_can_do_nothing_until_granted_and_write_implies_read() {
    let mut machine = StateMachine::default();
    let alice = opened_as(&mut machine, 1, 0, 60_000, "alice");
    let put = |seq, key: &str| write_as("alice", alice, seq, kv_put(key, "v"));
    assert_eq!(
        apply(&mut machine, 2, 1, &at(1, put(1, "team-a/x"))),
        Err(denied("alice", "kv:team-a/x", Permission::Write))
    );
    let read = Query::KvGet { key: b"team-a/x".to_vec() };
    assert_eq!(machine.query("alice", &read), Err(denied("alice", "kv:team-a/x", Permission::Read)));

    apply(&mut machine, 3, 1, &at(2, grant("alice", "kv:team-a/", Permission::Read))).unwrap();
    assert!(machine.query("alice", &read).is_ok(), "read granted");
    assert_eq!(
        apply(&mut machine, 4, 1, &at(3, put(2, "team-a/x"))),
        Err(denied("alice", "kv:team-a/x", Permission::Write))
    );

    apply(&mut machine, 5, 1, &at(4, grant("alice", "kv:team-a/", Permission::Write))).unwrap();
    assert!(apply(&mut machine, 6, 1, &at(5, put(3, "team-a/x"))).is_ok(), "write granted");
    assert!(machine.query("alice", &read).is_ok(), "write implies read");
    assert_eq!(
        apply(&mut machine, 7, 1, &at(6, put(4, "team-b/x"))),
        Err(denied("alice", "kv:team-b/x", Permission::Write))
    );
    // A grant of one kind says nothing of another.
    let lock = write_as("alice", alice, 5, acquire("team-a/x", 1, LockWait::Try));
    assert_eq!(apply(&mut machine, 8, 1, &at(7, lock)), Err(denied("alice", "lock:team-a/x", Permission::Write)));

    let revoke = AdminCommand::Revoke { identity: "alice".into(), target: "kv:team-a/".parse().unwrap() };
    assert_eq!(apply(&mut machine, 9, 1, &at(8, admin(revoke))), Ok(Response::AdminApplied { changed: true }));
    assert_eq!(machine.query("alice", &read), Err(denied("alice", "kv:team-a/x", Permission::Read)));
    machine.check_invariants();
}

#[test]
fn only_admins_change_grants_and_listings_show_only_what_may_be_read() {
    let mut machine = StateMachine::default();
    let not_admin = Op::Admin {
        identity: "alice".into(),
        command: AdminCommand::Grant {
            identity: "alice".into(),
            target: AclTarget::Admin,
            permission: Permission::Admin,
        },
    };
    assert_eq!(apply(&mut machine, 1, 1, &at(0, not_admin)), Err(denied("alice", "admin", Permission::Admin)));
    assert_eq!(
        machine.query("alice", &Query::Identities { after: None }),
        Err(denied("alice", "admin", Permission::Admin))
    );

    let admin_session = opened(&mut machine, 2, 1, 60_000);
    for (index, name) in [(3, "team-a/1"), (4, "team-b/1"), (5, "team-a/2")] {
        apply(&mut machine, index, 1, &at(2, write_op(admin_session, index, acquire(name, 1, LockWait::Forever))))
            .unwrap();
    }
    apply(&mut machine, 6, 1, &at(3, grant("alice", "lock:team-a/", Permission::Read))).unwrap();
    let Ok(QueryResponse::LockList { locks, more }) = machine.query("alice", &Query::LockList { after: None }) else {
        panic!("alice may list locks");
    };
    let names: Vec<&str> = locks.iter().map(|lock| lock.name.as_str()).collect();
    assert_eq!((names, more), (vec!["team-a/1", "team-a/2"], false));

    let Ok(QueryResponse::Identities { identities, .. }) =
        machine.query(ADMIN_IDENTITY, &Query::Identities { after: None })
    else {
        panic!("the admin lists identities");
    };
    let alice = identities.iter().find(|i| i.identity == "alice").expect("alice is listed");
    let resource = Resource { kind: ResourceKind::Lock, prefix: b"team-a/".to_vec() };
    assert_eq!(alice.grants, vec![(resource, Permission::Read)]);
    let admin = identities.iter().find(|i| i.identity == ADMIN_IDENTITY).expect("admin is listed");
    assert!(admin.admin && admin.sessions == 1, "{admin:?}");
}

#[test]
fn disabling_an_identity_ends_its_sessions_and_refuses_it_until_enabled() {
    let mut machine = StateMachine::default();
    let alice = opened_as(&mut machine, 1, 0, 60_000, "alice");
    apply(&mut machine, 2, 1, &at(1, grant("alice", "lock:", Permission::Write))).unwrap();
    let take = write_as("alice", alice, 1, acquire("l", 1, LockWait::Try));
    assert!(matches!(
        apply(&mut machine, 3, 1, &at(2, take)),
        Ok(Response::Written(CommandResponse::LockGranted { .. }))
    ));

    let disable = admin(AdminCommand::SetEnabled { identity: "alice".into(), enabled: false });
    assert_eq!(apply(&mut machine, 4, 1, &at(3, disable)), Ok(Response::AdminApplied { changed: true }));
    assert_eq!(machine.session_count(), 0, "alice's session ended");
    assert_eq!(machine.lock_show("l"), QueryResponse::LockShow { lock: None }, "and its lock was released");
    let refused = ServerError::IdentityDisabled { identity: "alice".into() };
    let reopen = Op::OpenSession { ttl_ms: 5_000, identity: "alice".into(), secret: SessionSecret::random() };
    assert_eq!(apply(&mut machine, 5, 1, &at(4, reopen.clone())), Err(refused.clone()));
    assert_eq!(machine.query("alice", &Query::LockShow { name: "l".into() }), Err(refused));

    let enable = admin(AdminCommand::SetEnabled { identity: "alice".into(), enabled: true });
    apply(&mut machine, 6, 1, &at(5, enable)).unwrap();
    assert!(apply(&mut machine, 7, 1, &at(6, reopen)).is_ok(), "enabled again");
    machine.check_invariants();
}

#[test]
fn the_last_enabled_admin_cannot_be_disabled_or_demoted() {
    let mut machine = StateMachine::default();
    let disable = |identity: &str| admin(AdminCommand::SetEnabled { identity: identity.into(), enabled: false });
    assert!(matches!(
        apply(&mut machine, 1, 1, &at(0, disable(ADMIN_IDENTITY))),
        Err(ServerError::InvalidArgument { .. })
    ));
    let promote =
        AdminCommand::Grant { identity: "ops".into(), target: AclTarget::Admin, permission: Permission::Admin };
    apply(&mut machine, 2, 1, &at(1, admin(promote))).unwrap();
    assert_eq!(
        apply(&mut machine, 3, 1, &at(2, disable(ADMIN_IDENTITY))),
        Ok(Response::AdminApplied { changed: true })
    );
    // Now ops is the last admin: it may not be demoted or disabled.
    let demote = Op::Admin {
        identity: "ops".into(),
        command: AdminCommand::Revoke { identity: "ops".into(), target: AclTarget::Admin },
    };
    assert!(matches!(apply(&mut machine, 4, 1, &at(3, demote)), Err(ServerError::InvalidArgument { .. })));
    let by_ops = Op::Admin {
        identity: "ops".into(),
        command: AdminCommand::SetEnabled { identity: "ops".into(), enabled: false },
    };
    assert!(matches!(apply(&mut machine, 5, 1, &at(4, by_ops)), Err(ServerError::InvalidArgument { .. })));
    assert!(machine.access().is_admin("ops") && !machine.access().is_admin(ADMIN_IDENTITY));
}

#[test]
fn the_digest_hashes_a_commands_encoding_without_buffering_it() {
    // Stored digests are in snapshots: the streamed hash must equal the hash of the encoding.
    let command = Command::KvPut { key: b"k".to_vec(), value: vec![7; 100_000] };
    let encoded = postcard::to_stdvec(&command).unwrap();
    assert_eq!(command_digest(&command), distsync::wire::fnv1a(&encoded));
    assert_ne!(command_digest(&command), command_digest(&kv_put("k", "other")));
}
