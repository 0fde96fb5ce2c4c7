-- Analysing Pointsman's exposure log (SPEC 3.1) with plain SQL.
--
-- Tables:
--   exposures: the exposure log loaded as is (one row per JSON line):
--              timestamp, experiment_id, variation_id, user_id, id_source,
--              hash_version, bucket, route, request_id, replica
--   orders:    an outcome table of your own: user_id, ordered_at, amount
--
-- Each replica logs a user's first exposure once, so a user served by
-- several replicas has several rows: keep the earliest per user and
-- experiment. Only outcomes after that first exposure count.

WITH first_exposure AS (
  SELECT experiment_id, variation_id, user_id, MIN(timestamp) AS exposed_at
  FROM exposures
  WHERE experiment_id = 'checkout-redesign'
  GROUP BY experiment_id, variation_id, user_id
),
per_user AS (
  SELECT
    f.variation_id,
    f.user_id,
    COUNT(o.user_id) > 0 AS converted,
    COALESCE(SUM(o.amount), 0) AS revenue
  FROM first_exposure f
  LEFT JOIN orders o
    ON o.user_id = f.user_id
   AND o.ordered_at >= f.exposed_at
  GROUP BY f.variation_id, f.user_id
)
SELECT
  variation_id,
  COUNT(*) AS users,
  AVG(CASE WHEN converted THEN 1.0 ELSE 0.0 END) AS conversion_rate,
  AVG(revenue) AS revenue_per_user
FROM per_user
GROUP BY variation_id
ORDER BY variation_id;
