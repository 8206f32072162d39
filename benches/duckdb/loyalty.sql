-- The metric contract (SPEC §1–§7, without the predictive model) as one DuckDB
-- script: what a careful analyst would otherwise write. Run by benches/duckdb/run.py,
-- which sets the variables `orders` (Parquet path), `out` (directory) and `threads`.
-- Defaults of config/example.yaml: dedupe on, returns net, month cohorts, 5 RFM bins
-- with the default segment map, churn window 365, min tenure 30, margin 1.0,
-- lifetime cap 10 years, ABC 0.8 / 0.95.

-- §1 steps 1–2: required values, before as_of (latest order date + 1 day).
CREATE TEMP TABLE raw AS SELECT * FROM read_parquet(getvariable('orders'));
CREATE TEMP TABLE present AS
SELECT * FROM raw
WHERE customer_id IS NOT NULL AND trim(CAST(customer_id AS VARCHAR)) <> ''
  AND order_id IS NOT NULL AND trim(CAST(order_id AS VARCHAR)) <> ''
  AND order_date IS NOT NULL AND amount IS NOT NULL AND isfinite(amount);
SET VARIABLE as_of = (SELECT max(order_date) + INTERVAL 1 DAY FROM present)::DATE;

-- Step 3: exact duplicate rows; step 4: nothing excluded (returns net).
CREATE TEMP TABLE lines AS
SELECT DISTINCT * FROM present WHERE order_date < getvariable('as_of');

-- Step 5: orders, value in integer micro-units; categories of positive lines.
CREATE TEMP TABLE orders AS
SELECT CAST(customer_id AS VARCHAR) AS customer_id,
       CAST(order_id AS VARCHAR) AS order_id,
       min(order_date)::DATE AS order_date,
       sum(CAST(round(amount * 1e6) AS BIGINT)) AS value,
       arg_min(channel, order_date) AS channel,
       list(DISTINCT category) FILTER (WHERE amount > 0 AND category IS NOT NULL) AS categories
FROM lines GROUP BY ALL;

-- §2 customers.
CREATE TEMP TABLE customers AS
WITH purchases AS (SELECT * FROM orders WHERE value > 0),
per_customer AS (
    SELECT customer_id,
           min(order_date) AS first_order_date,
           max(order_date) AS last_order_date,
           count(*) AS orders,
           arg_min(channel, (order_date, order_id)) AS channel,
           length(list_distinct(flatten(list(categories)))) AS categories
    FROM purchases
    GROUP BY customer_id
),
revenue AS (SELECT customer_id, sum(value) AS revenue_micros FROM orders GROUP BY customer_id)
SELECT p.*, r.revenue_micros, r.revenue_micros / 1e6 AS revenue,
       r.revenue_micros / 1e6 / p.orders AS aov,
       date_diff('day', p.last_order_date, getvariable('as_of')) AS recency_days,
       date_diff('day', p.first_order_date, getvariable('as_of')) AS tenure_days,
       date_trunc('month', p.first_order_date)::DATE AS cohort
FROM per_customer p JOIN revenue r USING (customer_id);

SET VARIABLE n = (SELECT count(*) FROM customers);
SET VARIABLE annual_churn = (SELECT avg(CASE WHEN recency_days > 365 THEN 1.0 ELSE 0.0 END) FROM customers);
SET VARIABLE lifetime = (SELECT CASE WHEN getvariable('annual_churn') = 0 THEN 10.0
                                     ELSE least(1.0 / getvariable('annual_churn'), 10.0) END);

-- §4 RFM, §5 ABC, §6.1–6.2 CLV.
CREATE TEMP TABLE scored AS
WITH ranked AS (
    SELECT *,
           1 + (5 * (rank() OVER (ORDER BY recency_days DESC) - 1)) // getvariable('n') AS r_score,
           1 + (5 * (rank() OVER (ORDER BY orders) - 1)) // getvariable('n') AS f_score,
           1 + (5 * (rank() OVER (ORDER BY revenue_micros) - 1)) // getvariable('n') AS m_score
    FROM customers
),
positive AS (
    SELECT customer_id,
           sum(revenue_micros) OVER (ORDER BY revenue_micros DESC, customer_id
                                     ROWS UNBOUNDED PRECEDING) - revenue_micros AS before,
           sum(revenue_micros) OVER () AS total
    FROM customers WHERE revenue_micros > 0
)
SELECT ranked.*,
       r_score::VARCHAR || f_score::VARCHAR || m_score::VARCHAR AS rfm_cell,
       (f_score + m_score + 1) // 2 AS fm,
       CASE WHEN p.before IS NULL THEN 'C'
            WHEN p.before::HUGEINT * 10 < p.total::HUGEINT * 8 THEN 'A'
            WHEN p.before::HUGEINT * 100 < p.total::HUGEINT * 95 THEN 'B'
            ELSE 'C' END AS abc_class,
       revenue AS historical_clv,
       aov * orders / greatest(tenure_days, 30) * 365.25 * getvariable('lifetime') AS formula_clv,
       revenue_micros / 1e6 / greatest(tenure_days, 30) * 365.25 AS annual_value
FROM ranked LEFT JOIN positive p USING (customer_id);

CREATE TEMP TABLE segmented AS
SELECT *,
       CASE
         WHEN r_score BETWEEN 4 AND 5 AND fm BETWEEN 4 AND 5 THEN 'Champions'
         WHEN r_score = 1 AND fm BETWEEN 4 AND 5 THEN 'Can''t Lose Them'
         WHEN r_score BETWEEN 4 AND 5 AND fm = 1 THEN 'New Customers'
         WHEN r_score BETWEEN 3 AND 4 AND fm = 1 THEN 'Promising'
         WHEN r_score BETWEEN 2 AND 5 AND fm BETWEEN 3 AND 5 THEN 'Loyal Customers'
         WHEN r_score BETWEEN 3 AND 5 AND fm BETWEEN 1 AND 3 THEN 'Potential Loyalist'
         WHEN r_score BETWEEN 1 AND 2 AND fm BETWEEN 3 AND 5 THEN 'At Risk'
         WHEN r_score BETWEEN 2 AND 3 AND fm BETWEEN 2 AND 3 THEN 'Need Attention'
         WHEN r_score BETWEEN 2 AND 3 AND fm BETWEEN 1 AND 2 THEN 'About To Sleep'
         WHEN r_score BETWEEN 1 AND 2 AND fm = 2 THEN 'Hibernating'
         WHEN r_score BETWEEN 1 AND 2 AND fm = 1 THEN 'Lost'
         ELSE 'Other' END AS segment
FROM scored;

COPY (SELECT * EXCLUDE (revenue_micros, categories) FROM segmented ORDER BY customer_id)
  TO (getvariable('out') || '/customers.parquet') (FORMAT parquet);

-- §3 cohort retention: the complete grid up to the period holding obs_end.
COPY (
  WITH activity AS (
      SELECT c.cohort, c.customer_id,
             date_diff('month', c.cohort, date_trunc('month', o.order_date)::DATE) AS period_index,
             o.value
      FROM orders o JOIN customers c USING (customer_id)
      WHERE o.order_date >= c.first_order_date
  ),
  sizes AS (SELECT cohort, count(*) AS cohort_size FROM customers GROUP BY cohort),
  last_index AS (
      SELECT cohort, date_diff('month', cohort, date_trunc('month', getvariable('as_of') - INTERVAL 1 DAY)::DATE) AS k
      FROM sizes
  ),
  grid AS (SELECT cohort, unnest(range(0, k + 1)) AS period_index FROM last_index),
  per_period AS (
      SELECT cohort, period_index,
             count(DISTINCT customer_id) FILTER (WHERE value > 0) AS active_customers,
             count(*) FILTER (WHERE value > 0) AS orders,
             sum(value) AS revenue_micros
      FROM activity GROUP BY ALL
  )
  SELECT g.cohort, g.period_index, s.cohort_size,
         coalesce(p.active_customers, 0) AS active_customers,
         coalesce(p.active_customers, 0) / s.cohort_size AS retention_rate,
         coalesce(p.orders, 0) AS orders,
         coalesce(p.revenue_micros, 0) / 1e6 AS revenue,
         sum(coalesce(p.revenue_micros, 0)) OVER (PARTITION BY g.cohort ORDER BY g.period_index) / 1e6 / s.cohort_size
           AS cumulative_revenue_per_customer,
         coalesce(p.revenue_micros, 0) / nullif(first_value(coalesce(p.revenue_micros, 0))
           OVER (PARTITION BY g.cohort ORDER BY g.period_index), 0) AS revenue_retention
  FROM grid g JOIN sizes s USING (cohort) LEFT JOIN per_period p USING (cohort, period_index)
  ORDER BY g.cohort, g.period_index
) TO (getvariable('out') || '/cohort_retention.parquet') (FORMAT parquet);

-- §5 Pareto, Lorenz, Gini over customers with revenue > 0.
CREATE TEMP TABLE ranked_revenue AS
SELECT revenue_micros,
       row_number() OVER (ORDER BY revenue_micros DESC, customer_id) AS rank,
       sum(revenue_micros) OVER (ORDER BY revenue_micros DESC, customer_id ROWS UNBOUNDED PRECEDING) AS cum
FROM customers WHERE revenue_micros > 0;
SET VARIABLE n_pos = (SELECT count(*) FROM ranked_revenue);
SET VARIABLE total = (SELECT sum(revenue_micros) FROM ranked_revenue);

COPY (
  SELECT p AS top_share, ceil(p * getvariable('n_pos'))::BIGINT AS customers,
         (SELECT cum FROM ranked_revenue WHERE rank = ceil(p * getvariable('n_pos'))) / getvariable('total') AS revenue_share
  FROM (SELECT unnest([0.01, 0.05, 0.1, 0.2, 0.5]) AS p) ORDER BY p
) TO (getvariable('out') || '/pareto.parquet') (FORMAT parquet);

COPY (
  SELECT i / 100 AS customer_share, (i * getvariable('n_pos')) // 100 AS customers,
         (getvariable('total') - coalesce(r.cum, 0)) / getvariable('total') AS revenue_share
  FROM range(0, 101) t(i)
  LEFT JOIN ranked_revenue r ON r.rank = getvariable('n_pos') - (i * getvariable('n_pos')) // 100
  ORDER BY i
) TO (getvariable('out') || '/lorenz.parquet') (FORMAT parquet);

-- §4 rfm_segments and §6 clv_by_segment.
COPY (
  SELECT segment, count(*) AS customers, count(*) / getvariable('n') AS share_of_customers,
         sum(revenue_micros) / 1e6 AS revenue,
         sum(revenue_micros) / (SELECT sum(revenue_micros) FROM customers) AS share_of_revenue,
         avg(recency_days) AS mean_recency_days, avg(orders) AS mean_orders, avg(revenue) AS mean_revenue,
         avg(historical_clv) AS mean_historical_clv, avg(formula_clv) AS mean_formula_clv
  FROM segmented GROUP BY segment ORDER BY segment
) TO (getvariable('out') || '/rfm_segments.parquet') (FORMAT parquet);

COPY (
  SELECT dimension, value, count(*) AS customers,
         sum(historical_clv) AS historical_clv_sum, avg(historical_clv) AS historical_clv_mean,
         median(historical_clv) AS historical_clv_median,
         sum(formula_clv) AS formula_clv_sum, avg(formula_clv) AS formula_clv_mean,
         median(formula_clv) AS formula_clv_median
  FROM (
      SELECT 'segment' AS dimension, segment AS value, historical_clv, formula_clv FROM segmented
      UNION ALL SELECT 'cohort', cohort::VARCHAR, historical_clv, formula_clv FROM segmented
      UNION ALL SELECT 'abc_class', abc_class, historical_clv, formula_clv FROM segmented
      UNION ALL SELECT 'channel', channel, historical_clv, formula_clv FROM segmented
  ) GROUP BY ALL ORDER BY dimension, value
) TO (getvariable('out') || '/clv_by_segment.parquet') (FORMAT parquet);

-- §7 KPIs.
COPY (
  SELECT getvariable('as_of') AS as_of, count(*) AS customers, sum(orders) AS orders,
         sum(revenue_micros) / 1e6 AS revenue, sum(revenue_micros) / 1e6 / sum(orders) AS aov,
         sum(orders) / count(*) AS purchase_frequency,
         avg(CASE WHEN orders >= 2 THEN 1.0 ELSE 0.0 END) AS repeat_purchase_rate,
         365 AS churn_window_days,
         avg(CASE WHEN recency_days > 365 THEN 1.0 ELSE 0.0 END) AS churn_rate,
         getvariable('annual_churn') AS annual_churn_rate,
         avg(CASE WHEN categories >= 2 THEN 1.0 ELSE 0.0 END) AS upsell_ratio,
         (SELECT 2 * sum((getvariable('n_pos') - rank + 1)::HUGEINT * revenue_micros)::DOUBLE
                 / (getvariable('n_pos')::DOUBLE * getvariable('total'))
                 - (getvariable('n_pos') + 1) / getvariable('n_pos') FROM ranked_revenue) AS gini,
         (SELECT min(rank) FROM ranked_revenue WHERE cum * 10 >= getvariable('total') * 8) AS customers_for_80pct
  FROM customers
) TO (getvariable('out') || '/kpis.parquet') (FORMAT parquet);
