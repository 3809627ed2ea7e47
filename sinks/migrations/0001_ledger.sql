-- shopflow's MySQL ledger (SPEC §5.2, §5.3): see sinks/src/mysql.rs and docs/sink-schemas.md.
-- Runs on MariaDB 10.x/11.x and MySQL 8. Released migrations are never edited (sqlx checks
-- their checksums): change the schema with a new file 0002_….sql.
--
-- Times are epoch milliseconds (UTC instants); `as_of` is the batch (pipeline frontier T)
-- that wrote the row. Money that sums many entries is DECIMAL(39,0), which holds any i128.
-- Strings compare by code point (utf8mb4_bin), as Rust orders them.

CREATE TABLE IF NOT EXISTS points_entries (
    id          VARCHAR(96)                    NOT NULL,
    member_id   BIGINT UNSIGNED                NOT NULL,
    order_id    BIGINT UNSIGNED                NOT NULL,
    cause       ENUM('confirmed', 'refund')    NOT NULL,
    ts          BIGINT UNSIGNED                NOT NULL,
    rate_bp     INT                            NOT NULL,
    amount      BIGINT                         NOT NULL,
    points      BIGINT                         NOT NULL,
    as_of       BIGINT UNSIGNED                NOT NULL,
    PRIMARY KEY (id),
    KEY points_by_member (member_id, ts)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS settlement_entries (
    id            VARCHAR(128)                 NOT NULL,
    seller_id     BIGINT UNSIGNED              NOT NULL,
    order_id      BIGINT UNSIGNED              NOT NULL,
    line_no       BIGINT UNSIGNED              NOT NULL,
    sku           BIGINT UNSIGNED              NOT NULL,
    cause         ENUM('confirmed', 'refund')  NOT NULL,
    ts            BIGINT UNSIGNED              NOT NULL,
    qty           BIGINT                       NOT NULL,
    unit_price    BIGINT                       NOT NULL,
    commission_bp INT                          NOT NULL,
    gross         BIGINT                       NOT NULL,
    commission    BIGINT                       NOT NULL,
    payment_fee   BIGINT                       NOT NULL,
    payout        BIGINT                       NOT NULL,
    as_of         BIGINT UNSIGNED              NOT NULL,
    PRIMARY KEY (id),
    KEY settlements_by_seller (seller_id, ts)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per (seller, KST week) with entries; `final` once as_of >= week_end.
-- week_start_date is the Monday as a KST date, NULL past 9999-12-31 (DATE's range).
CREATE TABLE IF NOT EXISTS payouts (
    seller_id       BIGINT UNSIGNED  NOT NULL,
    week_start      BIGINT UNSIGNED  NOT NULL,
    week_start_date DATE             NULL,
    week_end        BIGINT UNSIGNED  NOT NULL,
    amount          DECIMAL(39, 0)   NOT NULL,
    entries         BIGINT UNSIGNED  NOT NULL,
    `final`         BOOL             NOT NULL DEFAULT FALSE,
    as_of           BIGINT UNSIGNED  NOT NULL,
    PRIMARY KEY (seller_id, week_start),
    KEY payouts_open (`final`, week_end)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per (seller, KST month) with entries; `final` once as_of >= month_end.
-- month is 'YYYY-MM' (KST); VARCHAR since the contract's times reach years past 9999.
CREATE TABLE IF NOT EXISTS tax_invoices (
    seller_id    BIGINT UNSIGNED  NOT NULL,
    month_start  BIGINT UNSIGNED  NOT NULL,
    month        VARCHAR(10)      NOT NULL,
    month_end    BIGINT UNSIGNED  NOT NULL,
    supply       DECIMAL(39, 0)   NOT NULL,
    vat          DECIMAL(39, 0)   NOT NULL,
    total        DECIMAL(39, 0)   NOT NULL,
    entries      BIGINT UNSIGNED  NOT NULL,
    `final`      BOOL             NOT NULL DEFAULT FALSE,
    as_of        BIGINT UNSIGNED  NOT NULL,
    PRIMARY KEY (seller_id, month_start),
    KEY invoices_open (`final`, month_end)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A copy of the member grades (the serving copy is the API's view store).
CREATE TABLE IF NOT EXISTS members (
    member_id   BIGINT UNSIGNED  NOT NULL,
    grade       VARCHAR(8)       NOT NULL,
    spend_6m    DECIMAL(39, 0)   NOT NULL,
    accrual_bp  INT              NOT NULL,
    wow         BOOL             NOT NULL,
    as_of       BIGINT UNSIGNED  NOT NULL,
    PRIMARY KEY (member_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Known sellers; as_of = the batch in which the seller became known.
CREATE TABLE IF NOT EXISTS sellers (
    seller_id  BIGINT UNSIGNED  NOT NULL,
    as_of      BIGINT UNSIGNED  NOT NULL,
    PRIMARY KEY (seller_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The as_of each writer has committed (sink 'ledger': the MysqlLedger). NULL = nothing yet.
CREATE TABLE IF NOT EXISTS sink_progress (
    sink        VARCHAR(64)      NOT NULL,
    as_of       BIGINT UNSIGNED  NULL,
    updated_at  TIMESTAMP(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (sink)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
