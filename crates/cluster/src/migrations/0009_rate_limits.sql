-- Rate limits shared by every API process (login attempts and the public endpoints per
-- client address): one token bucket per (scope, client), updated in one statement
-- (`visage_cluster::ratelimit::take`). UNLOGGED: fast, and emptied after a crash, which only
-- forgives recent attempts.
CREATE UNLOGGED TABLE rate_bucket (
    scope TEXT NOT NULL,
    client TEXT NOT NULL,
    tokens DOUBLE PRECISION NOT NULL,
    -- Unix milliseconds of the last take.
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, client)
);
