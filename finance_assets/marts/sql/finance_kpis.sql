-- The headline numbers, one row per organization and as-of date, in base currency.
-- Revenue of the last 90 days is invoiced less credited (as in revenue_by_month) dated
-- as_of − 89 to as_of. DSO = AR ÷ that revenue × 90 and DPO = AP ÷ the bills' totals of
-- the same 90 days × 90, in days to the cent; NULL when the divisor is not positive.
WITH ar AS (
    SELECT _organization AS organization, sum(balance_base) AS ar_total,
           sum(balance_base) FILTER (due_date < as_of) AS ar_overdue
    FROM open_invoices() GROUP BY 1
), ap AS (
    SELECT _organization AS organization, sum(balance_base) AS ap_total
    FROM open_bills() GROUP BY 1
), billed AS (
    SELECT _organization AS organization, sum(to_base(total, exchange_rate)) AS bills_90d
    FROM counted_bills() WHERE date > as_of - INTERVAL 90 DAY GROUP BY 1
), revenue AS (
    SELECT organization, sum(invoiced) - sum(credited) AS revenue_90d
    FROM sales() WHERE date > as_of - INTERVAL 90 DAY GROUP BY 1
), cash AS (
    SELECT _organization AS organization, sum(to_base(balance, exchange_rate)) AS cash,
           count(*) FILTER (exchange_rate IS NULL) AS accounts_without_rate
    FROM accounts() GROUP BY 1
), figures AS (
    SELECT d.organization, d.as_of, d.base_currency,
           coalesce(ar.ar_total, 0) AS ar_total, coalesce(ar.ar_overdue, 0) AS ar_overdue,
           coalesce(ap.ap_total, 0) AS ap_total, coalesce(cash.cash, 0) AS cash,
           coalesce(cash.accounts_without_rate, 0) AS accounts_without_rate,
           coalesce(revenue.revenue_90d, 0) AS revenue_90d,
           coalesce(billed.bills_90d, 0) AS bills_90d
    FROM as_of_dates AS d
    LEFT JOIN ar USING (organization) LEFT JOIN ap USING (organization)
    LEFT JOIN billed USING (organization) LEFT JOIN revenue USING (organization)
    LEFT JOIN cash USING (organization)
)
SELECT organization, as_of, base_currency, ar_total, ar_overdue,
       ratio(ar_overdue * 100, ar_total) AS ar_overdue_pct, ap_total, cash,
       accounts_without_rate, revenue_90d, bills_90d,
       CASE WHEN revenue_90d > 0 THEN ratio(ar_total * 90, revenue_90d) END AS dso_days,
       CASE WHEN bills_90d > 0 THEN ratio(ap_total * 90, bills_90d) END AS dpo_days
FROM figures
