//! Roles and permissions, as MobiledgeX defined them (`WIRE.md` §3). A role is held in one organization
//! (admin roles in all, under the org `""`); a permission is a `(resource, action)` pair with action `view`
//! or `manage` (manage implies view).

use std::collections::{BTreeMap, BTreeSet};

pub const ADMIN_MANAGER: &str = "AdminManager";
pub const ADMIN_CONTRIBUTOR: &str = "AdminContributor";
pub const ADMIN_VIEWER: &str = "AdminViewer";
pub const DEVELOPER_MANAGER: &str = "DeveloperManager";
pub const DEVELOPER_CONTRIBUTOR: &str = "DeveloperContributor";
pub const DEVELOPER_VIEWER: &str = "DeveloperViewer";
pub const OPERATOR_MANAGER: &str = "OperatorManager";
pub const OPERATOR_CONTRIBUTOR: &str = "OperatorContributor";
pub const OPERATOR_VIEWER: &str = "OperatorViewer";

pub const ROLES: &[&str] = &[
    ADMIN_CONTRIBUTOR,
    ADMIN_MANAGER,
    ADMIN_VIEWER,
    DEVELOPER_CONTRIBUTOR,
    DEVELOPER_MANAGER,
    DEVELOPER_VIEWER,
    OPERATOR_CONTRIBUTOR,
    OPERATOR_MANAGER,
    OPERATOR_VIEWER,
];

pub const CONTROLLERS: &str = "controllers";
pub const USERS: &str = "users";
pub const APPS: &str = "apps";
pub const APPINSTS: &str = "appinsts";
pub const CLUSTERINSTS: &str = "clusterinsts";
pub const CLOUDLETS: &str = "cloudlets";
pub const CLOUDLET_ANALYTICS: &str = "cloudletanalytics";
pub const FLAVORS: &str = "flavors";
pub const CONFIG: &str = "config";

pub const VIEW: &str = "view";
pub const MANAGE: &str = "manage";

const DEVELOPER: &[&str] = &[APPS, APPINSTS, CLUSTERINSTS];
const OPERATOR: &[&str] = &[CLOUDLETS, CLOUDLET_ANALYTICS];

/// Every `(role, resource, action)` of the permission table.
pub fn table() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut t = Vec::new();
    let mut add = |role, resources: &[&'static str], manage: bool| {
        for r in resources {
            t.push((role, *r, VIEW));
            if manage {
                t.push((role, *r, MANAGE));
            }
        }
    };
    add(ADMIN_MANAGER, &[CONTROLLERS, FLAVORS, CONFIG, USERS], true);
    add(ADMIN_MANAGER, DEVELOPER, true);
    add(ADMIN_MANAGER, OPERATOR, true);
    add(ADMIN_CONTRIBUTOR, DEVELOPER, true);
    add(ADMIN_CONTRIBUTOR, OPERATOR, true);
    add(ADMIN_CONTRIBUTOR, &[USERS], false);
    add(ADMIN_VIEWER, &[USERS], false);
    add(ADMIN_VIEWER, DEVELOPER, false);
    add(ADMIN_VIEWER, OPERATOR, false);
    add(DEVELOPER_MANAGER, DEVELOPER, true);
    add(DEVELOPER_MANAGER, &[USERS], true);
    add(DEVELOPER_MANAGER, &[CLOUDLETS, FLAVORS], false);
    add(DEVELOPER_CONTRIBUTOR, DEVELOPER, true);
    add(DEVELOPER_CONTRIBUTOR, &[USERS, CLOUDLETS, FLAVORS], false);
    add(DEVELOPER_VIEWER, DEVELOPER, false);
    add(DEVELOPER_VIEWER, &[USERS, CLOUDLETS, FLAVORS], false);
    add(OPERATOR_MANAGER, OPERATOR, true);
    add(OPERATOR_MANAGER, &[USERS], true);
    add(OPERATOR_CONTRIBUTOR, OPERATOR, true);
    add(OPERATOR_CONTRIBUTOR, &[USERS], false);
    add(OPERATOR_VIEWER, OPERATOR, false);
    add(OPERATOR_VIEWER, &[USERS], false);
    t
}

pub fn is_admin_role(role: &str) -> bool {
    role.starts_with("Admin")
}

/// Every `(resource, action)` a role grants.
pub fn perms_of(role: &str) -> BTreeSet<(String, String)> {
    table()
        .into_iter()
        .filter(|(r, _, _)| *r == role)
        .map(|(_, res, a)| (res.to_string(), a.to_string()))
        .collect()
}

/// What a caller may do: org → permissions (admin permissions under `""`).
#[derive(Clone, Debug, Default)]
pub struct Grants(pub BTreeMap<String, BTreeSet<(String, String)>>);

impl Grants {
    /// From role assignments `(org, role)`.
    pub fn from_roles(roles: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut g = Self::default();
        for (org, role) in roles {
            g.0.entry(org).or_default().extend(perms_of(&role));
        }
        g
    }

    fn holds(&self, org: &str, resource: &str, action: &str) -> bool {
        self.0
            .get(org)
            .is_some_and(|p| p.contains(&(resource.to_string(), action.to_string())))
    }

    /// Whether the caller may do `action` on `resource` of `org` (`""`: region-wide objects).
    pub fn allows(&self, resource: &str, action: &str, org: &str) -> bool {
        self.holds("", resource, action) || (!org.is_empty() && self.holds(org, resource, action))
    }

    /// Whether the caller holds any admin permission.
    pub fn is_admin(&self) -> bool {
        self.0.get("").is_some_and(|p| !p.is_empty())
    }

    /// Organizations whose `resource` the caller may view; `None` means all (admin).
    pub fn viewable_orgs(&self, resource: &str) -> Option<BTreeSet<String>> {
        if self.holds("", resource, VIEW) {
            return None;
        }
        Some(
            self.0
                .keys()
                .filter(|o| self.holds(o, resource, VIEW))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(org: &str, role: &str) -> Grants {
        Grants::from_roles([(org.to_string(), role.to_string())])
    }

    #[test]
    fn roles_mean_what_mobiledgex_meant() {
        let dev = g("acme", DEVELOPER_CONTRIBUTOR);
        assert!(dev.allows(APPS, MANAGE, "acme"));
        assert!(!dev.allows(APPS, MANAGE, "other"));
        assert!(!dev.allows(USERS, MANAGE, "acme"));
        assert!(!dev.allows(FLAVORS, MANAGE, ""));
        assert!(dev.allows(CLOUDLETS, VIEW, "acme"));
        let viewer = g("acme", DEVELOPER_VIEWER);
        assert!(viewer.allows(APPINSTS, VIEW, "acme") && !viewer.allows(APPINSTS, MANAGE, "acme"));
        let op = g("tmus", OPERATOR_MANAGER);
        assert!(op.allows(CLOUDLETS, MANAGE, "tmus") && op.allows(USERS, MANAGE, "tmus"));
        assert!(!op.allows(APPS, VIEW, "tmus"));
        let admin = g("", ADMIN_MANAGER);
        assert!(admin.allows(FLAVORS, MANAGE, "") && admin.allows(CLOUDLETS, MANAGE, "any"));
        assert!(!g("", ADMIN_CONTRIBUTOR).allows(FLAVORS, MANAGE, ""));
        assert_eq!(admin.viewable_orgs(CLOUDLETS), None);
        assert_eq!(dev.viewable_orgs(APPS), Some(["acme".to_string()].into()));
    }
}
