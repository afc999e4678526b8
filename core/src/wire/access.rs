//! Identities and access control on the wire: who a client is, what a grant allows, the admin
//! commands that change grants and identities, and what `acl list` / `identity list` answer.
//!
//! A client's **identity** is the name its certificate carries as `NAME.client.distsync`
//! (`distsync certs client --name NAME`). The identity [`ADMIN_IDENTITY`] may do everything;
//! any other identity may do nothing until granted. A grant names a resource, a kind of name
//! and a prefix (`lock:team-a/`), and a [`Permission`]; `write` implies `read`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ServerError;

#[allow(unused_imports)] // for intra-doc links
use super::{Query, Request};

/// The identity that may do everything, like etcd's `root`. The client certificate that
/// `distsync certs init` makes carries it.
pub const ADMIN_IDENTITY: &str = "admin";

/// The DNS name suffix that marks a certificate's identity: `NAME.client.distsync`.
pub const CLIENT_NAME_SUFFIX: &str = ".client.distsync";

/// The only name of client certificates made before identities existed; it stands for
/// [`ADMIN_IDENTITY`], which is what that certificate was (the cluster's one client).
pub const LEGACY_CLIENT_NAME: &str = "client.distsync";

/// Longest identity name, in bytes: names are identifiers and travel in every write.
pub const IDENTITY_BYTES_MAX: usize = 64;

/// Grants one identity may have. Each is checked by a scan on every request the identity makes,
/// so the list stays short; many grants usually mean prefixes that should be one.
pub const GRANTS_PER_IDENTITY_MAX: usize = 256;

/// Identities the cluster keeps grants or a disabled mark for. Bounds the state one admin
/// mistake (a script granting in a loop) can pin.
pub const IDENTITIES_MAX: usize = 10_000;

/// Identities listed per page by [`Query::Identities`].
pub const IDENTITY_LIST_PAGE_MAX: usize = 100;

/// Checks an identity name: 1..=[`IDENTITY_BYTES_MAX`] of `[a-z0-9._-]`.
///
/// ```
/// assert!(distsync::wire::validate_identity("billing-worker.eu").is_ok());
/// assert!(distsync::wire::validate_identity("Alice").is_err());
/// ```
///
/// # Errors
///
/// [`ServerError::InvalidArgument`] saying what is wrong.
pub fn validate_identity(name: &str) -> Result<(), ServerError> {
    let valid = !name.is_empty()
        && name.len() <= IDENTITY_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ServerError::InvalidArgument {
            reason: format!(
                "identity {name:?} must be 1 to {IDENTITY_BYTES_MAX} characters of a-z, 0-9, '.', '_', '-'"
            ),
        })
    }
}

/// The kind of name a grant covers.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// Keys of the replicated register.
    Kv,
    /// Lock names.
    Lock,
    /// Queue names (a dead-letter queue `NAME.dlq` is a queue of its own name).
    Queue,
    /// Cache keys.
    Cache,
}

impl ResourceKind {
    /// The prefix of a resource of this kind, as written in grants: `kv`, `lock`, `queue`, `cache`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Kv => "kv",
            ResourceKind::Lock => "lock",
            ResourceKind::Queue => "queue",
            ResourceKind::Cache => "cache",
        }
    }
}

/// What a grant allows. `Write` implies `Read`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Reads: `kv get`, `cache get`, `lock show`, `lock list`, `queue stats`, `queue list`.
    Read,
    /// Changes: puts, deletes, lock acquire and release, queue put, get and ack, …
    Write,
    /// Everything, including grants and identities.
    Admin,
}

impl Permission {
    /// Lowercase name, as written in grants and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = ServerError;

    fn from_str(text: &str) -> Result<Self, ServerError> {
        match text {
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            _ => Err(ServerError::InvalidArgument {
                reason: format!(
                    "permission {text:?} is neither read nor write (admin is granted as `acl grant NAME admin`)"
                ),
            }),
        }
    }
}

/// Names of one kind that start with a prefix: `lock:team-a/` (every lock whose name starts
/// with `team-a/`), `kv:` (every key).
///
/// ```
/// use distsync::wire::{Resource, ResourceKind};
///
/// let resource: Resource = "lock:team-a/".parse()?;
/// assert_eq!(resource.kind, ResourceKind::Lock);
/// assert!(resource.covers(ResourceKind::Lock, b"team-a/report"));
/// assert!(!resource.covers(ResourceKind::Queue, b"team-a/report"));
/// assert_eq!(resource.to_string(), "lock:team-a/");
/// # Ok::<(), distsync::ServerError>(())
/// ```
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    /// The kind of name.
    pub kind: ResourceKind,
    /// The prefix; empty covers every name of the kind.
    pub prefix: Vec<u8>,
}

impl Resource {
    /// Whether this resource covers the name `name` of kind `kind`.
    pub fn covers(&self, kind: ResourceKind, name: &[u8]) -> bool {
        self.kind == kind && name.starts_with(&self.prefix)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), String::from_utf8_lossy(&self.prefix))
    }
}

impl FromStr for Resource {
    type Err = ServerError;

    fn from_str(text: &str) -> Result<Self, ServerError> {
        let invalid = || ServerError::InvalidArgument {
            reason: format!("resource {text:?} is not kv:PREFIX, lock:PREFIX, queue:PREFIX or cache:PREFIX"),
        };
        let (kind, prefix) = text.split_once(':').ok_or_else(invalid)?;
        let kind = match kind {
            "kv" => ResourceKind::Kv,
            "lock" => ResourceKind::Lock,
            "queue" => ResourceKind::Queue,
            "cache" => ResourceKind::Cache,
            _ => return Err(invalid()),
        };
        let resource = Resource { kind, prefix: prefix.as_bytes().to_vec() };
        resource.validate()?;
        Ok(resource)
    }
}

impl Resource {
    /// Checks the prefix against the longest name of its kind.
    ///
    /// # Errors
    ///
    /// [`ServerError::InvalidArgument`] when the prefix is longer than any name could be.
    pub fn validate(&self) -> Result<(), ServerError> {
        let max = match self.kind {
            ResourceKind::Kv | ResourceKind::Cache => super::KEY_BYTES_MAX,
            ResourceKind::Lock => super::LOCK_NAME_BYTES_MAX,
            ResourceKind::Queue => super::QUEUE_NAME_BYTES_MAX,
        };
        if self.prefix.len() > max {
            return Err(ServerError::InvalidArgument {
                reason: format!(
                    "a {} prefix of {} bytes exceeds the longest name ({max} bytes)",
                    self.kind.as_str(),
                    self.prefix.len()
                ),
            });
        }
        Ok(())
    }
}

/// What `acl grant` adds and `acl revoke` removes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum AclTarget {
    /// Every permission, including grants and identities.
    Admin,
    /// A resource; granted with a permission.
    Resource(Resource),
}

impl FromStr for AclTarget {
    type Err = ServerError;

    fn from_str(text: &str) -> Result<Self, ServerError> {
        if text == "admin" {
            Ok(AclTarget::Admin)
        } else {
            text.parse().map(AclTarget::Resource)
        }
    }
}

impl fmt::Display for AclTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclTarget::Admin => f.write_str("admin"),
            AclTarget::Resource(resource) => resource.fmt(f),
        }
    }
}

/// A change to access control, applied through the Raft log so that it takes effect on every
/// node at the same log position. Only an admin identity may send one ([`Request::Admin`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// Grants `permission` on `target` to `identity` (replacing an earlier permission on the same
    /// target). `permission` is ignored for [`AclTarget::Admin`].
    Grant {
        /// Who.
        identity: String,
        /// On what.
        target: AclTarget,
        /// What.
        permission: Permission,
    },
    /// Removes the grant on `target` from `identity`.
    Revoke {
        /// Who.
        identity: String,
        /// The grant's target, as granted.
        target: AclTarget,
    },
    /// Disables or enables an identity. A disabled identity's sessions end at once (its locks
    /// are released, its deliveries returned) and every request it makes is refused, on every
    /// node, until it is enabled again; no certificate needs re-issuing.
    SetEnabled {
        /// Who.
        identity: String,
        /// False disables.
        enabled: bool,
    },
}

impl AdminCommand {
    /// Checks names and sizes.
    ///
    /// # Errors
    ///
    /// [`ServerError::InvalidArgument`] naming what is wrong.
    pub fn validate(&self) -> Result<(), ServerError> {
        let (identity, target) = match self {
            AdminCommand::Grant { identity, target, .. } | AdminCommand::Revoke { identity, target } => {
                (identity, Some(target))
            }
            AdminCommand::SetEnabled { identity, .. } => (identity, None),
        };
        validate_identity(identity)?;
        if let Some(AclTarget::Resource(resource)) = target {
            resource.validate()?;
        }
        if let AdminCommand::Grant { target: AclTarget::Resource(_), permission: Permission::Admin, .. } = self {
            return Err(ServerError::InvalidArgument {
                reason: "admin is granted on its own (`acl grant NAME admin`), not on a resource".into(),
            });
        }
        Ok(())
    }
}

/// One identity as `acl list` and `identity list` show it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IdentityInfo {
    /// The identity.
    pub identity: String,
    /// Whether it has every permission ([`ADMIN_IDENTITY`] always has).
    pub admin: bool,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Its grants, in resource order.
    pub grants: Vec<(Resource, Permission)>,
    /// Sessions it has open now.
    pub sessions: u64,
}
