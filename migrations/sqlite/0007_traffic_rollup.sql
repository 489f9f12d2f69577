-- SQLite twin of migrations/postgres/0007_traffic_rollup.sql. The overview's traffic rollup:
-- requests and 5xx errors per UTC minute and hour and latency bin, kept for two days.

CREATE TABLE traffic_minutely (
    bucket    BIGINT NOT NULL,
    series    BIGINT NOT NULL,
    bin       BIGINT NOT NULL,
    requests  BIGINT NOT NULL,
    errors    BIGINT NOT NULL,
    PRIMARY KEY (bucket, series, bin)
);

CREATE TABLE traffic_hourly (
    bucket    BIGINT NOT NULL,
    series    BIGINT NOT NULL,
    bin       BIGINT NOT NULL,
    requests  BIGINT NOT NULL,
    errors    BIGINT NOT NULL,
    PRIMARY KEY (bucket, series, bin)
);

-- Records of the last two days written before this migration (`at` is RFC 3339 in UTC, so
-- text order is time order).
INSERT INTO traffic_minutely (bucket, series, bin, requests, errors)
SELECT CAST(strftime('%s', at) AS INTEGER) / 60, 0,
       CASE WHEN latency_us < 1 THEN 0
            ELSE length(CAST(latency_us AS TEXT)) * 100 + CAST(substr(CAST(latency_us AS TEXT), 1, 2) AS INTEGER) END,
       COUNT(*), SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END)
FROM usage_records WHERE at >= strftime('%Y-%m-%dT%H:%M:%S', 'now', '-2 days') GROUP BY 1, 2, 3
UNION ALL
SELECT CAST(strftime('%s', at) AS INTEGER) / 60, 1,
       CASE WHEN latency_us - upstream_us < 1 THEN 0
            ELSE length(CAST(latency_us - upstream_us AS TEXT)) * 100
                 + CAST(substr(CAST(latency_us - upstream_us AS TEXT), 1, 2) AS INTEGER) END,
       COUNT(*), 0
FROM usage_records WHERE at >= strftime('%Y-%m-%dT%H:%M:%S', 'now', '-2 days') AND upstream_us IS NOT NULL
GROUP BY 1, 2, 3;

INSERT INTO traffic_hourly (bucket, series, bin, requests, errors)
SELECT bucket / 60, series, bin, SUM(requests), SUM(errors) FROM traffic_minutely GROUP BY 1, 2, 3;
