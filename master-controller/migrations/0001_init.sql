-- Master controller schema, version 1: accounts, organizations, roles, regions, API keys, audit log.

CREATE TABLE users (
    name        TEXT PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    passhash    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
    name        TEXT PRIMARY KEY,
    type        TEXT NOT NULL CHECK (type IN ('developer', 'operator')),
    address     TEXT NOT NULL DEFAULT '',
    phone       TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Admin roles have org = '' (they apply to every organization).
CREATE TABLE roles (
    username    TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    org         TEXT NOT NULL,
    role        TEXT NOT NULL,
    PRIMARY KEY (username, org)
);
CREATE INDEX roles_org ON roles (org);

CREATE TABLE controllers (
    region      TEXT PRIMARY KEY,
    address     TEXT NOT NULL,
    notify_addr TEXT NOT NULL DEFAULT '',
    influxdb    TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    org         TEXT NOT NULL,
    -- [{"resource": "appinsts", "action": "manage"}, ...]: a subset of the creator's permissions in org
    permissions JSONB NOT NULL,
    keyhash     TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE audit (
    id          BIGSERIAL PRIMARY KEY,
    start_time  TIMESTAMPTZ NOT NULL,
    duration_ms BIGINT NOT NULL,
    username    TEXT NOT NULL DEFAULT '',
    org         TEXT NOT NULL DEFAULT '',
    region      TEXT NOT NULL DEFAULT '',
    -- the request path, e.g. /api/v1/auth/ctrl/CreateFlavor
    operation   TEXT NOT NULL,
    status      INT NOT NULL,
    client_ip   TEXT NOT NULL DEFAULT '',
    request     JSONB,
    response    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_user_time ON audit (username, start_time);
CREATE INDEX audit_org_time ON audit (org, start_time);
