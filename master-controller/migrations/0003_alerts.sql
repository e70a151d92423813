-- Alert receivers (MobiledgeX's /auth/alertreceiver/*): where a user wants a region's alerts sent.
-- Webhook and Slack URLs carry credentials: they live in Vault (secret/mc/alertreceiver/<user>/<name>).
CREATE TABLE alert_receivers (
    name          TEXT NOT NULL,
    username      TEXT NOT NULL,
    type          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    region        TEXT NOT NULL DEFAULT '',
    email         TEXT NOT NULL DEFAULT '',
    slack_channel TEXT NOT NULL DEFAULT '',
    cloudlet_org  TEXT NOT NULL DEFAULT '',
    cloudlet_name TEXT NOT NULL DEFAULT '',
    app_org       TEXT NOT NULL DEFAULT '',
    app_name      TEXT NOT NULL DEFAULT '',
    app_ver       TEXT NOT NULL DEFAULT '',
    cluster_org   TEXT NOT NULL DEFAULT '',
    cluster_name  TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (username, name)
);

-- The alerts each region had firing at the MC's last look: a new one is announced once as firing and a
-- vanished one once as resolved, whichever MC replica notices first.
CREATE TABLE alerts_seen (
    region    TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    alert     JSONB NOT NULL,
    PRIMARY KEY (region, alert_key)
);
