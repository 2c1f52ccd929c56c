-- The Track job written as plain DuckDB SQL: the peer of bench/duckdb_peer.py.
-- {raw} is the glob of the raw NDJSON files, {out} the output folder.
-- It does less than Track (no quarantine, no clamping or truncation, no canonical JSON for
-- dedup, no incremental state), so it is a lower bound on what the same job costs in DuckDB.

CREATE TEMP TABLE raw AS
SELECT
    event,
    user_id,
    CAST("timestamp" AS TIMESTAMPTZ) AS ts,
    metadata::VARCHAR AS metadata,
    filename
FROM read_json(
    '{raw}',
    format = 'newline_delimited',
    columns = {event: 'VARCHAR', user_id: 'VARCHAR', "timestamp": 'VARCHAR', metadata: 'JSON'},
    filename = true
);

-- Dedup: one copy per event, user, instant and metadata, the first file's.
CREATE TEMP TABLE events AS
SELECT event, user_id, ts, metadata, filename, CAST(timezone('UTC', ts) AS DATE) AS date
FROM raw
QUALIFY row_number() OVER (PARTITION BY event, user_id, ts, metadata ORDER BY filename) = 1;

COPY (SELECT * FROM events) TO '{out}/events' (FORMAT parquet, PARTITION_BY (date));

COPY (
    SELECT date, event, user_id, count(*) AS count FROM events GROUP BY ALL
) TO '{out}/counts.parquet' (FORMAT parquet);

-- Sessions: each stop as-of joined to the latest play of its user, first stop per play.
COPY (
    WITH
        plays AS (SELECT user_id, ts FROM events WHERE event = 'play'),
        stops AS (SELECT user_id, ts FROM events WHERE event = 'stop'),
        matched AS (
            SELECT s.user_id, p.ts AS play_at, s.ts AS stop_at
            FROM stops s ASOF JOIN plays p ON s.user_id = p.user_id AND s.ts >= p.ts
        )
    SELECT
        CAST(timezone('UTC', play_at) AS DATE) AS date,
        user_id,
        play_at,
        epoch_ms(stop_at) - epoch_ms(play_at) AS duration_ms
    FROM matched
    QUALIFY row_number() OVER (PARTITION BY user_id, play_at ORDER BY stop_at) = 1
) TO '{out}/sessions.parquet' (FORMAT parquet);
