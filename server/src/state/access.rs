//! Access control: which identity may read or write which names, which identities are admins,
//! and which are disabled. Replicated like everything else in the state machine, so a grant or a
//! revoke takes effect on every node at the same log position and is in snapshots.
//!
//! A check scans the caller's grants of one kind (at most [`GRANTS_PER_IDENTITY_MAX`]); the
//! [`ADMIN_IDENTITY`] and admins skip the scan, so the common case costs one map lookup.

use std::collections::BTreeMap;

use distsync::wire::{AclTarget, AdminCommand, IdentityInfo, Permission, Resource, ResourceKind, ADMIN_IDENTITY};
use distsync::ServerError;
use serde::{Deserialize, Serialize};

use super::limits::{reached, Limits};

/// What one identity may do beyond nothing.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    admin: bool,
    disabled: bool,
    grants: BTreeMap<Resource, Permission>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        !self.admin && !self.disabled && self.grants.is_empty()
    }
}

/// Grants and disabled marks by identity.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessControl {
    identities: BTreeMap<String, Entry>,
}

impl AccessControl {
    /// Refuses a disabled identity.
    ///
    /// # Errors
    ///
    /// `IdentityDisabled`.
    pub fn check_enabled(&self, identity: &str) -> Result<(), ServerError> {
        match self.identities.get(identity) {
            Some(entry) if entry.disabled => Err(ServerError::IdentityDisabled { identity: identity.to_string() }),
            _ => Ok(()),
        }
    }

    /// Whether `identity` is enabled and may do everything.
    pub fn is_admin(&self, identity: &str) -> bool {
        match self.identities.get(identity) {
            Some(entry) => !entry.disabled && (entry.admin || identity == ADMIN_IDENTITY),
            None => identity == ADMIN_IDENTITY,
        }
    }

    /// Whether `identity` may act on the name `name` of `kind` with `needed` (which is `Read`
    /// or `Write`); a disabled identity may not.
    pub fn allows(&self, identity: &str, kind: ResourceKind, name: &[u8], needed: Permission) -> bool {
        let Some(entry) = self.identities.get(identity) else { return identity == ADMIN_IDENTITY };
        if entry.disabled {
            return false;
        }
        if entry.admin || identity == ADMIN_IDENTITY {
            return true;
        }
        let first = Resource { kind, prefix: Vec::new() };
        entry
            .grants
            .range(first..)
            .take_while(|(resource, _)| resource.kind == kind)
            .any(|(resource, permission)| *permission >= needed && name.starts_with(&resource.prefix))
    }

    /// [`AccessControl::allows`], as the error a caller gets.
    ///
    /// # Errors
    ///
    /// `IdentityDisabled`, or `PermissionDenied` naming the resource and permission needed.
    pub fn check(
        &self,
        identity: &str,
        kind: ResourceKind,
        name: &[u8],
        needed: Permission,
    ) -> Result<(), ServerError> {
        if self.allows(identity, kind, name, needed) {
            return Ok(());
        }
        self.check_enabled(identity)?;
        let resource = Resource { kind, prefix: name.to_vec() }.to_string();
        Err(ServerError::PermissionDenied { identity: identity.to_string(), resource, needed })
    }

    /// Refuses anyone but an enabled admin.
    ///
    /// # Errors
    ///
    /// `IdentityDisabled` or `PermissionDenied` (needing `admin`).
    pub fn check_admin(&self, identity: &str) -> Result<(), ServerError> {
        if self.is_admin(identity) {
            return Ok(());
        }
        self.check_enabled(identity)?;
        Err(ServerError::PermissionDenied {
            identity: identity.to_string(),
            resource: "admin".into(),
            needed: Permission::Admin,
        })
    }

    /// Applies an admin command (the caller was checked to be an admin); returns whether it
    /// changed anything.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a bad command, or one that would leave no enabled admin;
    /// `LimitReached` past `limits.grants_per_identity` or `limits.identities`.
    pub fn apply(&mut self, command: &AdminCommand, limits: &Limits) -> Result<bool, ServerError> {
        command.validate()?;
        let changed = match command {
            AdminCommand::Grant { identity, target, permission } => {
                if !self.identities.contains_key(identity) && self.identities.len() as u64 >= limits.identities {
                    return Err(identities_full(limits));
                }
                let entry = self.identities.entry(identity.clone()).or_default();
                match target {
                    AclTarget::Admin => !std::mem::replace(&mut entry.admin, true),
                    AclTarget::Resource(resource) => {
                        let grants = limits.grants_per_identity;
                        if !entry.grants.contains_key(resource) && entry.grants.len() as u64 >= grants {
                            return Err(reached(
                                "GRANTS_PER_IDENTITY_MAX",
                                grants,
                                format!("identity {identity} has {grants} grants; merge them into wider prefixes"),
                            ));
                        }
                        entry.grants.insert(resource.clone(), *permission) != Some(*permission)
                    }
                }
            }
            AdminCommand::Revoke { identity, target } => {
                if let AclTarget::Admin = target {
                    if identity == ADMIN_IDENTITY {
                        return Err(ServerError::InvalidArgument {
                            reason: "the admin identity is an admin by definition; disable it instead".into(),
                        });
                    }
                    if self.is_admin(identity) && self.enabled_admins_besides(identity) == 0 {
                        return Err(no_admin_left(identity));
                    }
                }
                let Some(entry) = self.identities.get_mut(identity) else { return Ok(false) };
                match target {
                    AclTarget::Admin => std::mem::replace(&mut entry.admin, false),
                    AclTarget::Resource(resource) => entry.grants.remove(resource).is_some(),
                }
            }
            AdminCommand::SetEnabled { identity, enabled: false } => {
                if self.is_admin(identity) && self.enabled_admins_besides(identity) == 0 {
                    return Err(no_admin_left(identity));
                }
                if !self.identities.contains_key(identity) && self.identities.len() as u64 >= limits.identities {
                    return Err(identities_full(limits));
                }
                !std::mem::replace(&mut self.identities.entry(identity.clone()).or_default().disabled, true)
            }
            AdminCommand::SetEnabled { identity, enabled: true } => match self.identities.get_mut(identity) {
                Some(entry) => std::mem::replace(&mut entry.disabled, false),
                None => false,
            },
        };
        let identity = match command {
            AdminCommand::Grant { identity, .. }
            | AdminCommand::Revoke { identity, .. }
            | AdminCommand::SetEnabled { identity, .. } => identity,
        };
        if self.identities.get(identity).is_some_and(Entry::is_empty) {
            self.identities.remove(identity);
        }
        Ok(changed)
    }

    /// Enabled admins other than `identity` (the [`ADMIN_IDENTITY`] counts unless disabled).
    fn enabled_admins_besides(&self, identity: &str) -> usize {
        let builtin = usize::from(identity != ADMIN_IDENTITY && self.is_admin(ADMIN_IDENTITY));
        builtin
            + self
                .identities
                .iter()
                .filter(|(name, entry)| {
                    name.as_str() != identity && name.as_str() != ADMIN_IDENTITY && entry.admin && !entry.disabled
                })
                .count()
    }

    /// Identities after `after` in name order, at most `max`: those with grants or a disabled
    /// mark, those with open sessions (counted in `with_sessions`) and the admin identity.
    /// Returns whether more follow.
    pub fn list(
        &self,
        after: Option<&str>,
        max: usize,
        with_sessions: &BTreeMap<String, u64>,
    ) -> (Vec<IdentityInfo>, bool) {
        let admin = ADMIN_IDENTITY.to_string();
        let start = |name: &&String| after.is_none_or(|after| name.as_str() > after);
        let mut names: Vec<&String> =
            self.identities.keys().chain(with_sessions.keys()).chain([&admin]).filter(start).collect();
        names.sort();
        names.dedup();
        let more = names.len() > max;
        let identities = names
            .into_iter()
            .take(max)
            .map(|name| {
                let entry = self.identities.get(name).cloned().unwrap_or_default();
                IdentityInfo {
                    identity: name.clone(),
                    admin: entry.admin || name == ADMIN_IDENTITY,
                    disabled: entry.disabled,
                    grants: entry.grants.into_iter().collect(),
                    sessions: with_sessions.get(name).copied().unwrap_or(0),
                }
            })
            .collect();
        (identities, more)
    }

    /// Panics on a broken bound, which would mean a bug.
    pub fn check_invariants(&self) {
        for (identity, entry) in &self.identities {
            assert!(!entry.is_empty(), "identity {identity} is kept without anything to keep");
        }
    }
}

fn no_admin_left(identity: &str) -> ServerError {
    ServerError::InvalidArgument {
        reason: format!("{identity} is the last enabled admin; grant admin to another identity first"),
    }
}

/// The refusal past `limits.identities`.
fn identities_full(limits: &Limits) -> ServerError {
    let identities = limits.identities;
    reached("IDENTITIES_MAX", identities, format!("{identities} identities have grants; revoke unused ones"))
}
