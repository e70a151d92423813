-- Version 2: tokens die with their credential, accounts can be locked and updated, names are unique
-- case-insensitively, and an organization being deleted takes no new objects.

-- A user's id never repeats (a re-created name never inherits old tokens); token_gen grows on every
-- password change, lock or unlock, which ends every token issued before.
ALTER TABLE users ADD COLUMN id BIGSERIAL;
ALTER TABLE users ADD COLUMN token_gen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN family_name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN given_name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN nickname TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX users_id ON users (id);
CREATE UNIQUE INDEX users_name_ci ON users (lower(name));
CREATE UNIQUE INDEX users_email_ci ON users (lower(email));

ALTER TABLE organizations ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE organizations ADD COLUMN delete_in_progress BOOLEAN NOT NULL DEFAULT false;
CREATE UNIQUE INDEX organizations_name_ci ON organizations (lower(name));
CREATE INDEX api_keys_org ON api_keys (org);

-- mTLS to each region's controller: the CA its certificate chains to and the name it carries (empty CA:
-- a controller serving plaintext).
ALTER TABLE controllers ADD COLUMN ca_cert TEXT NOT NULL DEFAULT '';
ALTER TABLE controllers ADD COLUMN server_name TEXT NOT NULL DEFAULT '';
