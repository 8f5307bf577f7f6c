-- frameq schema v1 (DESIGN §4). Applied by `consumer --migrate` in one transaction.
CREATE TABLE extraction_items (
    id          bigserial PRIMARY KEY,
    platform    text NOT NULL CHECK (platform ~ '^[a-z0-9_-]{1,32}$'),
    code        text NOT NULL CHECK (code ~ '^[A-Za-z0-9_-]{1,128}$'),
    status      text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'processing', 'done', 'retrying', 'dead')),
    attempts    int NOT NULL DEFAULT 0,
    frame_count int,
    duration_ms bigint,
    width       int,
    height      int,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz,
    UNIQUE (platform, code)
);
CREATE INDEX extraction_items_status_idx ON extraction_items (status);

CREATE TABLE extraction_errors (
    id              bigserial PRIMARY KEY,
    item_id         bigint NOT NULL REFERENCES extraction_items (id),
    attempt         int NOT NULL,
    stage           text NOT NULL,
    error_class     text NOT NULL,
    message         text,
    worker          text,
    kafka_topic     text,
    kafka_partition int,
    kafka_offset    bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (item_id, attempt)
);

CREATE TABLE extraction_frames (
    item_id bigint NOT NULL REFERENCES extraction_items (id),
    idx     int NOT NULL,
    pts_ms  bigint NOT NULL,
    url     text NOT NULL,
    width   int,
    height  int,
    bytes   int,
    PRIMARY KEY (item_id, idx)
);
